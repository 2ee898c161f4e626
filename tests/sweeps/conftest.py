"""What the sweep tests share: a sweep file written from text, one torch thread, the tiny dataset."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.threads import one_torch_thread  # noqa: F401  (autouse)
from tests.train.conftest import prepare_tiny

#: [options] of a sweep that trains in a fraction of a second per cell on the tiny dataset.
QUICK_OPTIONS = """
[options]
aux = ["social", "category"]
epochs = 2
dim = 8
batch_size = 256
lr = 0.01
device = "cpu"
"""


def write_sweep(path: Path, text: str) -> Path:
    """Write the (dedented) sweep file ``text`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="session")
def sweep_data(tmp_path_factory) -> Path:
    return prepare_tiny(tmp_path_factory.mktemp("sweep-data") / "tiny")
