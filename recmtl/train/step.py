"""One training step, top to bottom (METHODS.md §3):

1. every task samples its batch and names the user / item rows it touches;
2. each task's rows are gathered from the shared storage as one leaf, the losses computed and summed, and a
   single backward gives every task's gradient on its own rows (plus the private parameters' gradients);
3. the touched rows are de-duplicated (``torch.unique``) and each task's gradients scatter-added into
   ``G[R, T, D]`` with the presence mask ``P[R, T]`` — duplicates summed *before* aggregation;
4. the aggregator maps (G, P) to the update [R, D] — per row, or globally with all rows flattened;
5. row-sparse Adam on the shared rows, dense Adam on the task-private parameters.

Aggregators with fixed weights (``ew``, ``single``) skip the per-task tensor: their weighted losses are summed
and the gradients scattered straight into [R, D]; tasks with a fixed weight of 0 are never sampled. The step
never branches on a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recmtl.aggregators.base import Aggregator, StepInfo
from recmtl.model.mf import MFModel
from recmtl.tasks.base import Task
from recmtl.train.row_adam import RowAdam


@dataclass
class StepPlan:
    """What stays fixed across the steps of a run."""

    tasks: list[Task]
    aggregator: Aggregator
    mode: str  # "row" | "global"
    fixed_weights: Tensor | None  # [T] for fixed-weight aggregators (their zero-weight tasks are skipped)
    private_optimizer: torch.optim.Optimizer | None
    row_adam: RowAdam

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def active_tasks(self) -> list[int]:
        """Indices of the tasks that are sampled and back-propagated."""
        if self.fixed_weights is None:
            return list(range(self.n_tasks))
        return [t for t in range(self.n_tasks) if float(self.fixed_weights[t]) != 0.0]


@dataclass
class StepOutput:
    losses: Tensor  # [T] detached task losses (0 for skipped tasks)
    weight_sum: Tensor  # [T] sum over touched rows of each task's aggregation weight
    weight_count: Tensor  # [T] number of touched rows where the task was present
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
    for t in plan.active_tasks():
        task = plan.tasks[t]
        batch = task.sample(generator, rec_users, rec_items)
        names = list(batch.ids)
        ids = (
            torch.cat([batch.ids[n] + offsets[n] for n in names])
            if len(names) > 1
            else batch.ids[names[0]] + offsets[names[0]]
        )
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
        rows, grads, present = scatter_rows(gathered, n_tasks, summed=plan.fixed_weights is not None)
        weight_count = present.sum(0).to(torch.float32)
        extras: dict[str, Tensor] = {}
        if plan.fixed_weights is not None:
            update = grads
            weight_sum = weight_count * plan.fixed_weights.to(device)
        else:
            update, state, weight_sum, extras = aggregate(plan, grads, present, info, state)
        plan.row_adam.step(model.weight, rows, update)
    if plan.private_optimizer is not None:
        plan.private_optimizer.step()
    return StepOutput(losses, weight_sum, weight_count, state, extras)


def scatter_rows(
    gathered: list[tuple[int, Tensor, Tensor]], n_tasks: int, *, summed: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """De-duplicate the gathered rows and sum their gradients per (row, task).

    Returns unique row ids [R], gradients (G [R, T, D], or [R, D] summed over tasks when ``summed``) and the
    presence mask P [R, T].
    """
    ids = torch.cat([ids for _, ids, _ in gathered])
    grads = torch.cat([leaf.grad for _, _, leaf in gathered])
    task = torch.cat([torch.full_like(ids, t) for t, ids, _ in gathered])
    rows, inverse = torch.unique(ids, return_inverse=True)
    n_rows, dim = rows.numel(), grads.shape[1]
    slot = inverse * n_tasks + task
    present = torch.zeros(n_rows * n_tasks, dtype=torch.bool, device=ids.device)
    present[slot] = True
    present = present.view(n_rows, n_tasks)
    if summed:
        return rows, grads.new_zeros(n_rows, dim).index_add_(0, inverse, grads), present
    g = grads.new_zeros(n_rows * n_tasks, dim).index_add_(0, slot, grads)
    return rows, g.view(n_rows, n_tasks, dim), present


def aggregate(
    plan: StepPlan, grads: Tensor, present: Tensor, info: StepInfo, state: Any
) -> tuple[Tensor, Any, Tensor, dict[str, Tensor]]:
    """Run the aggregator on G [R, T, D] per row, or once on all rows flattened (global mode).

    Returns the update [R, D], the new state, the per-task sum of logged weights [T] over present rows
    (PMTRec's softmax weights when the method reports them, else its coefficients) and the extras.
    """
    n_rows, n_tasks, dim = grads.shape
    if plan.mode == "global":
        flat = grads.transpose(0, 1).reshape(1, n_tasks, n_rows * dim)
        out = plan.aggregator(flat, present.any(0, keepdim=True), state, info)
        update = out.update.reshape(n_rows, dim)
    else:
        out = plan.aggregator(grads, present, state, info)
        update = out.update
    logged = out.extras.get("task_weights", out.weights)
    if logged is None:
        weight_sum = torch.zeros(n_tasks, device=grads.device)
    else:
        weight_sum = (logged.expand(n_rows, n_tasks) * present).sum(0).to(torch.float32)
    return update, out.state, weight_sum, out.extras
