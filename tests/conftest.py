"""Shared fixtures: where the real datasets live, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECMTL_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = ROOT / "tests" / "fixtures"

# rich fixes a Console's width from $COLUMNS when the Console is built, and the CLI builds its consoles when
# cli._shell is first imported. Build them here with $COLUMNS removed, so that a test's env={"COLUMNS": ...}
# sets the width whatever $COLUMNS the test process started with (pytest-xdist's workers, a narrow terminal).
with pytest.MonkeyPatch.context() as _env:
    _env.delenv("COLUMNS", raising=False)
    import cli._shell  # noqa: E402, F401


def shared_dataset(name: str) -> Path:
    """Path of a real dataset under $RECMTL_SHARED_DATA (default ../shared/data), skipping the test when it
    is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not available: set RECMTL_SHARED_DATA to the folder that holds {name}/")
    return path


@pytest.fixture
def ciao_raw() -> Path:
    return shared_dataset("ciao")


@pytest.fixture
def lastfm_raw() -> Path:
    return shared_dataset("lastfm-2k")
