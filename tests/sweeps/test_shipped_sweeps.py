"""The sweep files shipped in sweeps/ load (every option valid), and the main comparisons cover every
registered method: each in its default mode, and each method whose paper mode is global also in global
mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from recmtl.aggregators import AGGREGATORS
from recmtl.sweeps import load_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_sweep_loads(path):
    sweep = load_sweep(path)
    assert sweep.cells()


@pytest.mark.parametrize(
    "name", ["ciao", "lastfm", "synthetic", "epinions", "amazon-videogames", "amazon-office"]
)
def test_main_comparisons_cover_every_method_in_its_modes(name):
    cells = load_sweep(SWEEPS / f"{name}.toml").cells()
    covered = {(c.config.method.name, c.config.mode) for c in cells}
    expected = {(n, "row") for n in AGGREGATORS} | {
        (n, "global")
        for n, cls in AGGREGATORS.items()
        if "global" in cls.paper_modes and "row" not in cls.paper_modes
    }
    assert covered == expected
    assert {c.seed for c in cells} == {0, 1, 2}
