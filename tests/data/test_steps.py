import polars as pl
import pytest

from recmtl.data import steps
from recmtl.errors import ConfigError, RecmtlError


def frame(rows, cols=("user", "item", "rating", "ts")):
    return pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])


def test_threshold_keeps_ratings_at_or_above():
    f = frame([(1, 1, 3.0, 0), (1, 2, 4.0, 0), (2, 1, 5.0, 0)])
    assert steps.apply_threshold(f, 4.0)["item"].to_list() == [2, 1]
    assert steps.apply_threshold(f, None).height == 3


def test_threshold_without_rating_column_is_a_config_error():
    with pytest.raises(ConfigError, match="min-rating"):
        steps.apply_threshold(pl.DataFrame({"user": [1], "item": [2]}), 4.0)


def test_dedupe_keeps_latest_by_timestamp():
    f = frame([(1, 1, 5.0, 30), (1, 1, 2.0, 10), (1, 2, 4.0, 5), (1, 1, 3.0, 20)])
    out = steps.dedupe_latest(f).sort("item")
    assert out.rows() == [(1, 1, 5.0, 30), (1, 2, 4.0, 5)]


def test_dedupe_without_timestamp_keeps_last_occurrence():
    f = pl.DataFrame({"user": [1, 1, 2], "item": [7, 7, 7], "rating": [1.0, 2.0, 3.0]})
    assert steps.dedupe_latest(f).sort("user")["rating"].to_list() == [2.0, 3.0]


def test_k_core_is_iterative():
    # user 3 has 1 interaction -> dropped; then item 30 has 1 -> dropped; then user 2 has 1 -> dropped.
    rows = [(1, 10), (1, 20), (2, 10), (2, 30), (3, 30), (4, 10), (4, 20)]
    f = pl.DataFrame(rows, schema=["user", "item"], orient="row")
    out = steps.k_core(f, 2, 2)
    assert sorted(out.rows()) == [(1, 10), (1, 20), (4, 10), (4, 20)]
    # the result really is a 2-core
    assert out.group_by("user").len()["len"].min() >= 2
    assert out.group_by("item").len()["len"].min() >= 2


def test_id_map_is_sorted_dense_and_apply_map_drops_unknown():
    m = steps.id_map(pl.Series(["b", "a", "c", "a"]), "user_id")
    assert m.rows() == [("a", 0), ("b", 1), ("c", 2)]
    f = pl.DataFrame({"src": ["c", "z", "a"], "x": [1, 2, 3]})
    out = steps.apply_map(f, "src", m, "src")
    assert out.select("src", "x").rows() == [(2, 1), (0, 3)]


@pytest.mark.parametrize(
    "text",
    ["random:0.8,0.1", "random:0.5,0.5,0.5", "bogus", "random:a,b,c", "loo:0.1,0.2,0.7", "random:0,0.5,0.5"],
)
def test_bad_split_specs(text):
    with pytest.raises(ConfigError, match="--split"):
        steps.SplitSpec.parse(text)


def _users_frame(n_per_user, with_ts=True):
    rows = []
    for u, n in enumerate(n_per_user):
        for i in range(n):
            rows.append((u, i, 100 * u + i))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")


def test_random_split_ratios_per_user_and_seeded():
    f = _users_frame([10, 20, 5, 1, 3])
    a = steps.split_per_user(f, steps.SplitSpec.parse("random:0.8,0.1,0.1"), seed=1)
    b = steps.split_per_user(f, steps.SplitSpec.parse("random:0.8,0.1,0.1"), seed=1)
    c = steps.split_per_user(f, steps.SplitSpec.parse("random:0.8,0.1,0.1"), seed=2)
    assert a.equals(b)
    assert not a.equals(c)
    counts = {(u, s): n for u, s, n in a.group_by("user_id", "split").len().rows()}
    # n=10: b1=8, b2=9 -> 8/1/1; n=20: 16/2/2; n=5: b1=4, b2=round(4.5)=5 -> 4/1/0; n=1: 1/0/0; n=3: 2/1/0
    assert (counts[(0, "train")], counts[(0, "valid")], counts[(0, "test")]) == (8, 1, 1)
    assert (counts[(1, "train")], counts[(1, "valid")], counts[(1, "test")]) == (16, 2, 2)
    assert (counts[(2, "train")], counts[(2, "valid")]) == (4, 1)
    assert counts[(3, "train")] == 1 and (3, "valid") not in counts
    assert (counts[(4, "train")], counts[(4, "valid")]) == (2, 1)


def test_temporal_and_loo_put_latest_last():
    f = _users_frame([10, 2])
    t = steps.split_per_user(f, steps.SplitSpec.parse("temporal:0.8,0.1,0.1"), seed=0)
    user0 = t.filter(pl.col("user_id") == 0).sort("ts")
    assert user0["split"].to_list() == ["train"] * 8 + ["valid", "test"]
    loo = steps.split_per_user(f, steps.SplitSpec.parse("loo"), seed=0)
    assert loo.filter(pl.col("user_id") == 0).sort("ts")["split"].to_list()[-2:] == ["valid", "test"]
    assert set(loo.filter(pl.col("user_id") == 1)["split"]) == {"train"}


def test_temporal_split_without_timestamps_is_an_error():
    f = _users_frame([4]).drop("ts")
    with pytest.raises(ConfigError, match="timestamps"):
        steps.split_per_user(f, steps.SplitSpec.parse("temporal"), seed=0)


def test_modal_value_top_k_with_ties():
    f = pl.DataFrame({"item": [1, 1, 1, 2, 2], "cat": [5, 5, 3, 9, 4]})
    assert sorted(steps.modal_value(f, "item", "cat").rows()) == [(1, 5), (2, 4)]
    assert sorted(steps.modal_value(f, "item", "cat", 2).rows()) == [(1, 3), (1, 5), (2, 4), (2, 9)]


def test_require_rows():
    with pytest.raises(RecmtlError, match="no interactions left after k-core"):
        steps.require_rows(pl.DataFrame({"user": []}), "k-core")
