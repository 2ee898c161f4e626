"""Single-task training (``single``): only the main task's gradient, ``update_r = g_r,main`` (0 if absent).

The no-auxiliary-task baseline (METHODS.md §6). Coefficients are the one-hot of the main task masked by
presence, constant 0/1, so the trainer may run one backward on the main loss alone (``fixed_weights``).
Oracle: ``torchjd.aggregation.Constant`` with a one-hot weight vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from recmtl.aggregators.base import (
    Coefficients,
    GradStats,
    StepInfo,
    WeightedAggregator,
    check_index,
    check_main_task,
    main_task_mask,
)


def single_coefficients(present: Tensor, main_task: int, dtype: torch.dtype) -> Tensor:
    """[R, T] bool → [R, T] coefficients: 1 for the main task where present, 0 elsewhere."""
    onehot = main_task_mask(main_task, present.shape[1], present.device)
    return (present & onehot).to(dtype)


@dataclass(frozen=True)
class Single(WeightedAggregator):
    """Main task only.

    main_task: index of the main task among the T tasks (default 0, the ``rec`` task).
    """

    main_task: int = 0

    name: ClassVar[str] = "single"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    fixed_weights: ClassVar[bool] = True
    needs: ClassVar[str] = "none"

    def __post_init__(self) -> None:
        check_index(self.name, "main_task", self.main_task)

    def fixed_task_weights(self, n_tasks: int) -> Tensor:
        check_main_task(self.name, self.main_task, n_tasks)
        return main_task_mask(self.main_task, n_tasks, torch.device("cpu")).to(torch.float32)

    def coefficients(self, stats: GradStats, present: Tensor, state: Any, info: StepInfo) -> Coefficients:
        check_main_task(self.name, self.main_task, present.shape[1])
        return Coefficients(weights=single_coefficients(present, self.main_task, stats.dtype), state=state)
