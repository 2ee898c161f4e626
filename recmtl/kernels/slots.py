"""The layout the row kernels read: a step's gathered (row, task) gradients grouped by row.

A training step's :class:`~recmtl.aggregators.TaskGrads` holds one *entry* per gathered row occurrence
(``values`` [N, D], ``row_of`` / ``task_of`` [N]), in task order, rows repeating where a task touched a
row twice. A kernel program owns one row: it needs that row's entries together. :class:`RowSlots` names
them without moving any gradient: ``row_ptr`` [R+1] delimits each row's span of ``order`` [N] (entry
indices, stably sorted by row); ``order`` is None when the entries are already grouped by row in row order
(e.g. one entry per (row, task) slot, row-major: the compact per-(row, task) slots). The kernel sums a
row's entries per task as it reads them (duplicates are summed before any norm, METHODS.md §3).

Building it from entries costs one stable sort of N integers and a bincount (no [N, D] pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recmtl.aggregators.grads import TaskGrads


@dataclass(frozen=True)
class RowSlots:
    """Entries ``values`` [N, D] (any float dtype; rows may be strided) with ``task_of`` [N] and ``row_of``
    [N]; ``row_ptr`` [R+1] int64 and ``order`` [N] int64 or None (see the module docstring); ``present``
    [R, T] bool. Made contiguous where the kernels need it."""

    values: Tensor
    row_of: Tensor
    task_of: Tensor
    row_ptr: Tensor
    order: Tensor | None
    present: Tensor

    def __post_init__(self) -> None:
        """The kernels index these with plain offsets: make each contiguous (a no-op when it is)."""
        for name in ("task_of", "row_ptr", "order", "present"):
            value = getattr(self, name)
            if value is not None and not value.is_contiguous():
                object.__setattr__(self, name, value.contiguous())
        if self.values.stride(-1) != 1:
            object.__setattr__(self, "values", self.values.contiguous())

    @property
    def n_rows(self) -> int:
        return self.present.shape[0]

    @property
    def n_tasks(self) -> int:
        return self.present.shape[1]

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    @classmethod
    def from_grads(cls, grads: TaskGrads) -> RowSlots:
        """The layout of a :class:`TaskGrads` (either mode: ``present`` is the per-row mask)."""
        n_rows = grads.n_rows
        counts = torch.bincount(grads.row_of, minlength=n_rows)
        row_ptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=counts.device)
        torch.cumsum(counts, 0, out=row_ptr[1:])
        order = torch.sort(grads.row_of, stable=True).indices
        return cls(grads.values, grads.row_of, grads.task_of, row_ptr, order, grads.row_present)

    @classmethod
    def grouped(cls, values: Tensor, row_of: Tensor, task_of: Tensor, present: Tensor) -> RowSlots:
        """Entries already grouped by row in row order (``row_of`` non-decreasing; not checked): no sort."""
        counts = torch.bincount(row_of, minlength=present.shape[0])
        row_ptr = torch.zeros(present.shape[0] + 1, dtype=torch.int64, device=counts.device)
        torch.cumsum(counts, 0, out=row_ptr[1:])
        return cls(values, row_of, task_of, row_ptr, None, present)

    def to_grads(self) -> TaskGrads:
        """The same entries as a :class:`TaskGrads` (row mode), e.g. for the reference."""
        return TaskGrads(self.values, self.row_of, self.task_of, self.present)
