"""Tasks (recmtl.tasks) on a hand-built in-memory dataset, and the training step (recmtl.train.step):
sampling ranges, negatives, labels, losses and gradients, missing tables, and the step's update paths."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recmtl.aggregators import make_aggregator
from recmtl.data.tensors import Pairs, TrainData
from recmtl.errors import RecmtlError
from recmtl.model.mf import MFModel
from recmtl.tasks import TASKS, TaskOptions, build_tasks
from recmtl.train.config import AUX_TASKS
from recmtl.train.row_adam import RowAdam
from recmtl.train.step import RowWorkspace, StepPlan, train_step

N_USERS, N_ITEMS, N_CATEGORIES = 60, 400, 7
PER_USER = 6  # train positives per user: 6 / 400 items, so a negative rarely survives 3 re-draws


def build_data() -> TrainData:
    """Every user has 6 train, 1 valid and 1 test item (distinct), explicit ratings; 2 friends each;
    item i has category i % 7 and items divisible by 5 also (i + 1) % 7; also_viewed edges i -> i+1, i+2
    and also_bought edges i -> i+3 (mod 400)."""
    gen = torch.Generator().manual_seed(0)
    splits: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    for u in range(N_USERS):
        chosen = torch.randperm(N_ITEMS, generator=gen)[: PER_USER + 2]
        splits["train"] += [(u, int(i)) for i in chosen[:PER_USER]]
        splits["valid"].append((u, int(chosen[PER_USER])))
        splits["test"].append((u, int(chosen[PER_USER + 1])))

    def pairs(rows, value=None):
        t = torch.tensor(rows, dtype=torch.long)
        return Pairs(t[:, 0].contiguous(), t[:, 1].contiguous(), value)

    ratings = torch.randint(1, 6, (len(splits["train"]),), generator=gen).float()
    social = []
    for u in range(N_USERS):
        friends = torch.randperm(N_USERS - 1, generator=gen)[:2]
        social += [(u, int(f) + (int(f) >= u)) for f in friends]  # never u itself
    category = [(i, i % N_CATEGORIES) for i in range(N_ITEMS)]
    category += [(i, (i + 1) % N_CATEGORIES) for i in range(0, N_ITEMS, 5)]
    viewed = [(i, (i + d) % N_ITEMS) for i in range(N_ITEMS) for d in (1, 2)]
    bought = [(i, (i + 3) % N_ITEMS) for i in range(N_ITEMS)]
    return TrainData(
        n_users=N_USERS,
        n_items=N_ITEMS,
        train=pairs(splits["train"], ratings),
        valid=pairs(splits["valid"]),
        test=pairs(splits["test"]),
        social=pairs(social),
        item_category=pairs(category),
        n_categories=N_CATEGORIES,
        item_item={"also_viewed": pairs(viewed), "also_bought": pairs(bought)},
    )


DATA = build_data()
OPTIONS = TaskOptions(batch_size=512, negatives=3)


def key_set(pairs: Pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True))


def rec_batch(seed: int, size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A rec batch of training pairs drawn with replacement (so users and items repeat)."""
    idx = torch.randint(len(DATA.train), (size,), generator=torch.Generator().manual_seed(seed))
    return DATA.train.a[idx], DATA.train.b[idx]


# --------------------------------------------------------------------------------------------------
# registry and construction


def test_registry_holds_rec_and_every_aux_name():
    assert set(TASKS) == {"rec", *AUX_TASKS}
    for name, cls in TASKS.items():
        assert cls.name == name
        assert set(cls.tables) <= {"user", "item"} and cls.tables


def test_build_tasks_puts_rec_first_then_aux_in_order():
    tasks = build_tasks(("category", "social"), DATA, OPTIONS)
    assert [t.name for t in tasks] == ["rec", "category", "social"]


