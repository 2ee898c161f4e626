"""`recmtl compare --buckets aux-ratio`: bucket assignment on hand-made data, the per-bucket change over
the baseline against a hand computation, the table and PNG files, and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app
from recmtl.compare import compare, load_runs
from recmtl.compare.buckets import (
    AUX_RATIO_BUCKETS,
    aux_ratio,
    aux_ratio_bucket,
    aux_ratio_table,
    aux_ratio_thresholds,
    to_markdown,
)
from recmtl.errors import RecmtlError
from tests.cli.conftest import assert_one_line_error
from tests.compare.conftest import make_run

runner = CliRunner()
N_USERS = 40


def test_ratio_is_friends_over_training_interactions():
    ratio = aux_ratio(np.array([0, 2, 3, 10]), np.array([5, 4, 0, 5]))
    np.testing.assert_allclose(ratio, [0.0, 0.5, 3.0, 2.0])  # (no training interaction: divided by 1)


def test_bucket_assignment_on_hand_made_ratios():
    ratio = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0])
    q1, q2 = aux_ratio_thresholds(ratio)  # terciles of the six positive ratios (linear interpolation)
    assert q1 == pytest.approx(0.2 + 2 / 3 * 0.1) and q2 == pytest.approx(0.4 + 1 / 3 * 0.1)
    buckets = aux_ratio_bucket(ratio, (q1, q2))
    assert [AUX_RATIO_BUCKETS[b] for b in buckets] == [
        "none",
        "low",
        "low",
        "mid",
        "mid",
        "high",
        "high",
        "none",
    ]
    assert aux_ratio_bucket(np.array([0.2]), (0.2, 0.4)).tolist() == [1]  # low <= q1 < mid
    assert aux_ratio_thresholds(np.zeros(3)) == (0.0, 0.0)


def friends() -> np.ndarray:
    """Social out-degrees of the fixture users: a quarter without friends."""
    return np.where(np.arange(N_USERS) % 4 == 0, 0, np.arange(N_USERS) % 7 + 1)


@pytest.fixture
def runs(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path / "runs", f"single-s{seed}", method="single", seed=seed, level=0.09)
        make_run(tmp_path / "runs", f"ew-s{seed}", method="ew", seed=seed, level=0.10)
        make_run(tmp_path / "runs", f"stem-ew-s{seed}", method="ew", seed=seed, level=0.12, encoder="stem")
    return tmp_path / "runs"


def test_the_per_bucket_change_is_the_mean_per_user_difference(runs):
    c = compare(load_runs([runs]), baseline="single")
    table, thresholds = aux_ratio_table(c, friends())
    assert table["group"].unique(maintain_order=True).to_list() == ["ew (encoder=mf)", "ew (encoder=stem)"]
    assert table["bucket"].to_list()[:4] == list(AUX_RATIO_BUCKETS)
    # by hand, for one group and bucket
    per_seed = []
    for seed in (0, 1):
        a = pl.read_parquet(runs / f"stem-ew-s{seed}" / "per_user.parquet")
        b = pl.read_parquet(runs / f"single-s{seed}" / "per_user.parquet")
        ratio = friends()[a["user_id"].to_numpy()] / np.maximum(a["n_train"].to_numpy(), 1)
        high = aux_ratio_bucket(ratio, thresholds) == 3
        per_seed.append((a["ndcg@20"].to_numpy()[high] - b["ndcg@20"].to_numpy()[high]).mean())
    row = table.filter((pl.col("group") == "ew (encoder=stem)") & (pl.col("bucket") == "high")).row(
        0, named=True
    )
    assert row["diff_mean"] == pytest.approx(np.mean(per_seed))
    assert row["diff_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["n_seeds"] == 2 and row["n_users"] == int(high.sum())
    assert table.filter(pl.col("bucket") == "none")["n_users"].to_list() == [N_USERS // 4] * 2
    md = to_markdown(table, c)
    assert "| ew (encoder=stem) |" in md and "none 0" in md


def test_buckets_need_a_baseline(runs):
    with pytest.raises(RecmtlError, match="needs --baseline"):
        aux_ratio_table(compare(load_runs([runs])), friends())


def with_dataset(runs, tmp_path) -> None:
    """Point every fixture run at a hand-made dataset holding only what the buckets read."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"counts": {"users": N_USERS}}))
    f = friends()
    src = np.repeat(np.arange(N_USERS), f).astype(np.int32)
    pl.DataFrame({"src": src, "dst": (src + 1) % N_USERS}).write_parquet(data / "social.parquet")
    for config in runs.glob("*/config.json"):
        saved = json.loads(config.read_text())
        saved["data"]["path"] = str(data)
        config.write_text(json.dumps(saved))


def test_cli_writes_the_bucket_table_and_plot(runs, tmp_path):
    with_dataset(runs, tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(runs), "--baseline", "single", "--buckets", "aux-ratio",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "by #friends / #training interactions" in result.stdout
    png = (out / "buckets_aux_ratio.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    csv = pl.read_csv(out / "buckets_aux_ratio.csv")
    assert csv.height == 2 * len(AUX_RATIO_BUCKETS) and "diff_mean" in csv.columns
    assert "ew (encoder=stem)" in (out / "buckets_aux_ratio.md").read_text()
    tables_only = runner.invoke(app, ["compare", str(runs), "--baseline", "single", "--buckets", "aux-ratio",
                                      "--out", str(tmp_path / "o"), "--no-plots"])  # fmt: skip
    assert tables_only.exit_code == 0
    assert not list((tmp_path / "o").glob("*.png"))


def test_cli_bucket_errors_are_one_line(runs):
    assert_one_line_error(
        runner.invoke(app, ["compare", str(runs), "--buckets", "aux-ratio"]), "needs --baseline"
    )
    bogus = runner.invoke(app, ["compare", str(runs), "--baseline", "single", "--buckets", "friends"])
    assert_one_line_error(bogus, "--buckets friends: expected aux-ratio")
    no_data = runner.invoke(app, ["compare", str(runs), "--baseline", "single", "--buckets", "aux-ratio"])
    assert_one_line_error(no_data, "cannot read the social table")


def test_a_bucket_without_users_is_left_out(runs):
    """Every user with a friend (as on Last.fm): no `none` bucket in the table, the others all there."""
    everyone = np.arange(N_USERS) % 7 + 1
    table, _ = aux_ratio_table(compare(load_runs([runs]), baseline="single"), everyone)
    assert table["bucket"].unique(maintain_order=True).to_list() == ["low", "mid", "high"]
    assert (table["n_users"] > 0).all()
