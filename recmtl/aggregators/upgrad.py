"""UPGrad (``upgrad``): every task gradient projected onto the dual cone of all of them, then averaged.

Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024;
torchjd ``UPGrad`` (its default: mean preference vector, ``QuadprogProjector(norm_eps=1e-4,
reg_eps=1e-4)``).

With task gradients g_t (rows of J), Gram ``G = J Jᵀ``, m present tasks and the preference vector
``u = (1/m, …, 1/m)`` (torchjd's default, the mean weighting), the update is

    Δθ = Σ_t u_t π_J(g_t) = Jᵀ w,    w = Σ_t w^(t),    w^(t) = argmin_{v ≥ u_t e_t} vᵀ G̃ v,

where ``π_J`` projects onto the dual cone ``{x : <x, g_s> ≥ 0 ∀ s}`` and ``w^(t)`` is the dual of projecting
``u_t g_t`` (Proposition 1 of the paper). The projection is :func:`recmtl.aggregators._math.dual_cone_weights`
with the K = T preference vectors ``u_t e_t``.

``G̃`` is torchjd's regularised Gram: torchjd normalises ``G`` by its trace (``G / tr G``, the squared
Frobenius norm of J) and adds ``reg_eps · I``, so that the QP is strictly convex even for singular G (more
tasks than dimensions, duplicated gradients). The projection's weights do not change when G̃ is multiplied
by a constant, so we use ``G̃ = G + reg_eps · tr(G) · I`` (the same problem, times tr G); ``reg_eps``
(default 1e-4, torchjd's) is an option. As in torchjd, the regularisation makes the result a slightly
"under-projected" one: ``<Δθ, g_s>`` can be ~ −reg_eps · tr(G) · w_s instead of ≥ 0.

Conventions that differ from torchjd:

- torchjd's ``norm_eps = 1e-4`` is absolute: when ``tr G < 1e-4`` it replaces G by 0, giving ``w = u``
  (the plain mean). We keep the method scale-equivariant instead (the same weights for J and k·J, any
  k > 0): only an exactly zero G gives ``w = u``. The two agree whenever ``tr G ≥ 1e-4``.
- Absent tasks (``present`` False) are not in J at all: m counts the present tasks, the trace and the
  ridge run over them, and they get weight 0.
- A row whose present Gram is not finite (float32 gradients beyond ~1e19 overflow it) gets ``w = u``.

Cost: ~450 ms at R = 10⁴, T = 4 on one CPU thread: R·T quadratic programs in
:func:`~recmtl.aggregators._math.dual_cone_weights` (in row mode only on the rows where tasks meet).

Per-row mode (ours): the same projection on each touched row's [T, D] gradients, all rows at once (the
paper's method is global mode). The identity on a single task: one task gives ``u = 1`` and the
constraint ``v ≥ 1`` binds (``min v² G̃``), so ``w = 1`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, dual_cone_weights, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option


def mean_preferences(present: Tensor) -> Tensor:
    """u [R, T] float64: 1/m on the m present tasks of each row, 0 elsewhere (all zeros for m = 0)."""
    p = present.to(torch.float64)
    return safe_div(p, p.sum(dim=1, keepdim=True))


def regularized_gram(gram: Tensor, present: Tensor, reg_eps: float) -> tuple[Tensor, Tensor]:
    """torchjd's ``G / tr G + reg_eps I`` times ``tr G``, per row, over the present tasks.

    ``gram`` [R, T, T], ``present`` [R, T] bool → (float64 [R, T, T] ``G + reg_eps · tr(G) · I`` on the
    present block, 0 elsewhere and on rows whose present block is not finite; finite [R] bool).
    """
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)
    g = 0.5 * (g + g.transpose(1, 2))
    finite = torch.isfinite(g).all(dim=2).all(dim=1)
    g = torch.where(finite.view(-1, 1, 1), g, 0.0)
    trace = torch.diagonal(g, dim1=1, dim2=2).sum(dim=1, keepdim=True)  # [R, 1]
    return g + torch.diag_embed(reg_eps * trace * present.to(torch.float64)), finite


def upgrad_weights(gram: Tensor, present: Tensor, *, reg_eps: float = 1e-4) -> Tensor:
    """UPGrad's weights w [R, T] float64 (0 on absent tasks) from ``gram`` [R, T, T] and ``present``."""
    g, finite = regularized_gram(gram, present, reg_eps)
    u = mean_preferences(present)
    w = dual_cone_weights(g, torch.diag_embed(u), present).sum(dim=1)
    return torch.where(finite.unsqueeze(1), w, u)


@dataclass(frozen=True)
class UPGrad(Aggregator):
    """UPGrad (see the module docstring)."""

    reg_eps: float = option(
        1e-4, low=0.0, high=1.0, help="ridge reg_eps on the trace-normalised Gram (torchjd's default)"
    )

    name: ClassVar[str] = "upgrad"
    summary: ClassVar[str] = (
        "mean of the task gradients, each first projected onto the dual cone of all of them (conflict-free)"
    )
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    paper: ClassVar[str] = "Quinton and Rey, Jacobian Descent for Multi-Objective Optimization, arXiv 2024"
    # one present task: u = 1 and min v²G̃ subject to v ≥ 1 is v = 1
    identity_on_single_task: ClassVar[bool] = True

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        w = upgrad_weights(grads.gram(), grads.present, reg_eps=self.reg_eps)
        return Weights(w.to(compute_dtype(grads.values.dtype)), state)