# --------------------------------------------------------------------------------------------------
# every task: ids in range, finite differentiable loss


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_samples_ids_in_range_and_has_a_finite_differentiable_loss(name):
    task = TASKS[name](DATA, OPTIONS)
    private = {k: v.requires_grad_(True) for k, v in task.init_private(8, torch.Generator()).items()}
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(N_USERS + N_ITEMS, 8, generator=torch.Generator().manual_seed(2)) * 0.1
    offsets = {"user": 0, "item": N_USERS}
    sizes = {"user": N_USERS, "item": N_ITEMS}
    for seed in range(3):
        users, items = rec_batch(seed)
        batch = task.sample(gen, users, items)
        assert set(batch.ids) <= set(task.tables) and batch.ids
        for table, ids in batch.ids.items():
            assert ids.dtype == torch.long and ids.dim() == 1 and ids.numel() > 0
            assert int(ids.min()) >= 0 and int(ids.max()) < sizes[table], table
        rows = {t: weight[ids + offsets[t]].clone().requires_grad_(True) for t, ids in batch.ids.items()}
        loss = task.loss(rows, batch, private)
        assert loss.dim() == 0 and torch.isfinite(loss)
        grads = torch.autograd.grad(loss, list(rows.values()) + list(private.values()), allow_unused=True)
        row_grads = grads[: len(rows)]
        for g in row_grads:
            assert g is not None and torch.isfinite(g).all()
        assert any(bool(g.abs().sum() > 0) for g in row_grads)
        for g in grads[len(rows) :]:
            assert g is None or torch.isfinite(g).all()


def test_uniformity_gradient_is_finite_with_duplicate_rows():
    task = TASKS["uniform"](DATA, OPTIONS)
    users = torch.tensor([0, 0, 1, 1, 2])
    items = torch.tensor([5, 5, 6, 7, 7])
    batch = task.sample(torch.Generator(), users, items)
    rows = {t: torch.randn(ids.numel(), 8).requires_grad_(True) for t, ids in batch.ids.items()}
    rows = {t: r.detach()[[0, 0, 1, 1, 2]].clone().requires_grad_(True) for t, r in rows.items()}
    loss = task.loss(rows, batch, {})
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(r.grad).all() for r in rows.values())


# --------------------------------------------------------------------------------------------------
# sampling semantics


def rec_leftovers(options: TaskOptions, batches: int = 10) -> tuple[int, int]:
    """(negatives that are train positives of their user, negatives drawn) over ``batches`` rec batches."""
    task = TASKS["rec"](DATA, options)
    known = key_set(DATA.train)
    gen = torch.Generator().manual_seed(3)
    bad = total = 0
    for seed in range(batches):
        users, items = rec_batch(seed)
        batch = task.sample(gen, users, items)
        assert torch.equal(batch.ids["user"], users)
        assert batch.ids["item"].numel() == users.numel() * (1 + options.negatives)
        assert torch.equal(batch.ids["item"][: users.numel()], items)
        negatives = batch.ids["item"][users.numel() :].reshape(users.numel(), options.negatives)
        pairs = [(u, n) for u, row in zip(users.tolist(), negatives.tolist(), strict=True) for n in row]
        bad += sum(p in known for p in pairs)
        total += len(pairs)
    return bad, total


def test_rec_negatives_are_never_train_positives_with_three_rejection_rounds():
    # 6 positives among 400 items: a negative survives 3 re-draws with probability (6/400)^4 ~ 5e-8
    bad, total = rec_leftovers(dataclasses.replace(OPTIONS, negative_rounds=3))
    assert total == 10 * 512 * 3 and bad == 0


def test_rec_negatives_with_default_options_rarely_hit_a_train_positive():
    # uniform draws would hit a positive 6/400 = 1.5% of the time; rejection must push that far down
    bad, total = rec_leftovers(OPTIONS)
    assert bad / total < 1e-3, (bad, total, OPTIONS.negative_rounds)


def test_rec_negatives_are_uniform_enough_to_cover_items():
    task = TASKS["rec"](DATA, OPTIONS)
    users, items = rec_batch(0, size=2048)
    batch = task.sample(torch.Generator().manual_seed(0), users, items)
    negatives = batch.ids["item"][users.numel() :]
    assert negatives.unique().numel() > 0.95 * N_ITEMS


