"""``--aux-sampling aligned`` (recmtl.tasks, METHODS.md §4.5): every auxiliary batch anchored on the rec
batch's rows, with a uniform fallback for anchors without an edge or label; sizes smaller and larger than
the rec batch; losses that read their batch size from the batch; determinism; the option end to end."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from recmtl.data.tensors import Pairs, TrainData
from recmtl.errors import ConfigError, RecmtlError
from recmtl.tasks import TASKS, TaskOptions
from recmtl.tasks.base import OutEdges, anchor_positions, bpr_loss
from recmtl.train.config import TrainConfig
from recmtl.train.loop import fit
from tests.train.conftest import quick_config
from tests.train.test_tasks import DATA, key_set

ALIGNED = TaskOptions(batch_size=64, negatives=2, sampling="aligned")
EDGE_TASKS = {"social": ("user", DATA.social), "coview": ("item", None), "cobuy": ("item", None)}


def pairs(rows: list[tuple[int, int]], value: list[float] | None = None) -> Pairs:
    t = torch.tensor(rows, dtype=torch.long)
    v = None if value is None else torch.tensor(value, dtype=torch.float32)
    return Pairs(t[:, 0].contiguous(), t[:, 1].contiguous(), v)


def sparse_data() -> TrainData:
    """6 users, 8 items. Users 0-2 have out-edges (0->1, 0->2, 1->3, 2->4, 2->5), users 3-5 none; items 0-3
    labelled (item i: labels {i % 3} and item 0 also 2), 4-7 not; item edges 0->1, 0->2, 1->3 of both kinds;
    train pairs (u, u) and (u, u + 2) with rating 10 u + item."""
    train = [(u, u) for u in range(6)] + [(u, u + 2) for u in range(6)]
    return TrainData(
        n_users=6,
        n_items=8,
        train=pairs(train, [10.0 * u + i for u, i in train]),
        valid=pairs([(0, 7)]),
        test=pairs([(0, 6)]),
        social=pairs([(0, 1), (0, 2), (1, 3), (2, 4), (2, 5)]),
        item_category=pairs([(0, 0), (0, 2), (1, 1), (2, 2), (3, 0)]),
        n_categories=3,
        item_item={
            "also_viewed": pairs([(0, 1), (0, 2), (1, 3)]),
            "also_bought": pairs([(0, 1), (0, 2), (1, 3)]),
        },
    )


SPARSE = sparse_data()


def edge_sample(name: str, data: TrainData, options: TaskOptions, users, items, seed: int = 0):
    """(src [b], dst [b]) of an edge task's batch."""
    task = TASKS[name](data, options)
    ids = task.sample(torch.Generator().manual_seed(seed), users, items).ids[task.table]
    b = options.batch_size
    assert ids.numel() == b * (2 + options.negatives)
    return ids[:b], ids[b : 2 * b]


def task_edges(name: str, data: TrainData) -> set[tuple[int, int]]:
    if name == "social":
        return key_set(data.social)
    return key_set(TASKS[name](data, ALIGNED).edges)


# --------------------------------------------------------------------------------------------------
# helpers


def test_anchor_positions_without_replacement_when_smaller():
    gen = torch.Generator().manual_seed(0)
    pos = anchor_positions(gen, 10, 7, torch.device("cpu"))
    assert pos.numel() == 7 and len(set(pos.tolist())) == 7 and 0 <= int(pos.min()) and int(pos.max()) < 10
    assert sorted(anchor_positions(gen, 10, 10, torch.device("cpu")).tolist()) == list(range(10))


def test_anchor_positions_repeat_every_anchor_when_larger():
    pos = anchor_positions(torch.Generator().manual_seed(0), 4, 11, torch.device("cpu"))
    counts = Counter(pos.tolist())
    assert pos.numel() == 11 and set(counts) == {0, 1, 2, 3}
    assert sorted(counts.values()) == [2, 3, 3, 3]  # 11 = 2 x 4 + 3 distinct extra


def test_out_edges_pick_only_the_anchors_edges_uniformly():
    edges = OutEdges(torch.tensor([0, 0, 0, 2]), torch.tensor([5, 6, 7, 1]), 4)
    anchors = torch.tensor([0] * 3000 + [1, 2, 3])
    has, dst = edges.pick(torch.Generator().manual_seed(0), anchors)
    assert has.tolist()[-3:] == [False, True, False] and bool(has[:3000].all())
    assert int(dst[-2]) == 1
    counts = Counter(dst[:3000].tolist())
    assert set(counts) == {5, 6, 7} and min(counts.values()) > 900  # uniform among the three


