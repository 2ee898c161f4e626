"""One training step, top to bottom (METHODS.md §3):

1. every active task samples its batch and names the user / item rows it touches;
2. the encoder (:meth:`recmtl.model.base.Encoder.embed`) gathers, per task, the storage rows the task's
   gradient may reach as one leaf and gives the vectors its loss reads (matrix factorisation: the rows
   themselves; STEM: the task's gated mix of its own, the other tasks' and the shared rows); the losses
   are summed and a single backward gives every task's gradient on its own rows (plus the private
   parameters' gradients);
3. the touched rows are de-duplicated: :class:`~recmtl.aggregators.TaskGrads` holds every gathered
   (row, task) gradient, to be summed per (row, task) *before* aggregation, and the presence mask P[R, T];
4. the aggregator turns them into the update [R, D] — per row, or globally with all rows flattened — or,
   for a fixed-weight method (``ew``, ``single``), the losses were already weighted and the update is the
   plain sum (tasks of weight 0 are never sampled): the cost of an ordinary summed backward;
5. row-sparse Adam on the shared rows (:func:`recmtl.kernels.apply_row_update`: the update materialised
   then RowAdam's step, or, on the Triton back end, one fused pass from the gradients into the optimiser
   rows), dense Adam on the task-private parameters.

How the aggregation is computed (which rows, which statistics, compact or dense) is the aggregator's
business (:meth:`recmtl.aggregators.Aggregator.aggregate`); the step never branches on a method.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from recmtl.aggregators import Aggregation, Aggregator, State, StepInfo, TaskGrads
from recmtl.kernels import apply_row_update
from recmtl.model.base import Encoder
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
    tables: Mapping[str, range] = field(default_factory=dict)  # storage rows of each table
    backend: str = "torch"  # row update: "torch" or "triton" (recmtl.kernels.resolve_backend)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @functools.cached_property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    @functools.cached_property
    def active_tasks(self) -> list[int]:
        """Indices of the tasks that are sampled and back-propagated (fixed weight 0: never)."""
        if self.fixed_weights is None:
            return list(range(self.n_tasks))
        return [t for t, w in enumerate(self.fixed_weights.tolist()) if w != 0.0]


@dataclass
class StepOutput:
    losses: Tensor  # [T] detached task losses (0 for skipped tasks)
    weight_sum: Tensor  # [G, T] per row group: sum over touched rows of each task's logged weight (NaN: none)
    weight_count: Tensor  # [G, T] per row group: number of touched rows where the task was present
    state: State
    rows: Tensor | None = None  # [R] the touched storage rows (for the epoch's instruments)
    present: Tensor | None = None  # [R, T] bool: the tasks present on each touched row
    logged: Tensor | None = None  # [R or 1, T] the logged weights (None: the method logs none)


def _private_of(model: Encoder, task: Task) -> dict[str, Tensor]:
    prefix = f"{task.name}."
    return {k.removeprefix(prefix): v for k, v in model.private.items() if k.startswith(prefix)}


def train_step(
    model: Encoder,
    plan: StepPlan,
    rec_users: Tensor,
    rec_items: Tensor,
    generator: torch.Generator,
    epoch: int,
    step: int,
    state: State,
) -> StepOutput:
    """Run step ``step`` of epoch ``epoch`` on the rec batch (``rec_users``, ``rec_items`` [B]); update
    ``model`` in place and return the losses, the logged weights and the aggregator's new ``state``."""
    device = rec_users.device

    # 1-2. sample; gather one leaf per task over all its rows; one backward of the summed losses
    gathered: list[tuple[int, Tensor, Tensor]] = []  # (task index, storage row ids [n], leaf [n, D])
    losses = torch.zeros(plan.n_tasks, device=device)
    total = torch.zeros((), device=device)
    for t in plan.active_tasks:
        task = plan.tasks[t]
        batch = task.sample(generator, rec_users, rec_items)
        emb = model.embed(task.name, batch.ids)  # the rows its gradient reaches (one leaf), its vectors
        loss = task.loss(emb.rows, batch, _private_of(model, task))
        losses[t] = loss.detach()
        total = total + (loss if plan.fixed_weights is None else plan.fixed_weights[t] * loss)
        gathered.append((t, emb.ids, emb.leaf))
    if plan.private_optimizer is not None:
        plan.private_optimizer.zero_grad(set_to_none=True)
    total.backward()

    # 3-5. unique rows and their task gradients, aggregation, row update
    with torch.no_grad():
        rows, grads = scatter_rows(gathered, plan.n_tasks, plan.workspace, plan.mode)
        if plan.fixed_weights is not None:
            logged = plan.fixed_weights.to(device).unsqueeze(0)
            ones = grads.present.float()  # every coefficient 1: the update is the plain sum
            out = Aggregation(grads.summed, ones, logged, state, grads=grads)
        else:
            info = StepInfo(
                epoch=epoch,
                step=step,
                mode=plan.mode,
                tasks=plan.task_names,
                losses=losses,
                row_ids=rows,
                tables=plan.tables,
                generator=generator,
            )
            out = plan.aggregator.aggregate(grads, state, info)
        apply_row_update(rows, out, plan.row_adam, plan.backend)  # (a fused kernel fills in the weights)
        state = out.state
        weight_sum, weight_count = group_weights(plan, rows, grads.row_present, out.logged_weights)
    if plan.private_optimizer is not None:
        plan.private_optimizer.step()
    return StepOutput(losses, weight_sum, weight_count, state, rows, grads.row_present, out.logged_weights)


def scatter_rows(
    gathered: list[tuple[int, Tensor, Tensor]], n_tasks: int, workspace: RowWorkspace, mode: str = "row"
) -> tuple[Tensor, TaskGrads]:
    """The unique storage rows [R] (sorted) of ``gathered`` (task index, storage row ids [n_t], leaf with
    ``.grad`` [n_t, D]) and their task gradients, one entry per gathered row."""
    ids = torch.cat([ids for _, ids, _ in gathered])
    values = torch.cat([leaf.grad for _, _, leaf in gathered])
    task_of = torch.cat([torch.full_like(ids, t) for t, ids, _ in gathered])
    rows, row_of = workspace.unique(ids)
    return rows, TaskGrads.from_entries(values, row_of, task_of, rows.numel(), n_tasks, mode)


def group_weights(
    plan: StepPlan, rows: Tensor, present: Tensor, logged: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Per row group [G, T]: the sum of each task's logged weight over the touched rows where it is present
    (NaN when the method logs none), and the number of those rows. ``logged`` [R or 1, T]."""
    group = plan.row_groups.index_select(0, rows)  # [R]
    mask = present.to(torch.float32)
    weight_count = mask.new_zeros(plan.n_groups, plan.n_tasks).index_add_(0, group, mask)
    if logged is None:
        return torch.full_like(weight_count, float("nan")), weight_count
    weighted = logged.to(torch.float32).expand(present.shape) * mask
    return mask.new_zeros(plan.n_groups, plan.n_tasks).index_add_(0, group, weighted), weight_count
