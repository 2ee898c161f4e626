"""Aligned-MTL (``alignedmtl``): the task gradients aligned to an orthogonal, equal-magnitude system.

Senushkin, Patakin, Kuznetsov and Konushin, "Independent Component Alignment for Multi-Task Learning",
CVPR 2023, Algorithm 1; torchjd ``AlignedMTL`` (adapted from the authors' code, SamsungLabs/MTL).

With task gradients g_t (rows of J), Gram ``G = J Jᵀ = V Λ Vᵀ`` (eigendecomposition), m present tasks,
the preference (task weights) ``w = (1/m, …, 1/m)`` (torchjd's default, the mean weighting) and the
eigenvalues kept ``λ_i > tol = λ_max · m · eps`` (the numerical rank r; ``eps`` the machine epsilon of
the gradients' compute dtype, as torchjd uses the Gram's dtype), the update is

    Δθ = Jᵀ α,    α = B w,    B = sqrt(λ_scale) · V_r Λ_r^{-1/2} V_rᵀ,

i.e. ``J = U Σ Vᵀ`` is replaced by the aligned ``sqrt(λ_scale) U Vᵀ`` (singular values all equal). The
scale ``scale_mode``: ``"min"`` (default, the paper's Algorithm 1 and torchjd's default) the smallest kept
eigenvalue; ``"median"`` their (lower) median; ``"rmse"`` their mean (the authors' code's other options,
named as torchjd names them). With r = 0 (G = 0 up to rounding) B = I, α = w, as in torchjd.

Computed per row in float64 on the Gram divided by its largest present diagonal entry (B does not depend
on the Gram's scale: ``sqrt(λ_scale / λ_i)`` only), with one batched ``torch.linalg.eigh`` [R, T, T]:
``B = Σ_{i ≤ r} sqrt(λ_scale / λ_i) v_i v_iᵀ`` (~20 ms at R = 10⁴, T = 4 on one CPU thread, mostly
eigh). Singular Grams (duplicate or opposite gradients, more tasks than dimensions, zero gradients) drop
their null directions through ``tol``: never a division by a zero eigenvalue. Absent tasks are left out
of J: their Gram rows/columns are 0 (eigenvalue 0, dropped), m counts the present tasks, and they get
α = 0. A row whose present Gram is not finite (float32 gradients beyond ~1e19 overflow it) gets α = w.

Differences from torchjd: none in global mode with all tasks present (m = T there). Per-row mode (ours):
the same transformation on each touched row's gradients, all rows at once. The identity on a single task:
one eigenvalue λ = g², ``λ_scale = λ`` in every mode, so ``B = 1`` and α = w = 1 (0 gradient: r = 0,
α = w = 1); the result is set exactly there, since eigh's rounding need not give exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option
from recmtl.aggregators.upgrad import mean_preferences

SCALE_MODES = ("min", "median", "rmse")


def aligned_weights(gram: Tensor, present: Tensor, *, scale_mode: str = "min", eps: float) -> Tensor:
    """Aligned-MTL's weights α [R, T] float64 (0 on absent tasks).

    ``gram`` [R, T, T], ``present`` [R, T] bool, ``eps`` the machine epsilon of the rank tolerance
    (``torch.finfo(compute dtype).eps``).
    """
    R, T = present.shape
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)
    g = 0.5 * (g + g.transpose(1, 2))
    finite = torch.isfinite(g).all(dim=2).all(dim=1)
    g = torch.where(finite.view(R, 1, 1), g, 0.0)
    top = torch.diagonal(g, dim1=1, dim2=2).amax(dim=1)
    g = g / torch.where(top > 0, top, 1.0).view(R, 1, 1)

    lam, vec = torch.linalg.eigh(g)  # ascending eigenvalues [R, T], eigenvectors in columns [R, T, T]
    m = present.sum(dim=1)
    tol = lam[:, -1:] * m.unsqueeze(1).to(lam.dtype) * eps
    kept = lam > tol  # a suffix of the ascending eigenvalues: the r largest
    rank = kept.sum(dim=1, keepdim=True)
    first = (T - rank).clamp(max=T - 1)  # position of the smallest kept eigenvalue
    if scale_mode == "min":
        scale = lam.gather(1, first)
    elif scale_mode == "median":  # torch.median's lower median of the r kept values
        scale = lam.gather(1, (first + (rank - 1).clamp(min=0) // 2).clamp(max=T - 1))
    else:  # "rmse": the mean kept eigenvalue
        scale = safe_div((lam * kept).sum(dim=1, keepdim=True), rank.to(lam.dtype))
    factor = torch.where(kept, safe_div(scale, torch.where(kept, lam, 1.0)).sqrt(), 0.0)  # [R, T]

    w = mean_preferences(present)
    projected = (vec * w.unsqueeze(2)).sum(dim=1)  # Vᵀ w, [R, T]
    alpha = (vec * (factor * projected).unsqueeze(1)).sum(dim=2)  # V diag(factor) Vᵀ w
    alpha = torch.where((rank > 0) & finite.unsqueeze(1), alpha, w)
    alpha = torch.where((m == 1).unsqueeze(1), w, alpha)  # exactly 1 (see the module docstring)
    return torch.where(present, alpha, 0.0)


@dataclass(frozen=True)
class AlignedMTL(Aggregator):
    """Aligned-MTL (see the module docstring)."""

    scale_mode: str = option(
        "min",
        choices=SCALE_MODES,
        help="eigenvalue setting the aligned scale: min (paper), median, rmse (mean)",
    )

    name: ClassVar[str] = "alignedmtl"
    summary: ClassVar[str] = (
        "mean of the task gradients made orthogonal and of equal size (eigendecomposition of their Gram)"
    )
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    paper: ClassVar[str] = (
        "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023"
    )
    # one present task: B = sqrt(λ / λ) = 1 and α = w = 1
    identity_on_single_task: ClassVar[bool] = True

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        dtype = compute_dtype(grads.values.dtype)
        alpha = aligned_weights(
            grads.gram(), grads.present, scale_mode=self.scale_mode, eps=torch.finfo(dtype).eps
        )
        return Weights(alpha.to(dtype), state)
