"""The whole training step (recmtl.train.step.train_step) against an independent reference, over several
steps spanning two epochs, for ``ew`` and ``pmtrec`` in both modes.

The reference shares only the tasks' ``sample`` (the batches recmtl drew are recorded by a spy and replayed)
and ``loss`` functions, which have their own formula tests, and the aggregator object, whose maths has its
own tests. Everything else is written here without recmtl's step code (no scatter_rows, TaskGrads,
train_step helpers or RowAdam): the shared rows are one full ``[n_users + n_items, D]`` parameter, each
task's loss is computed on rows gathered from it by index and differentiated with ``torch.autograd.grad``
w.r.t. the whole table (duplicate rows summed by autograd), the update goes through
``torch.optim.SparseAdam`` and the task-private parameters through ``torch.optim.Adam``.

Adam's eps: recmtl keeps its default (1e-8, added after the bias correction, as torch.optim.Adam); the
reference's SparseAdam adds eps before the bias correction, so its eps at global step t is set to
``eps · sqrt(1 − β2^t)``, which makes the two formulas equal (see test_row_adam.py).
"""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from recmtl.aggregators import StepInfo
from recmtl.data.store import open_dataset
from recmtl.data.tensors import TrainData
from recmtl.runs import load_tensors
from recmtl.tasks import TaskBatch, TaskOptions
from recmtl.tasks.bpr_tasks import CoviewTask, RecTask, SocialTask
from recmtl.train.loop import build_training, epoch_seed, fit
from recmtl.train.step import train_step
from tests.train.conftest import quick_config

CPU = torch.device("cpu")
AUX = ("social", "category")
#: (epoch, steps run in it): the focusing term α^epoch of PMTRec changes between the two epochs
SCHEDULE = ((0, 3), (1, 2))
#: float32 tolerances of recmtl against the reference
WEIGHT_TOL = {"rtol": 1e-5, "atol": 1e-6}  # table values (~0.1) and private parameters
UPDATE_TOL = {"rtol": 1e-5, "atol": 1e-8}  # aggregated gradients and first moments (~1e-3 .. 1e-5)
SQ_TOL = {"rtol": 1e-5, "atol": 1e-13}  # second moments (~1e-6 .. 1e-10)


@pytest.fixture(scope="module")
def train_data(tiny_data) -> TrainData:
    return TrainData.load(open_dataset(tiny_data), CPU)


def spy_samples(tasks) -> list[dict]:
    """Record every batch each task samples; returns the list the step's batches are appended to, as
    {task name: TaskBatch} per step (a task's sample is wrapped, the original still draws)."""
    log: list[dict] = []

    def wrap(task):
        sample = task.sample

        def spied(*args):
            batch = sample(*args)
            if not log or task.name in log[-1]:
                log.append({})
            log[-1][task.name] = batch
            return batch

        task.sample = spied

    for task in tasks:
        wrap(task)
    return log


