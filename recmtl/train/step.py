"""One training step, top to bottom (METHODS.md §3):

1. every task samples its batch and names the user / item rows it touches;
2. each task's rows are gathered from the shared storage as one leaf, the losses computed and summed, and a
   single backward gives every task's gradient on its own rows (plus the private parameters' gradients);
3. the touched rows are de-duplicated and each task's gradients summed per (row, task) — duplicates summed
   *before* aggregation — with the presence mask ``P[R, T]``;
4. the aggregator maps (G[R, T, D], P) to the update [R, D] — per row, or globally with all rows flattened;
5. row-sparse Adam on the shared rows, dense Adam on the task-private parameters.

Three execution paths, chosen from what the aggregator declares (never from its name), all computing the
same update:

* fixed weights (``ew``, ``single``): the weighted losses are summed and the gradients scattered straight
  into [R, D] (tasks with weight 0 are never sampled) — the cost of an ordinary summed backward;
* norm-based weights (``WeightedAggregator`` with ``needs`` "none" or "norms", e.g. ``pmtrec``): the step
  stays on the compact (row, task) *slots* actually present (on real data most rows carry one or two of the
  T tasks, so dense G would be mostly zeros): per-slot sums give the norms, the aggregator's pure
  ``coefficients`` give c [R, T], and one scaled scatter of the gathered gradients gives Σ_t c_t G_t;
* anything else: the dense G [R, T, D] is built and the aggregator called on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype
from recmtl.aggregators.base import Aggregator, GradStats, StepInfo, WeightedAggregator
from recmtl.model.mf import MFModel
from recmtl.tasks.base import Task
from recmtl.train.row_adam import RowAdam


class RowWorkspace:
    """Reusable buffers for de-duplicating row ids over a table of ``n_rows`` rows.

    ``unique(ids)`` marks the ids in a persistent bool map, reads the marked rows back in order
    (``nonzero``: sorted and unique) and maps each id to its position — O(N + n) cheap passes instead of
    the sort behind ``torch.unique``; the map is cleared again before returning.
    """

    def __init__(self, n_rows: int, device: torch.device) -> None:
        self.mark = torch.zeros(n_rows, dtype=torch.bool, device=device)
        self.position = torch.zeros(n_rows, dtype=torch.long, device=device)

    def unique(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Sorted unique ``rows`` [R] of ``ids`` [n] and ``inverse`` [n] with rows[inverse] == ids."""
        self.mark[ids] = True
        rows = self.mark.nonzero().squeeze(1)
        self.mark[rows] = False
        self.position[rows] = torch.arange(rows.numel(), device=ids.device)
        return rows, self.position[ids]


@dataclass
class StepPlan:
    """What stays fixed across the steps of a run."""

    tasks: list[Task]
    aggregator: Aggregator
    mode: str  # "row" | "global"
    fixed_weights: Tensor | None  # [T] for fixed-weight aggregators (their zero-weight tasks are skipped)
    private_optimizer: torch.optim.Optimizer | None
    row_adam: RowAdam
    workspace: RowWorkspace
    row_groups: Tensor  # [N] group id of every storage row (e.g. user-activity buckets) for weight logging
    n_groups: int = 1

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @functools.cached_property
    def active_tasks(self) -> list[int]:
        """Indices of the tasks that are sampled and back-propagated (fixed weight 0: never)."""
        if self.fixed_weights is None:
            return list(range(self.n_tasks))
        return [t for t, w in enumerate(self.fixed_weights.tolist()) if w != 0.0]


@dataclass
class StepOutput:
    losses: Tensor  # [T] detached task losses (0 for skipped tasks)
    weight_sum: Tensor  # [G, T] per row group: sum over touched rows of each task's logged weight
    weight_count: Tensor  # [G, T] per row group: number of touched rows where the task was present
    state: Any = None
    extras: dict[str, Tensor] = field(default_factory=dict)


def _private_of(model: MFModel, task: Task) -> dict[str, Tensor]:
    prefix = f"{task.name}."
    return {k.removeprefix(prefix): v for k, v in model.private.items() if k.startswith(prefix)}


