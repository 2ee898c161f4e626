"""The sweep files shipped in sweeps/ load (every option valid), and the main comparisons cover every
registered method: each in its default mode, and each method whose paper mode is global also in global
mode."""

from __future__ import annotations

import dataclasses
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


@pytest.mark.parametrize("name", ["ciao", "lastfm"])
def test_stem_sweeps_pair_stem_with_mf_under_the_main_comparisons_options(name):
    """sweeps/stem-NAME.toml: single, ew, pmtrec on mf and ew, pmtrec on stem, 3 seeds, with every option of
    sweeps/NAME.toml's cells (so its mf cells are the main comparison's)."""
    cells = load_sweep(SWEEPS / f"stem-{name}.toml").cells()
    covered = {(c.config.method.name, c.config.encoder) for c in cells}
    assert covered == {("single", "mf"), ("ew", "mf"), ("pmtrec", "mf"), ("ew", "stem"), ("pmtrec", "stem")}
    assert {c.seed for c in cells} == {0, 1, 2}
    main = {(c.label, c.seed): c.config for c in load_sweep(SWEEPS / f"{name}.toml").cells()}
    for cell in cells:
        if cell.config.encoder == "mf":
            assert cell.config == dataclasses.replace(main[cell.label, cell.seed], name=cell.config.name)
