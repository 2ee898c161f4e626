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


STUDY_AUX = [("social", "category"), ("align", "uniform"), ("social", "category", "align", "uniform")]


def study_groups(cells) -> dict[str, dict]:
    """The groups `recmtl compare` forms from the cells' configs (as config.json stores them): label ->
    flattened options."""
    from recmtl.compare.groups import flatten, label_of, varying_options
    from recmtl.config import to_jsonable

    options: dict[str, dict] = {}
    for cell in cells:
        flat = flatten(to_jsonable(cell.config))
        options.setdefault(repr(sorted(flat.items())), flat)
    varying = varying_options(list(options.values()))
    return {label_of(o, varying[o["method.name"]]): o for o in options.values()}


@pytest.mark.parametrize("name", ["ciao", "lastfm"])
def test_pmtrec_study_sweeps_cover_the_design_without_duplicate_runs(name):
    sweep = load_sweep(SWEEPS / f"pmtrec-study-{name}.toml")
    cells = sweep.cells()
    assert sweep.data == Path(f"data/{name}") and {c.seed for c in cells} == {0, 1, 2}
    assert {c.config.lr for c in cells} == {0.005}
    design = {
        (
            c.config.method.name,
            c.config.aux,
            c.config.aux_sampling,
            getattr(c.config.method, "norm_source", None),
        )
        for c in cells
    }
    samplings = {"social", "category"}  # the tasks --aux-sampling changes, among those listed
    expected = {("single", ("social", "category"), "independent", None)}
    for aux in STUDY_AUX:
        for sampling in ("independent", "aligned") if samplings & set(aux) else ("independent",):
            expected.add(("ew", aux, sampling, None))
            expected |= {("pmtrec", aux, sampling, source) for source in ("step", "ema")}
    assert design == expected
    assert len(cells) == 3 * len(expected)  # no configuration twice
    # every auxiliary task listed has its table in the dataset (coview and cobuy need item_item)
    assert not {t for c in cells for t in c.config.aux} & {"coview", "cobuy", "rating"}


def _makefile_settings() -> list[tuple[str, str, str]]:
    """PMTREC_STUDY_SETTINGS of the Makefile (SETTING:EW+PMTREC ...): (setting, ew table, pmtrec table)."""
    text = (SWEEPS.parent / "Makefile").read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("PMTREC_STUDY_SETTINGS"))
    settings = [item.split(":") for item in line.split("=", 1)[1].split()]
    return [(setting, *tables.split("+")) for setting, tables in settings]


def test_each_pmtrec_study_setting_of_the_makefile_pairs_pmtrec_with_the_ew_of_its_setting():
    """`compare --only EW,PMTREC --baseline ew`: one ew group, pmtrec groups of the same tasks and sampling,
    and every ew and pmtrec table of the study in exactly one setting."""
    settings = _makefile_settings()
    assert len(settings) == len({s for s, _, _ in settings}) == 5
    for name in ("ciao", "lastfm"):
        cells = load_sweep(SWEEPS / f"pmtrec-study-{name}.toml").cells()
        tables = {c.label for c in cells if c.config.method.name in ("ew", "pmtrec")}
        assert sorted(t for _, ew, pm in settings for t in (ew, pm)) == sorted(tables)
        for _, ew, pm in settings:
            chosen = [c for c in cells if c.label in (ew, pm)]
            assert {(c.label, c.config.method.name) for c in chosen} == {(ew, "ew"), (pm, "pmtrec")}
            assert len({(c.config.aux, c.config.aux_sampling) for c in chosen}) == 1  # one setting
            groups = study_groups(chosen)
            assert sum(o["method.name"] == "ew" for o in groups.values()) == 1  # --baseline ew names one
        groups = study_groups(cells)
        assert sum(o["method.name"] == "single" for o in groups.values()) == 1  # --baseline single
