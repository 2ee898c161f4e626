"""Random loss weighting (``rlw``): fresh random task weights at every step.

Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning", TMLR
2022 (arXiv:2111.10603), Algorithm 2 with the standard normal distribution (torchjd's ``Random`` and
LibMTL's default ``dist``): at every step

    z ~ N(0, I_T),   w = softmax(z),   update = Σ_t w_t g_t,

so the weights are positive and sum to 1 over the tasks of the step. The coefficients are ``w[t]`` on every
present (row, task), 0 where absent: global weights (one draw per step, the same for every row), so
per-row and global mode run the same update (both are "paper").

- z is drawn from ``info.generator`` only (T numbers per step, whatever the presence, in the gradients'
  compute dtype: float32, or float64 for float64 gradients, as torchjd draws in the matrix's dtype); the
  softmax runs over the tasks present in the step (on any row); an absent task's draw is discarded.
- Oracle: torchjd's ``Random`` aggregator (its ``RandomWeighting`` draws ``torch.randn(T)`` from the global
  generator): with all tasks present and the same seed the draw, and so the update, is identical.
- The weights do not read the gradients or the losses (``info.losses`` is not needed): the update is
  scale equivariant, and permutation equivariant in distribution only (the i-th draw goes to task i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, masked_softmax
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights


def rlw_weights(z: Tensor, active: Tensor) -> Tensor:
    """``softmax(z)`` over the ``active`` [T] tasks, 0 elsewhere: ``z`` [T] → [T]."""
    return masked_softmax(z, active)


@dataclass(frozen=True)
class RLW(Aggregator):
    """Random loss weighting (see the module docstring). No hyper-parameters."""

    name: ClassVar[str] = "rlw"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # global weights: same update
    summary: ClassVar[str] = "random loss weights: the softmax of a standard normal draw, new at every step"
    paper: ClassVar[str] = (
        "Lin et al., Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning, "
        "TMLR 2022 (arXiv:2111.10603)"
    )

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        if info.generator is None:
            raise ValueError("rlw: needs a random generator (StepInfo.generator), got None")
        dtype = compute_dtype(grads.values.dtype)
        gen = info.generator
        z = torch.randn(grads.n_tasks, generator=gen, device=gen.device, dtype=dtype)
        w = rlw_weights(z.to(grads.present.device), grads.present.any(0))
        return Weights(torch.where(grads.present, w, 0.0), state)