# --------------------------------------------------------------------------------------------------
# edge tasks: social, coview, cobuy


@pytest.mark.parametrize("name", ["social", "coview", "cobuy"])
def test_aligned_edge_task_draws_edges_of_its_anchors(name):
    users, items = DATA.train.a[:100], DATA.train.b[:100]  # every user and item of DATA has out-edges
    anchors = users if name == "social" else items
    src, dst = edge_sample(name, DATA, ALIGNED, users, items)
    assert Counter(src.tolist()) <= Counter(anchors.tolist())  # 64 of the 100 rows, without replacement
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) <= task_edges(name, DATA)


@pytest.mark.parametrize("name", ["social", "coview", "cobuy"])
def test_aligned_anchor_without_edges_falls_back_to_a_uniform_edge(name):
    # social: users 3-5 have no out-edge; items: 4-7 have none
    anchors = torch.tensor([3, 4, 5] * 10) if name == "social" else torch.tensor([4, 5, 6, 7] * 10)
    options = dataclasses.replace(ALIGNED, batch_size=400)
    src, dst = edge_sample(name, SPARSE, options, anchors, anchors)
    edges = task_edges(name, SPARSE)
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) == edges  # 400 uniform draws: every edge
    assert not set(src.tolist()) & set(anchors.tolist())


def test_aligned_social_mixes_anchors_and_fallbacks():
    users = torch.tensor([0, 3, 1, 4])  # 0 and 1 have edges, 3 and 4 none
    src, dst = edge_sample("social", SPARSE, dataclasses.replace(ALIGNED, batch_size=4), users, users)
    got = Counter(src.tolist())
    assert got[0] >= 1 and got[1] >= 1 and got[3] == 0 and got[4] == 0
    assert set(zip(src.tolist(), dst.tolist(), strict=True)) <= key_set(SPARSE.social)


@pytest.mark.parametrize("size", [3, 5, 12])  # smaller than, equal to, larger than the rec batch (5)
def test_aligned_batch_has_its_own_size(size):
    users = torch.tensor([0, 1, 2, 0, 2])  # 5 rec rows, users with out-edges
    options = dataclasses.replace(ALIGNED, batch_size=size)
    src, _ = edge_sample("social", SPARSE, options, users, users)
    assert src.numel() == size
    if size <= 5:
        assert Counter(src.tolist()) <= Counter(users.tolist())
    else:  # every rec row twice, 2 rows a third time: user 0 (rows 0, 3) 4-6 times
        assert Counter(src.tolist())[0] in (4, 5, 6) and Counter(src.tolist())[1] in (2, 3)


def test_aligned_sampling_is_deterministic_for_a_seeded_generator():
    users, items = DATA.train.a[:50], DATA.train.b[:50]
    for name in ("social", "coview", "category", "rating"):
        task = TASKS[name](DATA, ALIGNED)
        a = task.sample(torch.Generator().manual_seed(3), users, items)
        b = task.sample(torch.Generator().manual_seed(3), users, items)
        c = task.sample(torch.Generator().manual_seed(4), users, items)
        for table in a.ids:
            assert torch.equal(a.ids[table], b.ids[table]), name
        assert any(not torch.equal(a.ids[t], c.ids[t]) for t in a.ids), name


def test_independent_sampling_is_unchanged_by_the_option():
    """The default draws exactly what it drew before the option existed: the uniform edges."""
    users, items = DATA.train.a[:50], DATA.train.b[:50]
    options = TaskOptions(batch_size=64, negatives=2)
    task = TASKS["social"](DATA, options)
    got = task.sample(torch.Generator().manual_seed(0), users, items).ids["user"]
    gen = torch.Generator().manual_seed(0)
    pick = torch.randint(len(DATA.social), (64,), generator=gen)
    assert torch.equal(got[:64], DATA.social.a[pick]) and torch.equal(got[64:128], DATA.social.b[pick])


# --------------------------------------------------------------------------------------------------
# category and rating


def test_aligned_category_takes_the_rec_items_and_one_of_their_labels():
    items = torch.tensor([0, 1, 2, 3, 0, 0])
    options = dataclasses.replace(ALIGNED, batch_size=600)  # every rec row 100 times
    batch = TASKS["category"](SPARSE, options).sample(torch.Generator().manual_seed(0), items, items)
    got = Counter(zip(batch.ids["item"].tolist(), batch.extra["label"].tolist(), strict=True))
    assert set(got) == {(0, 0), (0, 2), (1, 1), (2, 2), (3, 0)}  # only labels of the item, both of item 0's
    assert sum(n for (i, _), n in got.items() if i == 0) == 300


