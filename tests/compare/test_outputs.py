"""Markdown, CSV and LaTeX outputs against golden files, and the PNG plots (existence and pixel size).

Regenerate the golden files after an intended change with ``RECMTL_UPDATE_GOLDEN=1 pytest tests/compare``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recmtl.compare import compare, load_runs
from recmtl.compare.report import _csv, to_csv, to_latex, to_markdown, write_reports
from tests.compare.conftest import make_run

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def fixed_comparison(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, f"ew-s{seed}", method="ew", seed=seed, level=0.10)
        make_run(tmp_path, f"pmtrec-s{seed}", method={"name": "pmtrec", "alpha": 1.1}, seed=seed, level=0.12)
        make_run(tmp_path, f"single-s{seed}", method="single", seed=seed, level=0.09)
    return compare(load_runs([tmp_path]), baseline="ew", focus="ndcg@20")


@pytest.mark.parametrize(("name", "render"), [("compare.md", to_markdown), ("compare.csv", to_csv),
                                              ("compare.tex", to_latex)])  # fmt: skip
def test_reports_match_the_golden_files(fixed_comparison, name, render):
    text = render(fixed_comparison)
    path = GOLDEN / name
    if os.environ.get("RECMTL_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from {path} (RECMTL_UPDATE_GOLDEN=1 to rewrite)"


def test_csv_keeps_small_p_values_to_six_significant_digits():
    frame = pl.DataFrame({"group": ["a"], "mean": [0.123456789], "p": [5.2e-11], "p_holm": [float("nan")]})
    assert _csv(frame).splitlines() == ["group,mean,p,p_holm", "a,0.123457,5.2e-11,"]


def test_latex_uses_booktabs_and_marks_the_best(fixed_comparison):
    tex = to_latex(fixed_comparison)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert r"\mathbf{" in tex


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plots_are_pngs_of_the_fixed_size(fixed_comparison, tmp_path):
    from recmtl.compare.plots import write_plots

    written = write_plots(fixed_comparison, tmp_path / "out")
    assert sorted(p.name for p in written) == ["activity.png", "task_weights.png", "valid_curve.png"]
    for path in written:
        assert path.stat().st_size > 1000
        assert png_size(path) == (800, 500)


def test_a_sensitivity_grid_gets_a_heat_map(tmp_path):
    from recmtl.compare.plots import write_plots

    for alpha in (1.0, 1.5):
        for tau in (0.5, 2.0):
            make_run(
                tmp_path / "runs", f"a{alpha}-t{tau}", method={"name": "pmtrec", "alpha": alpha, "tau": tau}
            )
    c = compare(load_runs([tmp_path / "runs"]))
    written = {p.name: p for p in write_plots(c, tmp_path / "out")}
    assert "heatmap_pmtrec.png" in written
    assert png_size(written["heatmap_pmtrec.png"]) == (800, 500)


def test_write_reports_writes_every_file_and_nothing_half_written(fixed_comparison, tmp_path):
    paths = write_reports(fixed_comparison, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["compare.csv", "compare.md", "compare.tex", "compare_tests.csv"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_runs_with_user_weights_get_the_main_weight_by_activity_plot(tmp_path):
    from recmtl.compare.plots import write_plots

    for seed in (0, 1):
        make_run(tmp_path / "runs", f"pmtrec-s{seed}", method="pmtrec", seed=seed, user_weights=True)
        make_run(tmp_path / "runs", f"ew-s{seed}", method="ew", seed=seed)  # (no user weights: no line)
    c = compare(load_runs([tmp_path / "runs"]))
    written = {p.name: p for p in write_plots(c, tmp_path / "out")}
    path = written["main_weight_by_activity.png"]
    assert path.stat().st_size > 1000 and png_size(path) == (800, 500)


def test_main_weight_is_binned_by_log_activity():
    from recmtl.compare.plots import binned_by_activity

    users = pl.DataFrame({"n_train": [1, 1, 10, 12, 1000], "main_weight": [0.9, 0.7, 0.5, 0.3, 0.2]})
    x, y = binned_by_activity(users)  # bins of a quarter decade: {1, 1}, {10, 12}, {1000}
    assert x.tolist() == pytest.approx([1.0, (10 * 12) ** 0.5, 1000.0])
    assert y.tolist() == pytest.approx([0.8, 0.4, 0.2])


def test_user_weights_are_averaged_over_seeds_per_user(tmp_path):
    from recmtl.compare.plots import _user_main_weights

    for seed in (0, 1):
        make_run(
            tmp_path / "runs", f"pmtrec-s{seed}", method="pmtrec", seed=seed, user_weights=True, n_users=5
        )
    (group,) = compare(load_runs([tmp_path / "runs"])).groups
    users = _user_main_weights(group).sort("user_id")
    n = np.arange(5) * 7 % 500 + 1
    assert users["main_weight"].to_list() == pytest.approx((1 - 0.1 * np.log10(n) - 0.005).tolist())