EDGE_TASKS = [
    ("social", "user", DATA.social),
    ("coview", "item", DATA.item_item["also_viewed"]),
    ("cobuy", "item", DATA.item_item["also_bought"]),
]


def edge_samples(name: str, table: str, edges: Pairs, options: TaskOptions) -> tuple[int, int]:
    """Check 5 batches of an edge task; return (negatives that are known edges, negatives drawn)."""
    task = TASKS[name](DATA, options)
    known = key_set(edges)
    b, n = options.batch_size, options.negatives
    gen = torch.Generator().manual_seed(4)
    bad = 0
    for seed in range(5):
        users, items = rec_batch(seed)
        batch = task.sample(gen, users, items)
        assert set(batch.ids) == {table}
        ids = batch.ids[table]
        assert ids.numel() == b * (2 + n)
        src, dst, neg = ids[:b], ids[b : 2 * b], ids[2 * b :].reshape(b, n)
        assert all(p in known for p in zip(src.tolist(), dst.tolist(), strict=True))  # positives: edges
        bad += sum((s, x) in known for s, row in zip(src.tolist(), neg.tolist(), strict=True) for x in row)
    return bad, 5 * b * n


@pytest.mark.parametrize("name, table, edges", EDGE_TASKS)
def test_edge_tasks_sample_their_own_edges_and_reject_known_negatives(name, table, edges):
    # at most 2 out-edges per node: (2 / 60)^4 per negative after 3 re-draws
    bad, total = edge_samples(name, table, edges, dataclasses.replace(OPTIONS, negative_rounds=3))
    assert bad == 0, (bad, total)


@pytest.mark.parametrize("name, table, edges", EDGE_TASKS)
def test_edge_task_negatives_with_default_options_rarely_hit_an_edge(name, table, edges):
    bad, total = edge_samples(name, table, edges, OPTIONS)
    assert bad / total < 0.2 * (2 / N_USERS), (bad, total, OPTIONS.negative_rounds)


def test_category_labels_belong_to_the_item_and_multi_labels_alternate():
    task = TASKS["category"](DATA, OPTIONS)
    labels_of: dict[int, set[int]] = {}
    for i, c in key_set(DATA.item_category):
        labels_of.setdefault(i, set()).add(c)
    seen: dict[int, set[int]] = {}
    gen = torch.Generator().manual_seed(5)
    for seed in range(20):
        users, items = rec_batch(seed)
        batch = task.sample(gen, users, items)
        item_ids, label = batch.ids["item"], batch.extra["label"]
        assert item_ids.shape == label.shape == (OPTIONS.batch_size,)
        for i, c in zip(item_ids.tolist(), label.tolist(), strict=True):
            assert c in labels_of[i], (i, c)
            seen.setdefault(i, set()).add(c)
    multi = [i for i, labels in labels_of.items() if len(labels) > 1 and len(seen.get(i, ())) > 0]
    assert multi
    # over 20 x 512 draws a two-label item drawn several times shows both labels
    both = [i for i in multi if seen[i] == labels_of[i]]
    assert len(both) >= 0.8 * len(multi)


def test_rating_task_samples_training_ratings():
    task = TASKS["rating"](DATA, OPTIONS)
    keys = zip(DATA.train.a.tolist(), DATA.train.b.tolist(), strict=True)
    rating_of = dict(zip(keys, DATA.train.value.tolist(), strict=True))
    batch = task.sample(torch.Generator().manual_seed(6), *rec_batch(0))
    e = batch.extra
    assert torch.equal(e["user"], batch.ids["user"]) and torch.equal(e["item"], batch.ids["item"])
    for u, i, r in zip(e["user"].tolist(), e["item"].tolist(), e["rating"].tolist(), strict=True):
        assert rating_of[(u, i)] == r


