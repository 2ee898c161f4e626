"""IMTL-G (``imtl``): the update whose projections on every task's unit gradient are equal (METHODS.md §6).

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021 (the
gradient half, IMTL-G; the loss-scale half IMTL-L, which LibMTL's ``IMTL`` combines with it, is not part of
this method).

For a row with present tasks A and gradients g_t (norms n_t, unit vectors u_t = g_t / n_t), IMTL-G finds
``d = Σ_t α_t g_t`` with ``Σ_t α_t = 1`` and ``<d, u_1> = <d, u_t>`` for every t. The paper's closed form,
with D = [g_1 − g_t]_{t≥2} and U = [u_1 − u_t]_{t≥2},

    α_{2..T} = g_1 Uᵀ (D Uᵀ)⁻¹,    α_1 = 1 − Σ_{t≥2} α_t,

is, in Gram form (G_st = <g_s, g_t>), the solution of ``G α = κ n`` normalised to ``Σ α = 1``:
``α = G⁻¹n / 1ᵀG⁻¹n`` (the conditions say ``(Gα)_t / n_t`` is the same for all t). Where the gradients are
linearly dependent (duplicates, zero gradients, more tasks than dimensions) G is singular and, as torchjd's
``IMTLG`` (the generalisation of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024),
we take the pseudo-inverse:

    v = G⁺ n,    α = v / Σ_t v_t    (α = 0 where Σ v = 0 up to rounding).

Equal to the paper's closed form wherever the gradients are linearly independent; where they are not, the
paper's system either has no unique solution or gives d = 0, and G⁺ picks the least-squares answer (a zero
gradient gets α_t = 0, duplicates share their weight).

Numerics: batched ``eigh`` on the Gram divided by its largest diagonal entry (α does not depend on that
scale), eigenvalues below ``T · ε · λ_max`` dropped (ε the gradients' compute-dtype epsilon: torchjd's
``pinv`` default for float64; for float32 gradients the Gram's own rounding). Where the gradients are
linearly independent the solve runs on the cosine matrix (``G⁻¹n = S⁻¹C⁻¹1``, S = diag of the norms), which
keeps full accuracy when the norms span orders of magnitude (see :func:`imtl_weights`). torchjd
zeroes α where ``|Σ v| < 1e-12`` in the units of the gradients; we apply that threshold in the normalised
units (largest ‖g_t‖ = 1; at least 64 ε), so it is scale-free: the two differ only for gradients far from
unit size with Σ v within a factor ~1e12 of cancelling (where α is enormous anyway).

Per-row mode (ours): the same on each touched row's [T, d] gradients, all rows at once; global mode (R = 1,
all touched rows flattened) is the paper's. A row with one present task gets α = 1 exactly (the paper's
α_1 = 1 − Σ∅; also for a zero gradient), hence ``identity_on_single_task``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, finite_gram

_SUM_TOL = 1e-12  # |Σ v| below this (normalised units, or 64 ε if larger): α = 0


def _pinv_apply(m: Tensor, rhs: Tensor, rtol: float) -> tuple[Tensor, Tensor]:
    """``(m⁺ rhs [R, T], full [R])`` for symmetric ``m`` [R, T, T] and ``rhs`` [R, T]: eigenvalues at most
    ``rtol · λ_max`` (and negative ones, rounding of a PSD matrix) dropped; ``full`` where none was."""
    evals, evecs = torch.linalg.eigh(m)  # ascending
    kept = evals > rtol * evals[:, -1:].clamp(min=0.0)
    inv = torch.where(kept, safe_div(torch.ones_like(evals), evals), 0.0)
    x = evecs @ (inv * (evecs.transpose(1, 2) @ rhs.unsqueeze(2)).squeeze(2)).unsqueeze(2)
    return x.squeeze(2), kept.all(dim=1)


def imtl_weights(gram: Tensor, present: Tensor, eps: float) -> Tensor:
    """IMTL-G's α [R, T] (float64) from the Gram [R, T, T]: ``α = G⁺n / 1ᵀG⁺n`` over the present tasks (0
    elsewhere and where ``1ᵀG⁺n`` vanishes; exactly 1 on a row's single present task). ``eps``: the precision
    of the Gram (the gradients' compute-dtype epsilon), which sets the pseudo-inverse's cut-off.

    Where the present gradients are linearly independent (judged on the cosine matrix C = S⁻¹GS⁻¹, S the
    norms, so whatever their norms) ``G⁻¹n = S⁻¹C⁻¹1`` is solved in that scale-free form: accurate to
    rounding when the norms span many orders of magnitude (the plain G⁺n loses ~cond(S²) of them, and in
    float32 would drop a task 1e-3 times smaller than the largest as "rank-deficient"). Elsewhere (duplicate,
    collinear or zero gradients, T > D) it is torchjd's ``pinv(G) @ n``.
    """
    R, T = present.shape
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)  # where, not multiply: absent entries may be NaN
    g = 0.5 * (g + g.transpose(1, 2))
    scale = torch.diagonal(g, dim1=1, dim2=2).amax(dim=1)
    g = g / torch.where(scale > 0, scale, 1.0).view(R, 1, 1)
    n = torch.diagonal(g, dim1=1, dim2=2).clamp(min=0.0).sqrt()  # [R, T], largest 1
    rtol = T * eps

    norm = torch.where(n > 0, n, 1.0)
    absent_diag = torch.eye(T, dtype=torch.bool, device=g.device) & ~present.unsqueeze(1)
    cosine = torch.where(absent_diag, 1.0, g / (norm.unsqueeze(2) * norm.unsqueeze(1)))
    x, independent = _pinv_apply(cosine, present.to(torch.float64), rtol)
    independent = independent & ((n > 0) | ~present).all(dim=1)
    v = x / norm
    dependent = (~independent).nonzero().squeeze(1)  # usually none: only those rows pay for a second eigh
    v_pinv, _ = _pinv_apply(g.index_select(0, dependent), n.index_select(0, dependent), rtol)
    v = v.index_copy(0, dependent, v_pinv)
    v = torch.where(present, v, 0.0)
    total = v.sum(dim=1, keepdim=True)
    alpha = torch.where(total.abs() > max(_SUM_TOL, 64.0 * eps), safe_div(v, total), 0.0)
    single = present.sum(dim=1, keepdim=True) == 1
    return torch.where(single, present.to(torch.float64), alpha)


@dataclass(frozen=True)
class IMTLG(Aggregator):
    """IMTL-G: the combination (weights summing to 1) with equal projections on every task's direction."""

    name: ClassVar[str] = "imtl"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "combination of the task gradients, weights summing to 1, with equal projections on every task"
    )
    paper: ClassVar[str] = "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 (IMTL-G)"
    identity_on_single_task: ClassVar[bool] = True  # one present task: α_1 = 1 − Σ∅ = 1

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        dtype = compute_dtype(grads.values.dtype)
        gram, keep = finite_gram(grads)
        alpha = imtl_weights(gram, grads.present, torch.finfo(dtype).eps)
        return Weights(torch.where(keep, alpha, 0.0).to(dtype), state)
