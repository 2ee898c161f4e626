"""Equal weighting (``ew``): the sum of the present tasks' gradients, ``update_r = Σ_{t ∈ A_r} g_rt``.

The classic multi-task baseline (METHODS.md §6). Its coefficients are the presence mask itself, constant
0/1 per present task, so the trainer may replace per-task gradients by one backward on ``Σ_t L_t``
(``fixed_weights``). Same output in per-row and global mode. Oracle: ``torchjd.aggregation.Sum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights


@dataclass(frozen=True)
class EW(Aggregator):
    """Sum of the present task gradients. No hyper-parameters."""

    name: ClassVar[str] = "ew"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # the same sum either way
    summary: ClassVar[str] = "sum of the present tasks' gradients"
    paper: ClassVar[str] = "equal weighting, the standard multi-task baseline"
    fixed_weights: ClassVar[bool] = True
    identity_on_single_task: ClassVar[bool] = True

    def fixed_task_weights(self, n_tasks: int) -> Tensor:
        return torch.ones(n_tasks)

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        return Weights(grads.present.to(compute_dtype(grads.values.dtype)), state)
