"""One reader per ``--source``. A reader is ``read(config: PrepareConfig) -> RawTables``.

The registry is explicit: adding a source means adding a module and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.errors import ConfigError

#: source name -> module under recmtl.data.sources that defines ``read(config) -> RawTables``
SOURCES: dict[str, str] = {
    "synthetic": "synthetic",
    "tang": "tang",
    "lastfm-hetrec": "lastfm",
    "amazon2014": "amazon2014",
    "amazon2018": "amazon2018",
    "recbole": "recbole",
    "csv": "csv",
}


def get_reader(source: str) -> Callable[[PrepareConfig], RawTables]:
    """The ``read`` function of ``source``, or a ConfigError listing the known sources."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r} (known: {', '.join(SOURCES)})")
    module = importlib.import_module(f"recmtl.data.sources.{SOURCES[source]}")
    return module.read