@pytest.mark.parametrize("name", ["align", "uniform"])
def test_directau_tasks_use_the_rec_batch(name):
    users, items = rec_batch(7)
    batch = TASKS[name](DATA, OPTIONS).sample(torch.Generator(), users, items)
    assert torch.equal(batch.ids["user"], users) and torch.equal(batch.ids["item"], items)


# --------------------------------------------------------------------------------------------------
# missing tables


@pytest.mark.parametrize(
    "name, change, fragment",
    [
        ("social", {"social": None}, "social"),
        ("category", {"item_category": None}, "item_category"),
        ("coview", {"item_item": {}}, "item_item"),
        ("coview", {"item_item": {"also_bought": DATA.item_item["also_bought"]}}, "also_viewed"),
        ("cobuy", {"item_item": {"also_viewed": DATA.item_item["also_viewed"]}}, "also_bought"),
        ("rating", {"train": Pairs(DATA.train.a, DATA.train.b)}, "rating"),
    ],
)
def test_missing_table_is_a_one_line_error_naming_it(name, change, fragment):
    data = dataclasses.replace(DATA, **change)
    with pytest.raises(RecmtlError) as err:
        build_tasks((name,), data, OPTIONS)
    message = str(err.value)
    assert fragment in message and f"--aux {name}" in message and "\n" not in message


# --------------------------------------------------------------------------------------------------
# the training step


DIM = 8


def make_plan(method: str, aux: tuple[str, ...], *, per_task: bool = False, lr: float = 0.01):
    """A fresh model (seed 0) and StepPlan built as ``fit`` builds them; ``per_task`` forces the per-task
    gradient path (no fixed weights)."""
    tasks = build_tasks(aux, DATA, TaskOptions(batch_size=128))
    model = MFModel.create(N_USERS, N_ITEMS, DIM, "normal", 0.1, 0)
    gen = torch.Generator().manual_seed(0)
    for task in tasks:
        model.private |= {f"{task.name}.{k}": v for k, v in task.init_private(DIM, gen).items()}
    model = model.to(torch.device("cpu"))
    aggregator = make_aggregator(method)
    private_opt = torch.optim.Adam(list(model.private.values()), lr=lr) if model.private else None
    row_adam = RowAdam.wrap(model.weight, lr)
    model.weight = row_adam.param
    fixed = None if per_task else aggregator.fixed_task_weights(len(tasks))
    workspace = RowWorkspace(model.weight.shape[0], model.weight.device)
    groups = torch.zeros(model.weight.shape[0], dtype=torch.long)
    plan = StepPlan(
        tasks, aggregator, "row", fixed, private_opt, row_adam, workspace, groups, 1, model.table_rows
    )
    return model, plan


class Recorder:
    """Records what the step hands to RowAdam.step and what each task samples."""

    def __init__(self, plan: StepPlan) -> None:
        self.updates: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.samples: dict[str, list] = {t.name: [] for t in plan.tasks}
        adam_step = plan.row_adam.step

        def step(*args):  # (..., rows [R], update [R, D])
            rows, grad = args[-2], args[-1]
            self.updates.append((rows.clone(), grad.clone()))
            adam_step(*args)

        plan.row_adam.step = step
        for task in plan.tasks:
            self._spy(task)

    def _spy(self, task) -> None:
        sample = task.sample

        def spied(*args):
            batch = sample(*args)
            self.samples[task.name].append(batch)
            return batch

        task.sample = spied


def run_steps(model: MFModel, plan: StepPlan, n: int, *, epoch: int = 0) -> None:
    gen = torch.Generator().manual_seed(11)
    state = plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0])
    for step in range(n):
        idx = torch.randint(len(DATA.train), (128,), generator=gen)
        out = train_step(model, plan, DATA.train.a[idx], DATA.train.b[idx], gen, epoch, step, state)
        state = out.state
        assert torch.isfinite(out.losses).all()


def touched_rows(batches, offsets) -> set[int]:
    return {int(i) + offsets[t] for b in batches for t, ids in b.ids.items() for i in ids}


