"""The synthetic source: determinism, sizes, schema, long tails and the planted structure (DATA.md §3)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recmtl.config import PrepareConfig, SyntheticConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources import get_reader
from recmtl.data.sources.synthetic import (
    BLOCK_USERS,
    ClusterSampler,
    Latent,
    activity_counts,
    generate,
    read,
    sample_rows_clusters,
    sorted_unique,
)
from recmtl.errors import ConfigError

SMALL = SyntheticConfig(
    users=2500,
    items=1200,
    interactions=40_000,
    factors=8,
    categories=10,
    social_per_user=6.0,
    coview_per_item=5.0,
)


@functools.cache
def make(cfg: SyntheticConfig = SMALL, seed: int = 0) -> tuple[RawTables, Latent]:
    return generate(cfg, seed)


def small(**changes) -> SyntheticConfig:
    return dataclasses.replace(SMALL, **changes)


def tables_equal(a: RawTables, b: RawTables) -> None:
    for name in ("interactions", "social", "item_category", "item_item"):
        assert_frame_equal(getattr(a, name), getattr(b, name))


# --------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_tables():
    tables_equal(make()[0], generate(SMALL, 0)[0])


def test_different_seed_different_tables():
    a, b = make()[0], make(SMALL, 1)[0]
    for name in ("interactions", "social", "item_category", "item_item"):
        assert not getattr(a, name).equals(getattr(b, name)), name


def test_output_does_not_depend_on_chunk_size():
    assert SMALL.users > 2 * BLOCK_USERS  # several random-stream blocks
    tables_equal(make()[0], generate(small(chunk_interactions=500), 0)[0])


def test_signal_knobs_change_only_their_table():
    base = make()[0]
    noisy = generate(small(social_signal=0.0, category_signal=0.0), 0)[0]
    assert_frame_equal(base.interactions, noisy.interactions)
    assert_frame_equal(base.item_item, noisy.item_item)
    assert not base.social.equals(noisy.social)
    assert not base.item_category.equals(noisy.item_category)


def test_reader_uses_seed_and_synthetic_config():
    assert get_reader("synthetic") is read
    tables = read(PrepareConfig(seed=1, synthetic=SMALL))
    assert tables.explicit and not tables.given_split and tables.dropped == {}
    tables_equal(tables, make(SMALL, 1)[0])


# --------------------------------------------------------------------------------------------------
# sizes and schema


def test_schema_and_id_ranges():
    t = make()[0]
    assert t.interactions.schema == pl.Schema(
        {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float32, "ts": pl.Int64}
    )
    assert t.social.schema == pl.Schema({"src": pl.Int64, "dst": pl.Int64})
    assert t.item_category.schema == pl.Schema({"item": pl.Int64, "category": pl.String})
    assert t.item_item.schema == pl.Schema({"src": pl.Int64, "dst": pl.Int64, "kind": pl.String})
    it = t.interactions
    assert it["user"].min() == 0 and it["user"].max() == SMALL.users - 1
    assert it["user"].n_unique() == SMALL.users  # every user has at least one interaction
    assert 0 <= it["item"].min() and it["item"].max() < SMALL.items
    assert it.select("user", "item").is_duplicated().sum() == 0
    assert set(it["rating"].unique().to_list()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert it["rating"].n_unique() >= 4
    assert it["ts"].min() >= 1_420_070_400 and it["ts"].max() < 1_577_836_800
    for col in ("src", "dst"):
        assert t.social[col].min() >= 0 and t.social[col].max() < SMALL.users
        assert t.item_item[col].min() >= 0 and t.item_item[col].max() < SMALL.items
    assert (t.social["src"] != t.social["dst"]).all()
    assert (t.item_item["src"] != t.item_item["dst"]).all()
    assert t.item_item["kind"].unique().to_list() == ["also_viewed"]
    assert t.item_category["category"].str.contains(r"^c\d\d$").all()
    assert t.item_category["item"].sort().to_list() == list(range(SMALL.items))


def test_row_counts_near_requested():
    t = make()[0]
    # interactions: within 1% (rounding of per-user counts, rare unfillable heavy users)
    assert abs(t.interactions.height - SMALL.interactions) <= 0.01 * SMALL.interactions
    # edges: at most the requested count, at least 95% of it (duplicates are merged)
    n_social = SMALL.social_per_user * SMALL.users
    n_coview = SMALL.coview_per_item * SMALL.items
    assert 0.95 * n_social <= t.social.height <= n_social
    assert 0.95 * n_coview <= t.item_item.height <= n_coview


def test_zero_edges_give_no_table():
    t = generate(small(social_per_user=0.0, coview_per_item=0.0), 0)[0]
    assert t.social is None and t.item_item is None


def test_activity_is_long_tailed():
    counts = make()[0].interactions.group_by("user").len()["len"]
    mean = SMALL.interactions / SMALL.users
    assert counts.median() < 0.6 * mean
    assert counts.max() > 15 * counts.median()
    assert (counts <= 3).mean() > 0.08  # many cold users
    flat = generate(small(activity_sigma=0.0), 0)[0].interactions.group_by("user").len()["len"]
    assert flat.max() - flat.min() <= 1


def test_item_popularity_is_long_tailed():
    pop = make()[0].interactions.group_by("item").len()["len"].sort(descending=True)
    assert pop.head(SMALL.items // 10).sum() > 0.3 * pop.sum()


# --------------------------------------------------------------------------------------------------
# planted structure


def _same_group_share(edges: pl.DataFrame, groups: np.ndarray) -> float:
    return float(np.mean(groups[edges["src"].to_numpy()] == groups[edges["dst"].to_numpy()]))


def _chance(groups: np.ndarray) -> float:
    p = np.bincount(groups) / len(groups)
    return float((p**2).sum())


def test_social_homophily_follows_signal():
    t1, lat = generate(small(social_signal=1.0), 0)
    t0, _ = generate(small(social_signal=0.0), 0)
    t_half, _ = generate(small(social_signal=0.5), 0)
    chance = _chance(lat.user_cluster)
    assert _same_group_share(t1.social, lat.user_cluster) > 0.99
    assert abs(_same_group_share(t0.social, lat.user_cluster) - chance) < 0.03
    assert abs(_same_group_share(t_half.social, lat.user_cluster) - (0.5 + 0.5 * chance)) < 0.05


def test_coview_follows_signal():
    t1, lat = generate(small(coview_signal=1.0), 0)
    t0, _ = generate(small(coview_signal=0.0), 0)
    assert _same_group_share(t1.item_item, lat.item_cluster) > 0.99
    assert abs(_same_group_share(t0.item_item, lat.item_cluster) - _chance(lat.item_cluster)) < 0.03


def _label_matches(t: RawTables, lat: Latent) -> float:
    ic = t.item_category.with_columns(pl.col("category").str.slice(1).cast(pl.Int64))
    return float(np.mean(lat.item_cluster[ic["item"].to_numpy()] == ic["category"].to_numpy()))


def test_category_labels_follow_signal():
    t1, lat = generate(small(category_signal=1.0), 0)
    t0, _ = generate(small(category_signal=0.0), 0)
    assert _label_matches(t1, lat) == 1.0
    assert abs(_label_matches(t0, lat) - 1 / SMALL.categories) < 0.03


def test_multi_label_categories():
    t, lat = generate(small(category_signal=1.0, categories_per_item=3), 0)
    per_item = t.item_category.group_by("item").len()["len"]
    assert per_item.len() == SMALL.items and (per_item == 3).all()
    noisy = generate(small(category_signal=0.0, categories_per_item=3), 0)[0]
    counts = noisy.item_category.group_by("item").len()["len"]
    assert counts.min() >= 1 and counts.max() <= 3  # random duplicates merged


def _top_cluster_share(interactions: pl.DataFrame, item_cluster: np.ndarray, min_count: int = 20) -> float:
    frame = interactions.select("user", cl=pl.Series(item_cluster[interactions["item"].to_numpy()]))
    per_user = (
        frame.group_by("user", "cl")
        .len()
        .group_by("user")
        .agg(share=pl.col("len").max() / pl.col("len").sum(), n=pl.col("len").sum())
    )
    return float(per_user.filter(pl.col("n") >= min_count)["share"].mean())


def test_users_concentrate_on_few_clusters():
    t, lat = make()
    it = t.interactions
    real = _top_cluster_share(it, lat.item_cluster)
    shuffled = it.with_columns(pl.col("item").shuffle(seed=0))  # same popularity, no user preference
    assert real > _top_cluster_share(shuffled, lat.item_cluster) + 0.1
    sharp = generate(small(preference_temperature=0.2), 0)[0].interactions
    assert _top_cluster_share(sharp, lat.item_cluster) > real + 0.1


def test_ratings_follow_affinity():
    t, lat = make()
    it = t.interactions
    home = lat.user_cluster[it["user"].to_numpy()] == lat.item_cluster[it["item"].to_numpy()]
    rating = it["rating"].to_numpy()
    assert rating[home].mean() > rating[~home].mean() + 1.0


# --------------------------------------------------------------------------------------------------
# helpers


def test_sorted_unique_matches_numpy():
    values = np.random.default_rng(0).integers(0, 50, size=300)
    np.testing.assert_array_equal(sorted_unique(values), np.unique(values))
    assert sorted_unique(np.array([], dtype=np.int64)).size == 0


def test_activity_counts_reach_total_within_bounds():
    weights = np.random.default_rng(0).lognormal(0.0, 1.5, size=1000)
    counts = activity_counts(weights, 20_000, cap=400)
    assert counts.min() >= 1 and counts.max() <= 400
    assert 20_000 <= counts.sum() <= 20_000 + 10
    assert (activity_counts(weights, 1000, cap=400) == 1).all()


def test_sample_rows_clusters_matches_per_row_inverse_cdf():
    rng = np.random.default_rng(0)
    p = rng.random((5, 4))
    p[2, 1] = 0.0  # a zero-probability cluster is never drawn
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    rows, uniform = rng.integers(0, 5, size=2000), rng.random(2000)
    expected = [np.searchsorted(cdf[r], u, side="right") for r, u in zip(rows, uniform, strict=True)]
    np.testing.assert_array_equal(sample_rows_clusters(cdf, rows, uniform), expected)


def test_cluster_sampler_draws_in_cluster_by_popularity():
    item_cluster = np.array([1, 0, 1, 1, 2, 0])
    popularity = np.array([1.0, 5.0, 2.0, 1.0, 3.0, 1.0])
    sampler = ClusterSampler.build(item_cluster, popularity, 3)
    uniform = (np.arange(40_000) + 0.5) / 40_000
    items = sampler.sample(np.ones(40_000, dtype=np.int64), uniform)  # cluster 1 = items 0, 2, 3
    freq = np.bincount(items, minlength=6) / len(items)
    np.testing.assert_allclose(freq, [0.25, 0, 0.5, 0.25, 0, 0], atol=1e-3)
    assert set(sampler.sample(np.zeros(100, dtype=np.int64), uniform[::400]).tolist()) == {1, 5}


# --------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("users", 1),
        ("items", 0),
        ("interactions", 0),
        ("interactions", 100),  # fewer than users
        ("interactions", 2500 * 600 + 1),  # denser than users * items // 2
        ("factors", 0),
        ("categories", 0),
        ("categories_per_item", 0),
        ("categories_per_item", 11),  # more than categories
        ("chunk_interactions", 0),
        ("social_signal", 1.5),
        ("category_signal", -0.1),
        ("coview_signal", float("nan")),
        ("social_per_user", -1.0),
        ("coview_per_item", float("inf")),
        ("preference_temperature", 0.0),
        ("activity_sigma", -0.5),
        ("popularity_exponent", -1.0),
        ("rating_noise", -0.1),
    ],
)
def test_invalid_config_raises_config_error(name, value):
    with pytest.raises(ConfigError) as info:
        read(PrepareConfig(synthetic=small(**{name: value})))
    message = str(info.value)
    assert f"synthetic.{name}" in message and repr(value) in message and "\n" not in message


def test_negative_seed_raises_config_error():
    with pytest.raises(ConfigError, match="seed"):
        read(PrepareConfig(seed=-1, synthetic=SMALL))