def train_step(
    model: MFModel,
    plan: StepPlan,
    rec_users: Tensor,
    rec_items: Tensor,
    generator: torch.Generator,
    info: StepInfo,
    state: Any,
) -> StepOutput:
    """Run one step on the rec batch (``rec_users``, ``rec_items`` [B]); update ``model`` in place."""
    n_tasks = plan.n_tasks
    device = rec_users.device
    offsets = model.offsets

    # 1-2. sample; gather one leaf per task over all its rows; one backward of the summed losses
    gathered: list[tuple[int, Tensor, Tensor]] = []  # (task index, global row ids [n], leaf [n, D])
    losses = torch.zeros(n_tasks, device=device)
    total = torch.zeros((), device=device)
    for t in plan.active_tasks:
        task = plan.tasks[t]
        batch = task.sample(generator, rec_users, rec_items)
        names = list(batch.ids)
        ids = torch.cat([batch.ids[n] + offsets[n] for n in names])
        leaf = model.weight.index_select(0, ids).requires_grad_(True)
        rows = dict(zip(names, torch.split(leaf, [batch.ids[n].numel() for n in names]), strict=True))
        loss = task.loss(rows, batch, _private_of(model, task))
        losses[t] = loss.detach()
        total = total + (loss if plan.fixed_weights is None else plan.fixed_weights[t] * loss)
        gathered.append((t, ids, leaf))
    if plan.private_optimizer is not None:
        plan.private_optimizer.zero_grad(set_to_none=True)
    total.backward()

    # 3-5. unique rows, per-task gradients, aggregation, row update
    with torch.no_grad():
        sc = scatter_rows(gathered, n_tasks, plan.workspace)
        extras: dict[str, Tensor] = {}
        if plan.fixed_weights is not None:
            update, logged = sc.summed(), plan.fixed_weights.to(device).unsqueeze(0)
        elif uses_slots(plan.aggregator):
            update, state, logged, _ = aggregate_slots(plan.aggregator, plan.mode, sc, info, state)
        else:
            update, state, logged, extras = aggregate(plan, sc.dense(n_tasks), sc.present, info, state)
        group = plan.row_groups.index_select(0, sc.rows)  # [R]
        n_groups = plan.n_groups
        present = sc.present.to(torch.float32)
        weight_count = present.new_zeros(n_groups, n_tasks).index_add_(0, group, present)
        weight_sum = present.new_zeros(n_groups, n_tasks)
        if logged is not None:
            weight_sum.index_add_(0, group, logged.expand(sc.present.shape).to(torch.float32) * present)
        plan.row_adam.step(sc.rows, update)
    if plan.private_optimizer is not None:
        plan.private_optimizer.step()
    return StepOutput(losses, weight_sum, weight_count, state, extras)


@dataclass
class Scattered:
    """The gathered gradients of one step, de-duplicated.

    rows [R] unique row ids (sorted); inverse [n] position in ``rows`` of every gathered entry; task [n] its
    task; grads [n, D] its gradient; slots [S] the present (row, task) pairs as ``position * T + task``
    (sorted); slot_of [n] each entry's index into ``slots``; present [R, T].
    """

    rows: Tensor
    inverse: Tensor
    task: Tensor
    grads: Tensor
    slots: Tensor
    slot_of: Tensor
    present: Tensor

    def summed(self) -> Tensor:
        """Σ_t G[r, t]: [R, D]."""
        return self.grads.new_zeros(self.rows.numel(), self.grads.shape[1]).index_add_(
            0, self.inverse, self.grads
        )

    def per_slot(self) -> Tensor:
        """G at the present slots: [S, D]."""
        return self.grads.new_zeros(self.slots.numel(), self.grads.shape[1]).index_add_(
            0, self.slot_of, self.grads
        )

    def dense(self, n_tasks: int) -> Tensor:
        """G [R, T, D], zeros at absent (row, task) pairs."""
        dim = self.grads.shape[1]
        g = self.grads.new_zeros(self.rows.numel() * n_tasks, dim)
        g.index_copy_(0, self.slots, self.per_slot())
        return g.view(self.rows.numel(), n_tasks, dim)


def scatter_rows(
    gathered: list[tuple[int, Tensor, Tensor]], n_tasks: int, workspace: RowWorkspace
) -> Scattered:
    """De-duplicate the rows of ``gathered`` (task index, global row ids [n_t], leaf with .grad [n_t, D])."""
    ids = torch.cat([ids for _, ids, _ in gathered])
    grads = torch.cat([leaf.grad for _, _, leaf in gathered])
    task = torch.cat([torch.full_like(ids, t) for t, ids, _ in gathered])
    rows, inverse = workspace.unique(ids)
    key = inverse * n_tasks + task
    mark = torch.zeros(rows.numel() * n_tasks, dtype=torch.bool, device=ids.device)
    mark[key] = True
    slots = mark.nonzero().squeeze(1)
    position = torch.empty(mark.numel(), dtype=torch.long, device=ids.device)
    position[slots] = torch.arange(slots.numel(), device=ids.device)
    return Scattered(rows, inverse, task, grads, slots, position[key], mark.view(rows.numel(), n_tasks))


def uses_slots(aggregator: Aggregator) -> bool:
    """Whether the aggregator's coefficients need at most the per-task norms (the compact slot path)."""
    return isinstance(aggregator, WeightedAggregator) and aggregator.needs in ("none", "norms")


