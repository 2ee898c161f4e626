"""STEM at the embedding level (recmtl/model/stem.py, METHODS.md §7): the layout, the gates, the
stop-gradient (no auxiliary loss ever changes the main task's own tables), the vectors evaluation
precomputes, checkpoints, and what the per-row aggregators see."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recmtl.aggregators import EW, PMTRec
from recmtl.data.store import open_dataset
from recmtl.data.tensors import TrainData
from recmtl.errors import RecmtlError
from recmtl.model import MFModel, StemLayout, StemModel, create_encoder, load_encoder
from recmtl.model.stem import gate_key
from recmtl.tasks.base import bpr_loss
from recmtl.train.loop import build_training, epoch_seed
from recmtl.train.step import train_step
from tests.train.conftest import quick_config

TASKS = (
    ("rec", ("user", "item")),
    ("social", ("user",)),
    ("category", ("item",)),
    ("align", ("user", "item")),
)


def model(layout: StemLayout | None = None, n_users: int = 7, n_items: int = 5, dim: int = 4) -> StemModel:
    m = StemModel.create(n_users, n_items, dim, "normal", 0.1, seed=0, layout=layout or StemLayout(TASKS))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # gates away from their uniform start, so the tests see real mixtures
        for value in m.private.values():
            value.copy_(torch.randn(value.shape, generator=gen))
    return m


# --------------------------------------------------------------------------------------------------
# layout


def test_tables_and_candidates():
    layout = StemLayout(TASKS)
    assert layout.table_names == (
        "user", "item", "user.rec", "item.rec", "user.social", "item.category", "user.align", "item.align"
    )  # fmt: skip
    assert layout.candidates("rec", "user") == ["user.rec", "user.social", "user.align", "user"]
    assert layout.candidates("social", "user") == ["user.social", "user.rec", "user.align", "user"]
    assert layout.candidates("category", "item") == ["item.category", "item.rec", "item.align", "item"]


def test_asymmetric_and_no_shared_layouts():
    asym = StemLayout(TASKS, asymmetric=True)
    assert asym.candidates("rec", "item") == ["item.rec", "item.category", "item.align", "item"]
    assert asym.candidates("social", "user") == ["user.social", "user"]
    alone = StemLayout(TASKS, shared=False)
    assert "user" not in alone.table_names and "item" not in alone.table_names
    assert alone.candidates("social", "user") == ["user.social", "user.rec", "user.align"]


def test_shared_tables_start_as_matrix_factorisation_tables():
    stem, mf = model(), MFModel.create(7, 5, 4, "normal", 0.1, seed=0)
    assert torch.equal(stem.tables["user"], mf.tables["user"])
    assert torch.equal(stem.tables["item"], mf.tables["item"])
    assert stem.weight.shape == (2 * 7 + 2 * 5 + 7 + 5 + 7 + 5, 4)


# --------------------------------------------------------------------------------------------------
# gates and vectors


LAYOUTS = {
    "default": StemLayout(TASKS),
    "asymmetric": StemLayout(TASKS, asymmetric=True),
    "no-shared": StemLayout(TASKS, shared=False),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_gate_outputs_are_a_distribution(layout):
    m = model(layout)
    for task, entities in TASKS:
        for entity in entities:
            w = m.gate_weights(task, entity, torch.randn(11, 4) * 5)
            assert w.shape == (11, len(layout.candidates(task, entity)))
            assert (w >= 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones(11))


def test_zero_gates_start_uniform():
    m = StemModel.create(7, 5, 4, "normal", 0.1, seed=0, layout=StemLayout(TASKS))
    w = m.gate_weights("rec", "user", torch.randn(3, 4))
    torch.testing.assert_close(w, torch.full((3, 4), 0.25))


def test_vector_is_the_gated_mix_of_the_candidates():
    m = model()
    x = torch.tensor([0, 3, 3, 6])
    spans = m.table_rows
    cands = [m.weight[spans[t].start + x] for t in m.layout.candidates("rec", "user")]
    w = torch.softmax((cands[0] + cands[-1]) @ m.private[gate_key("rec", "user", "W")].T
                      + m.private[gate_key("rec", "user", "b")], -1)  # fmt: skip
    expected = sum(w[:, k : k + 1] * c for k, c in enumerate(cands))
    torch.testing.assert_close(m.embed("rec", {"user": x}).rows["user"], expected)


@pytest.mark.parametrize(
    "layout", [StemLayout(TASKS), StemLayout(TASKS, shared=False)], ids=["default", "no-shared"]
)
def test_precomputed_vectors_equal_the_training_path(layout, monkeypatch):
    """Evaluation's user / item vectors (every row, in chunks) equal what the training step computes for a
    batch (up to float rounding: the gate's matmul may sum in another order for another number of rows)."""
    monkeypatch.setattr("recmtl.model.stem.CHUNK_ROWS", 3)  # several chunks, the last of one row
    m = model(layout, n_users=10, n_items=8)
    users, items = torch.tensor([9, 0, 4, 4, 2]), torch.tensor([7, 1, 1, 0, 5, 3])
    rows = m.embed("rec", {"user": users, "item": items}).rows
    close = {"rtol": 1e-6, "atol": 1e-7}
    torch.testing.assert_close(m.user_embeddings()[users], rows["user"].detach(), **close)
    torch.testing.assert_close(m.item_embeddings()[items], rows["item"].detach(), **close)
    assert m.user_embeddings().shape == (10, 4) and m.item_embeddings().shape == (8, 4)
    for task, entities in TASKS:  # every task's vectors, the same way
        for entity in entities:
            x = torch.tensor([1, 3, 3])
            torch.testing.assert_close(
                m.vectors(task, entity, x), m.embed(task, {entity: x}).rows[entity], **close
            )


def test_precomputed_vectors_equal_the_training_path_on_a_trained_model(tiny_data):
    """The same on the tiny dataset after training steps, for a full training batch."""
    config = quick_config(tiny_data, aux=("social", "category"), encoder="stem", method="pmtrec")
    train = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    m, plan = build_training(config, train, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    state = plan.aggregator.init_state(plan.n_tasks, m.weight.shape[0], plan.mode)
    for step in range(5):
        batch = torch.arange(step * 256, (step + 1) * 256)
        state = train_step(m, plan, train.train.a[batch], train.train.b[batch], gen, 0, step, state).state
    users, items = train.train.a[:256], train.train.b[:256]
    rows = m.embed("rec", {"user": users, "item": items}).rows
    torch.testing.assert_close(m.user_embeddings()[users], rows["user"].detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(m.item_embeddings()[items], rows["item"].detach(), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# the stop-gradient


def aux_gradient(m: StemModel, task: str = "social") -> tuple[torch.Tensor, torch.Tensor]:
    """The social task's BPR loss on a few users: (storage rows of its leaf, the leaf's gradient)."""
    users = torch.tensor([0, 1, 2, 3, 4, 5])
    emb = m.embed(task, {"user": users})
    x = emb.rows["user"]
    bpr_loss(x[:2], x[2:4], x[4:].reshape(2, 1, -1)).backward()
    return emb.ids, emb.leaf.grad


def rows_of(m: StemModel, table: str) -> torch.Tensor:
    span = m.table_rows[table]
    return torch.arange(span.start, span.stop)


def test_an_auxiliary_loss_never_reaches_the_main_task_tables():
    m = model()
    ids, grad = aux_gradient(m)
    assert not torch.isin(ids, rows_of(m, "user.rec")).any()
    assert not torch.isin(ids, rows_of(m, "user.align")).any()
    assert torch.isin(ids, rows_of(m, "user.social")).any() and torch.isin(ids, rows_of(m, "user")).any()
    assert grad.abs().sum() > 0
    # the gate of the task gets its gradient; the main task's gate none
    assert m.private[gate_key("social", "user", "W")].grad is not None
    assert m.private[gate_key("rec", "user", "W")].grad is None


def test_without_stopgrad_the_auxiliary_loss_reaches_the_other_tables():
    m = model(StemLayout(TASKS, stopgrad=False))
    ids, grad = aux_gradient(m)
    on_rec = torch.isin(ids, rows_of(m, "user.rec"))
    assert on_rec.any() and grad[on_rec].abs().sum() > 0


def aux_only_steps(data, n_steps: int = 6, **options) -> tuple[dict, dict]:
    """The tables before and after ``n_steps`` training steps whose only loss is the auxiliary tasks'
    (rec's fixed weight 0: never sampled nor back-propagated)."""
    config = quick_config(data, aux=("social", "category"), encoder="stem", method="ew", **options)
    train = TrainData.load(open_dataset(data), torch.device("cpu"))
    m, plan = build_training(config, train, torch.device("cpu"))
    plan = dataclasses.replace(plan, fixed_weights=torch.tensor([0.0, 1.0, 1.0]))
    assert plan.active_tasks == [1, 2]
    before = {k: v.clone() for k, v in m.tables.items()}
    gen = torch.Generator().manual_seed(epoch_seed(0, 0))
    state = plan.aggregator.init_state(plan.n_tasks, m.weight.shape[0], plan.mode)
    for step in range(n_steps):
        batch = torch.arange(step * 64, (step + 1) * 64)
        out = train_step(m, plan, train.train.a[batch], train.train.b[batch], gen, 0, step, state)
        state = out.state
    return before, {k: v.clone() for k, v in m.tables.items()}


def test_auxiliary_steps_leave_the_main_task_tables_bit_identical(tiny_data):
    before, after = aux_only_steps(tiny_data)
    assert torch.equal(before["user.rec"], after["user.rec"])
    assert torch.equal(before["item.rec"], after["item.rec"])
    for moved in ("user", "item", "user.social", "item.category"):
        assert not torch.equal(before[moved], after[moved]), moved


def test_auxiliary_steps_without_stopgrad_change_the_main_task_tables(tiny_data):
    before, after = aux_only_steps(tiny_data, stem_no_stopgrad=True)
    assert not torch.equal(before["user.rec"], after["user.rec"])
    assert not torch.equal(before["item.rec"], after["item.rec"])


# --------------------------------------------------------------------------------------------------
# what the aggregators see


@dataclasses.dataclass(frozen=True)
class Recording:
    """An aggregator that records the presence mask and row ids it is given, then delegates."""

    inner: object
    seen: list = dataclasses.field(default_factory=list)

    def aggregate(self, grads, state, info):
        self.seen.append((info.row_ids.clone(), grads.row_present.clone()))
        return self.inner.aggregate(grads, state, info)


@pytest.mark.parametrize("mode", ["row", "global"])
def test_tasks_meet_only_on_the_shared_rows(tiny_data, mode):
    """Per-row aggregation with STEM: a task-specific row carries its own task's gradient only; the
    shared rows are where tasks meet. (Global mode gets the same rows, flattened.)"""
    config = quick_config(tiny_data, aux=("social", "category"), encoder="stem", method=PMTRec(), mode=mode)
    train = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    m, plan = build_training(config, train, torch.device("cpu"))
    recorder = Recording(plan.aggregator)
    plan = dataclasses.replace(plan, aggregator=recorder)
    gen = torch.Generator().manual_seed(1)
    state = plan.aggregator.inner.init_state(plan.n_tasks, m.weight.shape[0], mode)
    batch = torch.arange(256)
    train_step(m, plan, train.train.a[batch], train.train.b[batch], gen, 0, 0, state)
    if mode == "global":
        return  # (the global mask is [1, T]: every task present)
    rows, present = recorder.seen[0]
    owner = {"rec": 0, "social": 1, "category": 2}
    for table, span in m.table_rows.items():
        inside = (rows >= span.start) & (rows < span.stop)
        assert inside.any(), table
        if "." in table:
            expected = torch.zeros(plan.n_tasks, dtype=torch.bool)
            expected[owner[table.partition(".")[2]]] = True
            assert (present[inside] == expected).all(), table
    shared = torch.isin(rows, torch.cat([rows_of(m, "user"), rows_of(m, "item")]))
    assert (present[~shared].sum(1) == 1).all()
    assert (present[shared].sum(1) >= 2).any()  # tasks do meet there


# --------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip_and_encoder_mismatch():
    layout = StemLayout(TASKS)
    m = model(layout)
    tensors = m.state_tensors()
    back = load_encoder("stem", tensors, layout)
    assert torch.equal(back.weight, m.weight)
    assert torch.equal(back.user_embeddings(), m.user_embeddings())
    with pytest.raises(RecmtlError, match="not trained with --encoder mf"):
        load_encoder("mf", tensors, layout)
    with pytest.raises(RecmtlError, match="tables"):
        load_encoder("stem", MFModel.create(7, 5, 4, "normal", 0.1, 0).state_tensors(), layout)
    with pytest.raises(RecmtlError, match="gate"):  # the same tables, other options: other gate shapes
        load_encoder("stem", tensors, StemLayout(TASKS, asymmetric=True))


def test_create_encoder_by_name():
    layout = StemLayout(TASKS)
    assert isinstance(create_encoder("mf", n_users=3, n_items=2, dim=4, init="normal", init_std=0.1, seed=0,
                                     layout=layout), MFModel)  # fmt: skip
    with pytest.raises(RecmtlError, match="unknown encoder"):
        create_encoder(
            "bogus", n_users=3, n_items=2, dim=4, init="normal", init_std=0.1, seed=0, layout=layout
        )


def test_ew_is_a_fixed_weight_method():
    """(aux_only_steps relies on it: the fixed weights decide which tasks run.)"""
    assert EW().fixed_task_weights(3) is not None