def test_ew_per_task_path_equals_the_summed_fixed_weight_path():
    aux = ("social", "category")
    fast_model, fast_plan = make_plan("ew", aux)
    slow_model, slow_plan = make_plan("ew", aux, per_task=True)
    assert fast_plan.fixed_weights is not None and slow_plan.fixed_weights is None
    fast, slow = Recorder(fast_plan), Recorder(slow_plan)
    run_steps(fast_model, fast_plan, 3)
    run_steps(slow_model, slow_plan, 3)
    assert len(fast.updates) == len(slow.updates) == 3
    for (rows_a, grad_a), (rows_b, grad_b) in zip(fast.updates, slow.updates, strict=True):
        assert torch.equal(rows_a, rows_b)
        assert torch.allclose(grad_a, grad_b, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fast_model.weight, slow_model.weight, atol=1e-6)
    for name, param in fast_model.private.items():
        assert torch.allclose(param, slow_model.private[name], atol=1e-6), name


def test_single_only_samples_rec_and_never_moves_other_rows():
    model, plan = make_plan("single", ("social", "category"))
    before = model.weight.clone()
    private_before = {k: v.detach().clone() for k, v in model.private.items()}
    recorder = Recorder(plan)
    run_steps(model, plan, 4)
    assert len(recorder.samples["rec"]) == 4
    assert recorder.samples["social"] == [] and recorder.samples["category"] == []
    rec_rows = touched_rows(recorder.samples["rec"], model.offsets)
    changed = set(torch.nonzero((model.weight != before).any(1)).flatten().tolist())
    assert changed == rec_rows
    assert torch.equal(model.private["category.W"], private_before["category.W"])


def test_single_through_the_per_task_path_never_moves_aux_only_rows():
    model, plan = make_plan("single", ("social", "category"), per_task=True)
    before = model.weight.clone()
    recorder = Recorder(plan)
    run_steps(model, plan, 3)
    assert len(recorder.samples["social"]) == 3  # the per-task path samples every task...
    rec_rows = touched_rows(recorder.samples["rec"], model.offsets)
    aux_rows = touched_rows(recorder.samples["social"] + recorder.samples["category"], model.offsets)
    aux_only = sorted(aux_rows - rec_rows)
    assert aux_only
    assert torch.equal(model.weight[aux_only], before[aux_only])  # ...but gives them zero weight


def test_pmtrec_row_touched_only_by_rec_gets_the_ew_update():
    aux = ("social", "category")
    p_model, p_plan = make_plan("pmtrec", aux)
    e_model, e_plan = make_plan("ew", aux)
    p_rec, e_rec = Recorder(p_plan), Recorder(e_plan)
    run_steps(p_model, p_plan, 1, epoch=3)
    run_steps(e_model, e_plan, 1, epoch=3)
    for name in ("rec", "social", "category"):  # both steps drew the same batches
        for a, b in zip(p_rec.samples[name], e_rec.samples[name], strict=True):
            assert all(torch.equal(a.ids[t], b.ids[t]) for t in a.ids)
    rec_rows = touched_rows(p_rec.samples["rec"], p_model.offsets)
    aux_rows = touched_rows(p_rec.samples["social"] + p_rec.samples["category"], p_model.offsets)
    (p_rows, p_grad), (e_rows, e_grad) = p_rec.updates[0], e_rec.updates[0]
    assert torch.equal(p_rows, e_rows)
    only_rec = torch.tensor([r in rec_rows and r not in aux_rows for r in p_rows.tolist()])
    shared = torch.tensor([r in rec_rows and r in aux_rows for r in p_rows.tolist()])
    assert only_rec.any() and shared.any()
    assert torch.allclose(p_grad[only_rec], e_grad[only_rec], rtol=1e-5, atol=1e-6)
    # where rec meets an auxiliary task PMTRec re-weights, so the updates differ there
    assert not torch.allclose(p_grad[shared], e_grad[shared], rtol=1e-3, atol=1e-5)