def spy_updates(row_adam) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record the (rows, update) recmtl hands to its row optimiser (still applied)."""
    log: list[tuple[torch.Tensor, torch.Tensor]] = []
    step = row_adam.step

    def spied(rows, grad):
        log.append((rows.clone(), grad.clone()))
        step(rows, grad)

    row_adam.step = spied
    return log


class Reference:
    """The independent step: full tables, autograd per task, the aggregator, SparseAdam / Adam."""

    def __init__(self, model, plan, n_users: int, lr: float) -> None:
        self.tasks, self.aggregator, self.mode = plan.tasks, plan.aggregator, plan.mode
        self.fixed = plan.fixed_weights is not None
        self.n_users = n_users
        self.eps, self.beta2 = plan.row_adam.eps, plan.row_adam.beta2
        self.table = torch.nn.Parameter(model.weight.detach().clone())
        self.private = {k: torch.nn.Parameter(v.detach().clone()) for k, v in model.private.items()}
        self.sparse = torch.optim.SparseAdam(
            [self.table], lr=plan.row_adam.lr, betas=(plan.row_adam.beta1, plan.row_adam.beta2), eps=self.eps
        )
        self.dense = torch.optim.Adam(list(self.private.values()), lr=lr)
        self.t = 0

    def private_of(self, task) -> dict[str, torch.nn.Parameter]:
        return {k.split(".", 1)[1]: v for k, v in self.private.items() if k.startswith(f"{task.name}.")}

    def step(self, batches: dict, epoch: int, state) -> dict:
        n_rows, n_tasks = self.table.shape[0], len(self.tasks)
        offset = {"user": 0, "item": self.n_users}
        grads, present, losses = [], torch.zeros(n_rows, n_tasks, dtype=torch.bool), []
        private_grads: dict[str, torch.Tensor] = {}
        for t, task in enumerate(self.tasks):
            batch = batches[task.name]
            rows = {name: self.table[ids + offset[name]] for name, ids in batch.ids.items()}
            private = self.private_of(task)
            loss = task.loss(rows, batch, private)
            names = list(private)
            g = torch.autograd.grad(loss, [self.table, *(private[n] for n in names)])
            grads.append(g[0])  # dense [N, D]
            private_grads |= {f"{task.name}.{n}": gp for n, gp in zip(names, g[1:], strict=True)}
            losses.append(loss.detach())
            for name, ids in batch.ids.items():
                present[ids + offset[name], t] = True
        rows = present.any(1).nonzero().squeeze(1)  # sorted
        G = torch.stack([g[rows] for g in grads], dim=1)  # [R, T, D]
        P = present[rows]
        plain = G.sum(1)
        if self.fixed:
            update, logged = plain, torch.ones(1, n_tasks)
        elif self.mode == "row":
            out = self.aggregator(G, P, state, StepInfo(epoch=epoch, mode="row"))
            update, logged = out.update, out.logged_weights
        else:
            flat = G.transpose(0, 1).reshape(1, n_tasks, -1)  # each task's rows in order
            out = self.aggregator(flat, P.any(0, keepdim=True), state, StepInfo(epoch=epoch, mode="global"))
            update, logged = out.update.reshape(rows.numel(), -1), out.logged_weights

        self.t += 1
        self.sparse.param_groups[0]["eps"] = self.eps * math.sqrt(1 - self.beta2**self.t)
        self.table.grad = torch.sparse_coo_tensor(
            rows[None], update, tuple(self.table.shape), check_invariants=True
        )
        self.sparse.step()
        self.table.grad = None
        self.dense.zero_grad(set_to_none=True)
        for name, param in self.private.items():
            param.grad = private_grads[name]
        self.dense.step()
        losses = torch.stack(losses)
        return {
            "rows": rows,
            "G": G,
            "present": P,
            "update": update,
            "plain": plain,
            "logged": logged,
            "losses": losses,
        }


def close(actual, expected, what, tol) -> None:
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("mode", ["row", "global"])
@pytest.mark.parametrize("method", ["ew", "pmtrec"])
def test_train_steps_equal_an_independent_reference(train_data, tiny_data, method, mode):
    config = quick_config(tiny_data, method=method, mode=mode, aux=AUX, batch_size=48, aux_batch_size=24)
    model, plan = build_training(config.validate(), train_data, CPU)
    assert [t.name for t in plan.tasks] == ["rec", *AUX]
    assert (plan.fixed_weights is not None) == (method == "ew")
    initial = model.weight.clone()
    assert plan.row_adam.lr == config.lr
    ref = Reference(model, plan, train_data.n_users, config.lr)
    batches, updates = spy_samples(plan.tasks), spy_updates(plan.row_adam)
    state = plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0])
    touched = torch.zeros(model.weight.shape[0], dtype=torch.bool)
    n_train = len(train_data.train)
    multi_rows = reweighted = epoch_matters = 0
    for epoch, n_steps in SCHEDULE:
        gen = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        order = torch.randperm(n_train, generator=gen)
        for step in range(n_steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            users, items = train_data.train.a[idx], train_data.train.b[idx]
            out = train_step(model, plan, users, items, gen, epoch, step, state)
            assert set(batches[-1]) == {"rec", *AUX} and len(batches) == len(updates)
            r = ref.step(batches[-1], epoch, state)
            state = out.state
            where = f"{method}/{mode} epoch {epoch} step {step}"

            close(out.losses, r["losses"], f"{where} losses", {"rtol": 1e-6, "atol": 0.0})
            rows, update = updates[-1]
            assert torch.equal(rows, r["rows"]), where
            close(update, r["update"], f"{where} update", UPDATE_TOL)
            close(model.weight, ref.table.detach(), f"{where} weight", WEIGHT_TOL)
            sparse_state = ref.sparse.state[ref.table]
            assert plan.row_adam.steps == int(sparse_state["step"])
            close(plan.row_adam.exp_avg, sparse_state["exp_avg"], f"{where} exp_avg", UPDATE_TOL)
            close(plan.row_adam.exp_avg_sq, sparse_state["exp_avg_sq"], f"{where} exp_avg_sq", SQ_TOL)
            for name, param in model.private.items():
                close(param.detach(), ref.private[name].detach(), f"{where} {name}", WEIGHT_TOL)
                dense_state = ref.dense.state[ref.private[name]]
                recmtl_state = plan.private_optimizer.state[param]
                close(recmtl_state["exp_avg"], dense_state["exp_avg"], f"{where} {name} m", UPDATE_TOL)

            # logged weights: per task, the sum over touched rows where it is present, and their count
            present = r["present"].float()
            assert torch.equal(out.weight_count.sum(0), present.sum(0)), where
            logged = r["logged"].float().expand(present.shape)
            close(
                out.weight_sum.sum(0),
                (logged * present).sum(0),
                f"{where} weights",
                {"rtol": 1e-5, "atol": 1e-5},
            )

            touched[r["rows"]] = True
            meet = r["present"].sum(1) >= 2
            multi_rows += int(meet.sum())
            assert (~meet).any(), where  # single-task rows too (the identity shortcut of row mode)
            if method == "ew":
                close(r["update"], r["plain"], f"{where} ew = sum", {"rtol": 0.0, "atol": 0.0})
                assert torch.equal(logged[r["present"]], torch.ones(int(r["present"].sum())))
            else:
                diff = (r["update"] - r["plain"])[meet].abs().max()
                reweighted += int(diff > 1e-4 * r["plain"][meet].abs().max())
                if epoch > 0:  # the update recmtl applied is not the one with epoch 0's focusing
                    info = StepInfo(epoch=0, mode=mode)
                    if mode == "row":
                        stale = plan.aggregator(r["G"], r["present"], {}, info).update
                    else:
                        flat = r["G"].transpose(0, 1).reshape(1, plan.n_tasks, -1)
                        stale = plan.aggregator(flat, r["present"].any(0, keepdim=True), {}, info).update
                        stale = stale.reshape(r["rows"].numel(), -1)
                    epoch_matters += int(not torch.allclose(update, stale, rtol=1e-4, atol=1e-7))

    steps = sum(n for _, n in SCHEDULE)
    assert multi_rows >= steps  # tasks meet on rows at every step, on average at least once
    if method == "pmtrec":
        assert reweighted == steps  # PMTRec re-weights where tasks meet: not the plain sum
        assert epoch_matters == SCHEDULE[1][1]
    never = ~touched
    assert never.sum() >= 10  # some rows no step touched: bit-identical, zero moments
    assert torch.equal(model.weight[never], initial[never])
    assert not plan.row_adam.exp_avg[never].any() and not plan.row_adam.exp_avg_sq[never].any()
    assert (model.weight[touched] != initial[touched]).any(1).all()


# --------------------------------------------------------------------------------------------------
# the BPR tasks' losses: per-row gradients on the full table against the hand-derived BPR gradient


@pytest.mark.parametrize("cls", [RecTask, SocialTask, CoviewTask])
def test_bpr_task_gradient_on_the_full_table_matches_the_hand_derived_one(train_data, cls):
    # B = 3 anchors, 2 negatives each, with repeated rows inside and across the roles
    task = cls(train_data, TaskOptions(batch_size=3, negatives=2))
    if cls is RecTask:
        users, pos, neg = [4, 4, 9], [1, 2, 1], [[5, 2], [7, 7], [4, 1]]
        ids = {"user": torch.tensor(users), "item": torch.tensor(pos + sum(neg, []))}
        n_users = train_data.n_users
        a_rows, p_rows = users, [n_users + i for i in pos]
        n_rows = [[n_users + i for i in row] for row in neg]
    else:
        src, dst, neg = [3, 8, 3], [8, 3, 5], [[5, 0], [3, 3], [8, 6]]
        ids = {task.table: torch.tensor(src + dst + sum(neg, []))}
        shift = 0 if task.table == "user" else train_data.n_users
        a_rows, p_rows = [s + shift for s in src], [d + shift for d in dst]
        n_rows = [[x + shift for x in row] for row in neg]
    batch = TaskBatch(ids)
    gen = torch.Generator().manual_seed(3)
    table = torch.nn.Parameter(torch.randn(train_data.n_users + train_data.n_items, 6, generator=gen))
    offset = {"user": 0, "item": train_data.n_users}
    rows = {name: table[i + offset[name]] for name, i in ids.items()}
    (grad,) = torch.autograd.grad(task.loss(rows, batch, {}), [table])

    x = table.detach().double()
    expected = torch.zeros_like(x)
    for a, p, negs in zip(a_rows, p_rows, n_rows, strict=True):  # d/dz of mean -log σ(<a,p> - <a,n>)
        for n in negs:
            coef = -torch.sigmoid(-(x[a] @ x[p] - x[a] @ x[n])) / (len(a_rows) * len(negs))
            expected[a] += coef * (x[p] - x[n])
            expected[p] += coef * x[a]
            expected[n] -= coef * x[a]
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-7)
    touched = {*a_rows, *p_rows, *sum(n_rows, [])}
    assert (grad[sorted(touched)] != 0).any(1).all()
    assert not grad[[r for r in range(grad.shape[0]) if r not in touched]].any()


# --------------------------------------------------------------------------------------------------
# fit end to end in global mode


def test_fit_in_global_mode_end_to_end(tiny_data, tmp_path):
    runs = {}
    for method, mode in [("pmtrec", "global"), ("pmtrec", "row"), ("ew", "global"), ("ew", "row")]:
        config = quick_config(tiny_data, method=method, mode=mode, aux=AUX, epochs=2)
        result = fit(config, tmp_path / f"{method}-{mode}")
        frame = pl.read_parquet(result.run_dir / "metrics.parquet")
        assert frame["epoch"].to_list() == [0, 1]
        for task in ("rec", *AUX):
            assert frame[f"loss_{task}"].is_finite().all(), (method, mode, task)
            weights = frame[f"weight_{task}"]
            if method == "ew":
                assert (weights == 1.0).all(), (mode, task, weights.to_list())
            else:
                assert ((weights > 0) & (weights <= 1)).all(), (mode, task, weights.to_list())
        runs[method, mode] = (frame, load_tensors(result.run_dir / "last.safetensors")[0])

    # global PMTRec weighs each task once for all rows: another run than the per-row one
    (g_frame, g), (r_frame, r) = runs["pmtrec", "global"], runs["pmtrec", "row"]
    assert not torch.allclose(g["table.user"], r["table.user"], atol=1e-4)
    assert g_frame["weight_rec"].to_list() != r_frame["weight_rec"].to_list()
    # ew's sum does not depend on the mode
    (_, eg), (_, er) = runs["ew", "global"], runs["ew", "row"]
    for name in ("table.user", "table.item", "private.category.W"):
        torch.testing.assert_close(eg[name], er[name], rtol=1e-5, atol=1e-6)
