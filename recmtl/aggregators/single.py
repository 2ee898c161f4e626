"""Single-task training (``single``): only the main task's gradient, ``update_r = g_r,main`` (0 if absent).

The no-auxiliary-task baseline (METHODS.md §6). Coefficients are the one-hot of the main task masked by
presence, constant 0/1, so the trainer may run one backward on the main loss alone (``fixed_weights``).
Oracle: ``torchjd.aggregation.Constant`` with a one-hot weight vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype
from recmtl.aggregators.base import (
    Aggregator,
    State,
    StepInfo,
    TaskGrads,
    Weights,
    check_main_task,
    main_task_mask,
    option,
)


@dataclass(frozen=True)
class Single(Aggregator):
    """Main task only."""

    main_task: int = option(0, low=0, help="index of the main task among the tasks (0: rec)")

    name: ClassVar[str] = "single"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # the same update either way
    summary: ClassVar[str] = "the main task's gradient alone; auxiliary tasks are ignored"
    paper: ClassVar[str] = "single-task training on the main task, the no-auxiliary baseline"
    fixed_weights: ClassVar[bool] = True

    def fixed_task_weights(self, n_tasks: int) -> Tensor:
        check_main_task(self.name, self.main_task, n_tasks)
        return main_task_mask(self.main_task, n_tasks, torch.device("cpu")).to(torch.float32)

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        check_main_task(self.name, self.main_task, grads.n_tasks)
        onehot = main_task_mask(self.main_task, grads.n_tasks, grads.present.device)
        return Weights((grads.present & onehot).to(compute_dtype(grads.values.dtype)), state)
