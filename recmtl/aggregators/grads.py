"""The task gradients of one step, as every aggregator receives them (METHODS.md §3).

A training step gathers, for each task, the embedding rows it touches and back-propagates once; each
gathered row occurrence is an *entry* ``(row, task, gradient)``. Rows repeat inside a task's batch (a user
with two positives), so the methods' input ``G[r, t]`` is the sum of the entries of (row r, task t) —
summed *before* aggregation, since the methods are non-linear. :class:`TaskGrads` keeps the entries
compact and gives each method the view it asks for:

- :meth:`TaskGrads.norms` ``[R', T]`` and :meth:`TaskGrads.gram` ``[R', T, T]`` (most methods need no more);
- :attr:`TaskGrads.dense` ``[R', T, D']``, zeros at absent tasks (built on first use, then cached);
- :meth:`TaskGrads.combine`: the update ``[R, D]`` for coefficients ``[R', T]``, as one scaled scatter of
  the entries, so the ``[R, T, D]`` tensor is never formed for it.

Two modes, one code path for the methods: in ``"row"`` mode R' = R rows and D' = D; in ``"global"`` mode
every task's rows are flattened into one vector (R' = 1, D' = R·D, row-major), the classic multi-task
setting. :meth:`TaskGrads.select` restricts a row-mode view to some rows (the single-task shortcut of
:meth:`recmtl.aggregators.base.Aggregator.aggregate`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from recmtl.aggregators import _math

MODES = frozenset({"row", "global"})


@dataclass(eq=False)
class TaskGrads:
    """Per-(row, task) gradients as gathered entries; see the module docstring.

    values [N, D] the gradient of every entry; row_of [N] its row in 0..R-1; task_of [N] its task in
    0..T-1; row_present [R, T] (bool) whether task t has an entry on row r; mode "row" or "global".
    """

    values: Tensor
    row_of: Tensor
    task_of: Tensor
    row_present: Tensor
    mode: str = "row"

    def __post_init__(self) -> None:
        """Shape and dtype checks (programming errors: ValueError); no tensor value is read."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be row or global, got {self.mode!r}")
        if self.values.ndim != 2 or not self.values.is_floating_point():
            raise ValueError(
                f"values must be a floating [N, D] tensor, got {self.values.dtype} {self._shapes}"
            )
        if self.row_present.ndim != 2 or self.row_present.dtype != torch.bool:
            raise ValueError(f"row_present must be a bool [R, T] tensor, got {self.row_present.dtype}")
        if self.row_present.shape[1] == 0:
            raise ValueError("no task (T = 0)")
        n = self.values.shape[0]
        if self.row_of.shape != (n,) or self.task_of.shape != (n,):
            raise ValueError(f"row_of and task_of must be [N] = [{n}], got {self._shapes}")

    @property
    def _shapes(self) -> str:
        return f"values {tuple(self.values.shape)}, row_of {tuple(self.row_of.shape)}"

    # --- construction --------------------------------------------------------------------------------

    @classmethod
    def from_entries(
        cls, values: Tensor, row_of: Tensor, task_of: Tensor, n_rows: int, n_tasks: int, mode: str = "row"
    ) -> TaskGrads:
        """From gathered entries (``values`` [N, D], ``row_of``/``task_of`` [N]); duplicates allowed."""
        slot = row_of * n_tasks + task_of
        present = torch.zeros(n_rows * n_tasks, dtype=torch.bool, device=values.device)
        present[slot] = True
        out = cls(values, row_of, task_of, present.view(n_rows, n_tasks), mode)
        out.__dict__["slot"] = slot  # computed once: the cached property below
        return out

    @classmethod
    def from_dense(cls, grads: Tensor, present: Tensor, mode: str = "row") -> TaskGrads:
        """From ``grads`` [R, T, D] and ``present`` [R, T] (bool): one entry per (row, task), zero where the
        task is absent (values at absent pairs are never read). One masked copy of ``grads``, which is also
        the cached :attr:`dense` view."""
        if grads.ndim != 3 or not grads.is_floating_point():
            found = f"{grads.dtype} {tuple(grads.shape)}"
            raise ValueError(f"grads must be a floating [R, T, D] tensor, got {found}")
        if present.dtype != torch.bool or tuple(present.shape) != tuple(grads.shape[:2]):
            raise ValueError(
                f"present must be a bool [R, T] = {tuple(grads.shape[:2])} tensor, "
                f"got {present.dtype} {tuple(present.shape)}"
            )
        n_rows, n_tasks, dim = grads.shape
        dense = torch.where(present.unsqueeze(-1), grads.detach(), 0.0)  # absent values never read
        grid = torch.arange(n_rows * n_tasks, device=grads.device)  # one entry per (row, task), in order
        out = cls(dense.view(-1, dim), grid // n_tasks, grid % n_tasks, present.clone(), mode)
        if mode == "row":
            out.__dict__["dense"] = dense  # the cached dense view is the tensor itself
        return out

    # --- sizes -----------------------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        """R, the number of touched rows (also in global mode)."""
        return self.row_present.shape[0]

    @property
    def n_tasks(self) -> int:
        return self.row_present.shape[1]

    @property
    def dim(self) -> int:
        """D, the embedding dimension."""
        return self.values.shape[1]

    # --- the method's view -------------------------------------------------------------------------------

    @functools.cached_property
    def present(self) -> Tensor:
        """[R', T] bool: tasks present per row (global mode: present on any row)."""
        if self.mode == "global":
            return self.row_present.any(0, keepdim=True)
        return self.row_present

    @functools.cached_property
    def slot(self) -> Tensor:
        """[N] the (row, task) pair of every entry as ``row * T + task``."""
        return self.row_of * self.n_tasks + self.task_of

    @functools.cached_property
    def dense(self) -> Tensor:
        """[R', T, D'] the summed gradients, zeros where a task is absent (global: [1, T, R·D], each task's
        rows in order). Built on first use and cached; ``[R, T, D]`` floats, so methods that need only
        norms or the Gram matrix should ask for those."""
        n_rows, n_tasks, dim = self.n_rows, self.n_tasks, self.dim
        g = self.values.new_zeros(n_rows * n_tasks, dim).index_add_(0, self.slot, self.values)
        g = g.view(n_rows, n_tasks, dim)
        if self.mode == "global":
            return g.transpose(0, 1).reshape(1, n_tasks, n_rows * dim)
        return g

    def norms(self) -> Tensor:
        """[R', T] Euclidean norm of each task's gradient in :func:`~._math.compute_dtype` (0 if absent)."""
        return _math.norms(self.dense)

    def gram(self) -> Tensor:
        """[R', T, T] Gram matrix of the task gradients in :func:`~._math.compute_dtype` (0 where absent)."""
        return _math.gram(self.dense, self.present)

    def combine(self, coefficients: Tensor) -> Tensor:
        """The update ``[R, D]``: ``Σ_t c[r', t] · G[r, t]`` for ``coefficients`` [R', T] (global: one
        coefficient per task for all its rows). Runs in the gradients' dtype."""
        if self.mode == "global":
            per_entry = coefficients[0].index_select(0, self.task_of)
        else:
            per_entry = coefficients.reshape(-1).index_select(0, self.slot)
        return _math.weighted_scatter(self.values, per_entry, self.row_of, self.n_rows)

    def summed(self) -> Tensor:
        """The update ``[R, D]`` with every coefficient 1: ``Σ_t G[r, t]``."""
        return _math.weighted_scatter(self.values, None, self.row_of, self.n_rows)

    def select(self, rows: Tensor) -> TaskGrads:
        """The same gradients restricted to ``rows`` [M] (sorted positions in 0..R-1), renumbered 0..M-1."""
        keep = torch.zeros(self.n_rows, dtype=torch.bool, device=rows.device)
        keep[rows] = True
        entries = keep.index_select(0, self.row_of).nonzero().squeeze(1)
        position = torch.empty(self.n_rows, dtype=torch.long, device=rows.device)
        position[rows] = torch.arange(rows.numel(), device=rows.device)
        return TaskGrads(
            self.values.index_select(0, entries),
            position.index_select(0, self.row_of.index_select(0, entries)),
            self.task_of.index_select(0, entries),
            self.row_present.index_select(0, rows),
            self.mode,
        )
