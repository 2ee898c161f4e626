"""The training instruments per group (meet fraction over epochs, main weight at the selected epoch) in
compare's Markdown and compare_instruments.csv, by hand-computed means."""

from __future__ import annotations

import math

import polars as pl
import pytest

from recmtl.compare import compare, load_runs
from recmtl.compare.instruments import COLUMNS, run_instruments
from recmtl.compare.report import INSTRUMENTS_FILE, to_markdown, write_reports
from tests.compare.conftest import make_run


def _instrument(run, meet: list[float], best: list[bool], cold_median: list[float]) -> None:
    """Add instrument columns to the run's 3-epoch metrics.parquet: cold users' main weight median as given,
    its quartiles ± 0.1, the other groups' columns NaN (no such users)."""
    history = pl.read_parquet(run / "metrics.parquet")
    extra = {c: [math.nan] * 3 for c in COLUMNS[1:]}
    extra |= {"meet_fraction": meet, "main_weight_q50@cold_users": cold_median, "best": best}
    extra |= {"main_weight_q25@cold_users": [m - 0.1 for m in cold_median]}
    extra |= {"main_weight_q75@cold_users": [m + 0.1 for m in cold_median]}
    history.with_columns(**{k: pl.Series(v) for k, v in extra.items()}).write_parquet(run / "metrics.parquet")


@pytest.fixture
def runs(tmp_path):
    pm = {"name": "pmtrec", "alpha": 1.1}
    _instrument(make_run(tmp_path, "pm-s0", method=pm, seed=0), [0.1, 0.2, 0.3], [True, True, False],
                [0.9, 0.7, 0.1])  # fmt: skip
    _instrument(make_run(tmp_path, "pm-s1", method=pm, seed=1), [0.5, 0.5, 0.5], [True, False, False],
                [0.5, 0.2, 0.3])  # fmt: skip
    make_run(tmp_path, "ew-s0", method="ew", seed=0)  # written before the instruments: no columns
    return load_runs([tmp_path])


def test_meet_fraction_is_the_epoch_mean_and_the_main_weight_is_read_at_the_selected_epoch(runs):
    c = compare(runs, baseline="ew")
    assert c.instruments["group"].to_list() == ["pmtrec"]  # ew recorded nothing: no row
    row = c.instruments.row(0, named=True)
    assert row["runs"] == 2
    assert row["meet_fraction"] == pytest.approx((0.2 + 0.5) / 2)
    assert row["main_weight_q50@cold_users"] == pytest.approx((0.7 + 0.5) / 2)  # epochs 1 and 0
    assert math.isnan(row["main_weight_mean@heavy_users"])


def test_a_run_without_instruments_gives_none():
    assert run_instruments(None) is None
    assert run_instruments(pl.DataFrame({"epoch": [0], "best": [True]})) is None


def test_reports_show_the_instruments_only_when_recorded(runs, tmp_path):
    c = compare(runs, baseline="ew")
    text = to_markdown(c)
    assert "## Where tasks meet" in text
    assert "| pmtrec | 2 | 0.3500 | 0.600 (0.500–0.700) | — | — |" in text
    written = write_reports(c, tmp_path / "out")
    assert tmp_path / "out" / INSTRUMENTS_FILE in written
    csv = pl.read_csv(tmp_path / "out" / INSTRUMENTS_FILE)
    assert csv["meet_fraction"].to_list() == pytest.approx([0.35])

    plain = compare([r for r in runs if r.name == "ew-s0"])
    assert "Where tasks meet" not in to_markdown(plain)
    assert tmp_path / "p" / INSTRUMENTS_FILE not in write_reports(plain, tmp_path / "p")
