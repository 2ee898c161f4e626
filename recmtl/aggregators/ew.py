"""Equal weighting (``ew``): the sum of the present tasks' gradients, ``update_r = sum_{t in A_r} g_rt``.

The classic multi-task baseline (METHODS.md §6). Its coefficients are the presence mask itself, constant
0/1 per present task, so the trainer may replace per-task gradients by one backward on ``sum_t L_t``
(``fixed_weights``). Same output in per-row and global mode. Oracle: ``torchjd.aggregation.Sum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from recmtl.aggregators.base import Coefficients, GradStats, StepInfo, WeightedAggregator


def ew_coefficients(present: Tensor, dtype: torch.dtype) -> Tensor:
    """[R, T] bool → [R, T] coefficients: 1 for present tasks, 0 otherwise."""
    return present.to(dtype)


@dataclass(frozen=True)
class EW(WeightedAggregator):
    """Sum of the present task gradients. No hyper-parameters."""

    name: ClassVar[str] = "ew"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    fixed_weights: ClassVar[bool] = True
    needs: ClassVar[str] = "none"

    def fixed_task_weights(self, n_tasks: int) -> Tensor:
        return torch.ones(n_tasks)

    def coefficients(self, stats: GradStats, present: Tensor, state: Any, info: StepInfo) -> Coefficients:
        return Coefficients(weights=ew_coefficients(present, stats.dtype), state=state)