def test_aligned_category_unlabelled_item_falls_back_to_a_uniform_labelled_item():
    items = torch.tensor([4, 5, 6, 7])
    options = dataclasses.replace(ALIGNED, batch_size=400)
    batch = TASKS["category"](SPARSE, options).sample(torch.Generator().manual_seed(0), items, items)
    labelled = key_set(SPARSE.item_category)
    got = set(zip(batch.ids["item"].tolist(), batch.extra["label"].tolist(), strict=True))
    assert got <= labelled and {i for i, _ in got} == {0, 1, 2, 3}


def test_aligned_rating_takes_the_rec_pairs_with_their_rating():
    users, items = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 3, 2, 5])
    options = dataclasses.replace(ALIGNED, batch_size=4)
    batch = TASKS["rating"](SPARSE, options).sample(torch.Generator().manual_seed(0), users, items)
    got = sorted(zip(batch.ids["user"].tolist(), batch.ids["item"].tolist(), strict=True))
    assert got == [(0, 0), (1, 3), (2, 2), (3, 5)]
    assert torch.equal(batch.extra["rating"], 10.0 * batch.ids["user"] + batch.ids["item"])


def test_aligned_rating_pair_without_a_rating_falls_back_to_a_uniform_row():
    users, items = torch.tensor([0, 0]), torch.tensor([7, 6])  # not training pairs
    options = dataclasses.replace(ALIGNED, batch_size=200)
    batch = TASKS["rating"](SPARSE, options).sample(torch.Generator().manual_seed(0), users, items)
    got = set(zip(batch.ids["user"].tolist(), batch.ids["item"].tolist(), strict=True))
    assert got <= key_set(SPARSE.train) and len(got) > 6
    assert torch.equal(batch.extra["rating"], 10.0 * batch.ids["user"] + batch.ids["item"])


# --------------------------------------------------------------------------------------------------
# losses read their batch size from the batch


def test_edge_loss_uses_the_batch_size_of_its_batch_not_the_options():
    task = TASKS["social"](DATA, TaskOptions(batch_size=64, negatives=2))
    x = torch.randn(3 * 4, 8)  # a batch of 3 (src, dst, 2 negatives each)
    batch = task.sample(torch.Generator(), DATA.train.a[:3], DATA.train.b[:3])  # (ids unused by the loss)
    expected = bpr_loss(x[:3], x[3:6], x[6:].reshape(3, 2, 8))
    assert torch.allclose(task.loss({"user": x}, batch, {}), expected)


# --------------------------------------------------------------------------------------------------
# the option


def test_aux_sampling_option_is_validated():
    assert TrainConfig().aux_sampling == "independent"
    with pytest.raises(ConfigError, match="--aux-sampling bogus: expected independent or aligned"):
        TrainConfig(aux_sampling="bogus").validate()
    with pytest.raises(ValueError, match="sampling"):
        TaskOptions(sampling="bogus")


def test_aligned_training_runs_every_aux_task_including_the_last_smaller_batch(tiny_data, tmp_path):
    aux = ("social", "category", "coview", "rating", "align", "uniform")  # (tiny data: no also_bought)
    config = quick_config(tiny_data, aux=aux, epochs=1, batch_size=1000, aux_sampling="aligned")
    result = fit(config, tmp_path / "r")  # 4800 rec pairs: the last batch holds 800
    record = result.history[0]
    for task in ("rec", *aux):
        assert record[f"loss_{task}"] == record[f"loss_{task}"], task  # finite, not NaN
    again = fit(dataclasses.replace(config, aux_sampling="independent"), tmp_path / "i").history[0]
    assert again["loss_social"] != record["loss_social"]


def test_a_run_saved_before_the_option_existed_resumes_with_the_default(tiny_data, tmp_path):
    import json

    config = quick_config(tiny_data, aux=("social",), epochs=1)
    fit(config, tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    saved = json.loads(path.read_text())
    del saved["config"]["aux_sampling"]
    path.write_text(json.dumps(saved))
    assert len(fit(dataclasses.replace(config, epochs=2), tmp_path / "r", resume=True).history) == 2
    # (extending the run rewrote config.json with the option in it)
    with pytest.raises(
        RecmtlError, match="--aux-sampling is aligned but the run was started with independent"
    ):
        fit(dataclasses.replace(config, epochs=3, aux_sampling="aligned"), tmp_path / "r", resume=True)