def aggregate_slots(
    aggregator: WeightedAggregator, mode: str, sc: Scattered, info: StepInfo, state: Any
) -> tuple[Tensor, Any, Tensor, Tensor]:
    """Norm-based aggregation on the present slots; returns the update [R, D], the new state, the logged
    weights [R or 1, T] and the coefficients c [R or 1, T].

    In row mode, for an aggregator that is the identity on single-task rows, the norms and the coefficient
    math are computed only for the rows where at least two tasks meet (on real data a small minority);
    the other rows get c = 1.
    """
    n_rows, n_tasks = sc.present.shape
    dtype = compute_dtype(sc.grads.dtype)
    if mode == "global":
        norms = None
        if aggregator.needs == "norms":  # the norm of a task's flattened gradient over all its rows
            slot_norms = torch.linalg.vector_norm(sc.per_slot(), dim=1, dtype=dtype)
            squares = slot_norms.new_zeros(n_tasks).index_add_(0, sc.slots % n_tasks, slot_norms.square())
            norms = squares.sqrt().unsqueeze(0)
        out = aggregator.coefficients(GradStats(dtype, norms), sc.present.any(0, keepdim=True), state, info)
        coefficients = out.weights
    elif aggregator.identity_on_single_task:
        is_multi = sc.present.sum(1) > 1  # [R]
        multi = is_multi.nonzero().squeeze(1)  # [M]
        present = sc.present.index_select(0, multi)
        norms = None
        if aggregator.needs == "norms":
            entries = is_multi.index_select(0, sc.inverse).nonzero().squeeze(1)  # entries of those rows
            position = torch.empty(n_rows, dtype=torch.long, device=multi.device)
            position[multi] = torch.arange(multi.numel(), device=multi.device)
            key = position[sc.inverse[entries]] * n_tasks + sc.task[entries]
            sums = sc.grads.new_zeros(multi.numel() * n_tasks, sc.grads.shape[1])
            sums.index_add_(0, key, sc.grads.index_select(0, entries))  # G at the [M, T] slots
            norms = torch.linalg.vector_norm(sums, dim=1, dtype=dtype).view(-1, n_tasks)
        out = aggregator.coefficients(GradStats(dtype, norms), present, state, info)
        coefficients = sc.present.to(dtype).index_copy_(0, multi, out.weights.to(dtype))
        logged = sc.present.to(dtype).index_copy_(
            0, multi, out.extras.get("task_weights", out.weights).to(dtype)
        )
        return _combine_entries(sc, coefficients, mode), out.state, logged, coefficients
    else:
        norms = None
        if aggregator.needs == "norms":
            slot_norms = torch.linalg.vector_norm(sc.per_slot(), dim=1, dtype=dtype)
            norms = slot_norms.new_zeros(n_rows * n_tasks).index_copy_(0, sc.slots, slot_norms)
            norms = norms.view(n_rows, n_tasks)
        out = aggregator.coefficients(GradStats(dtype, norms), sc.present, state, info)
        coefficients = out.weights
    logged = out.extras.get("task_weights", out.weights)
    return _combine_entries(sc, coefficients, mode), out.state, logged, coefficients


def _combine_entries(sc: Scattered, coefficients: Tensor, mode: str) -> Tensor:
    """update [R, D] = Σ over gathered entries of c[row, task] · grad: one scaled scatter."""
    n_tasks = sc.present.shape[1]
    finfo = torch.finfo(sc.grads.dtype)
    c = coefficients.clamp(min=finfo.min, max=finfo.max).to(sc.grads.dtype)
    per_entry = c.reshape(-1)[sc.inverse * n_tasks + sc.task] if mode == "row" else c[0, sc.task]
    scaled = sc.grads * per_entry[:, None]
    return sc.grads.new_zeros(sc.rows.numel(), sc.grads.shape[1]).index_add_(0, sc.inverse, scaled)


def aggregate(
    plan: StepPlan, grads: Tensor, present: Tensor, info: StepInfo, state: Any
) -> tuple[Tensor, Any, Tensor | None, dict[str, Tensor]]:
    """Call the aggregator on G [R, T, D] per row, or once on all rows flattened (global mode).

    Returns the update [R, D], the new state, the weights to log ([R or 1, T]: the method's reported task
    weights, else its coefficients, else None) and the extras.
    """
    n_rows, n_tasks, dim = grads.shape
    if plan.mode == "global":
        flat = grads.transpose(0, 1).reshape(1, n_tasks, n_rows * dim)
        out = plan.aggregator(flat, present.any(0, keepdim=True), state, info)
        update = out.update.reshape(n_rows, dim)
    else:
        out = plan.aggregator(grads, present, state, info)
        update = out.update
    return update, out.state, out.extras.get("task_weights", out.weights), out.extras
