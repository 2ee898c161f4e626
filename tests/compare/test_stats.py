"""`recmtl compare`'s statistics against scipy on fixed per-user data; Holm on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from recmtl.compare import compare, load_runs
from recmtl.compare.stats import activity_bucket, activity_thresholds, holm, mean_std, paired_tests
from tests.compare.conftest import make_run


def test_holm_on_a_hand_computed_case():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max so far 0.06)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.3]), [0.6, 0.6])  # 0.3 x2 = 0.6; 0.5 x1 -> max 0.6
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])  # capped at 1
    out = holm([0.02, math.nan, 0.04])  # NaN left out of m (= 2) and kept NaN
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.04, 0.04])
    assert holm([]).shape == (0,)


def test_paired_tests_match_scipy():
    rng = np.random.default_rng(3)
    a = rng.random(50)
    b = a + rng.normal(0.02, 0.05, 50)
    r = paired_tests(a, b)
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b)
    assert r.n == 50
    assert r.t_p == pytest.approx(t.pvalue, rel=1e-12) and r.t_stat == pytest.approx(t.statistic, rel=1e-12)
    assert r.w_p == pytest.approx(w.pvalue, rel=1e-12) and r.w_stat == pytest.approx(w.statistic)
    assert r.mean_diff == pytest.approx(float(np.mean(a - b)))


def test_paired_tests_degenerate_cases():
    same = np.array([0.1, 0.2, 0.3])
    r = paired_tests(same, same)
    assert (r.t_p, r.w_p) == (1.0, 1.0)
    one = paired_tests(np.array([0.1]), np.array([0.2]))
    assert math.isnan(one.t_p) and math.isnan(one.w_p)
    assert mean_std([0.1, 0.3]) == pytest.approx((0.2, np.std([0.1, 0.3], ddof=1)))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_activity_terciles_match_numpy_and_the_trainers_rule():
    counts = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34])
    q1, q2 = activity_thresholds(counts)
    assert (q1, q2) == pytest.approx(tuple(np.quantile(counts, [1 / 3, 2 / 3])))
    # cold <= q1 < mid <= q2 < heavy, as recmtl.train.loop.row_groups
    assert activity_bucket(counts, (q1, q2)).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.fixture
def three_groups(tmp_path):
    for seed in (0, 1, 2):
        make_run(tmp_path, f"ew-s{seed}", method="ew", seed=seed, level=0.10)
        make_run(tmp_path, f"a-s{seed}", method={"name": "pmtrec", "alpha": 1.1}, seed=seed, level=0.11)
        make_run(tmp_path, f"b-s{seed}", method={"name": "pmtrec", "alpha": 1.5}, seed=seed, level=0.13)
    return tmp_path


def test_comparison_tests_match_scipy_on_the_pooled_and_per_seed_data(three_groups):
    runs = load_runs([three_groups])
    c = compare(runs, baseline="ew", focus="ndcg@20")
    base = {r.seed: r for r in runs if r.config["method"]["name"] == "ew"}
    raw = {}
    for label, prefix in [("pmtrec (alpha=1.1)", "a"), ("pmtrec (alpha=1.5)", "b")]:
        mine = {r.seed: r for r in runs if r.name.startswith(prefix + "-")}
        a = np.concatenate([mine[s].per_user["ndcg@20"].to_numpy() for s in (0, 1, 2)])
        b = np.concatenate([base[s].per_user["ndcg@20"].to_numpy() for s in (0, 1, 2)])
        row = c.cell(label, "ndcg@20")
        assert row["p_ttest"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-10)
        seeds_a = [mine[s].metrics["ndcg@20"] for s in (0, 1, 2)]
        seeds_b = [base[s].metrics["ndcg@20"] for s in (0, 1, 2)]
        assert row["p_seeds"] == pytest.approx(stats.ttest_rel(seeds_a, seeds_b).pvalue, rel=1e-10)
        one = c.tests.filter(
            (pl.col("group") == label) & (pl.col("metric") == "ndcg@20") & (pl.col("scope") == "seed 1")
        )
        a1, b1 = mine[1].per_user["ndcg@20"].to_numpy(), base[1].per_user["ndcg@20"].to_numpy()
        p = dict(zip(one["test"], one["p"], strict=True))
        assert p["ttest"] == pytest.approx(stats.ttest_rel(a1, b1).pvalue, rel=1e-10)
        assert p["wilcoxon"] == pytest.approx(stats.wilcoxon(a1, b1).pvalue, rel=1e-10)
        mean_a, mean_b = np.mean(seeds_a), np.mean(seeds_b)
        assert row["rel_impr_pct"] == pytest.approx(100 * (mean_a - mean_b) / mean_b)
        assert row["std"] == pytest.approx(np.std(seeds_a, ddof=1))
        raw[label] = (row["p_ttest"], row["p_ttest_holm"])
    # Holm over the two compared groups
    ps = [raw[k][0] for k in raw]
    np.testing.assert_allclose([raw[k][1] for k in raw], holm(ps))
    # the best value per column is marked once, on the highest mean
    best = c.summary.filter((pl.col("metric") == "ndcg@20") & pl.col("best"))
    assert best["group"].to_list() == ["pmtrec (alpha=1.5)"]
    assert c.summary.filter(pl.col("group") == "ew")["rel_impr_pct"].to_list() == [0.0] * 4
