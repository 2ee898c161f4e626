"""DualProj (``dualproj``): the mean gradient projected onto the dual cone of the task gradients.

Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024 (the
projection of Equation 11 of Lopez-Paz and Ranzato, "Gradient Episodic Memory for Continual Learning",
NeurIPS 2017); torchjd ``DualProj`` (its default: mean preference vector, ``QuadprogProjector(norm_eps=1e-4,
reg_eps=1e-4)``).

With task gradients g_t (rows of J), Gram ``G = J Jᵀ``, m present tasks and ``u = (1/m, …, 1/m)``
(torchjd's default preference, the mean weighting), the update is

    Δθ = π_J(Jᵀu) = Jᵀ w,    w = argmin_{v ≥ u} vᵀ G̃ v,

the projection of the mean gradient onto the dual cone ``{x : <x, g_t> ≥ 0 ∀ t}`` (Proposition 1 of the
paper), computed by :func:`recmtl.aggregators._math.dual_cone_weights` with one preference vector. (UPGrad,
:mod:`recmtl.aggregators.upgrad`, projects each ``u_t g_t`` separately and sums.)

``G̃ = G + reg_eps · tr(G) · I`` is torchjd's regularised Gram ``G / tr G + reg_eps I`` times ``tr G`` (the
weights do not depend on that factor); ``reg_eps`` (default 1e-4, torchjd's) is an option. The conventions
that differ from torchjd are UPGrad's (see :mod:`recmtl.aggregators.upgrad`): no absolute ``norm_eps``
(scale-equivariant; only an exactly zero G gives ``w = u``), absent tasks left out of J (m, trace, ridge
over the present ones, weight 0), ``w = u`` on a row whose present Gram is not finite.

Cost: ~110 ms at R = 10⁴, T = 4 on one CPU thread: R quadratic programs in
:func:`~recmtl.aggregators._math.dual_cone_weights` (in row mode only on the rows where tasks meet).

Per-row mode (ours): the same projection on each touched row's gradients, all rows at once. The identity
on a single task: ``u = 1`` and ``v ≥ 1`` binds, so ``w = 1`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, dual_cone_weights
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option
from recmtl.aggregators.upgrad import mean_preferences, regularized_gram


def dualproj_weights(gram: Tensor, present: Tensor, *, reg_eps: float = 1e-4) -> Tensor:
    """DualProj's weights w [R, T] float64 (0 on absent tasks) from ``gram`` [R, T, T] and ``present``."""
    g, finite = regularized_gram(gram, present, reg_eps)
    u = mean_preferences(present)
    w = dual_cone_weights(g, u.unsqueeze(1), present)[:, 0]
    return torch.where(finite.unsqueeze(1), w, u)


@dataclass(frozen=True)
class DualProj(Aggregator):
    """DualProj (see the module docstring)."""

    reg_eps: float = option(
        1e-4, low=0.0, high=1.0, help="ridge reg_eps on the trace-normalised Gram (torchjd's default)"
    )

    name: ClassVar[str] = "dualproj"
    summary: ClassVar[str] = (
        "mean of the task gradients projected onto their dual cone: the closest conflict-free direction"
    )
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    paper: ClassVar[str] = "Quinton and Rey, Jacobian Descent for Multi-Objective Optimization, arXiv 2024"
    # one present task: u = 1 and min v²G̃ subject to v ≥ 1 is v = 1
    identity_on_single_task: ClassVar[bool] = True

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        w = dualproj_weights(grads.gram(), grads.present, reg_eps=self.reg_eps)
        return Weights(w.to(compute_dtype(grads.values.dtype)), state)
