"""MGDA-UB (``mgda``): the min-norm point of the convex hull of the task gradients (METHODS.md §6).

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

For a row with present tasks A and gradients g_t (t ∈ A), the update is ``d = Σ_t w_t g_t`` with

    w = argmin_{w ∈ Δ_A} ‖Σ_{t∈A} w_t g̃_t‖²,    g̃_t = g_t / γ_t,

Δ_A the simplex over A, solved in Gram form (``wᵀ G̃ w``, ``G̃_st = G_st / (γ_s γ_t)``) by
:func:`recmtl.aggregators._math.min_norm_weights` (exact to ~1e-13 relative objective; MGDA's Frank-Wolfe
with exact line search, pairwise steps and Wolfe's minor cycles). The direction is the paper's common
descent direction: ``-d`` decreases every present task's loss unless 0 lies in the hull (Pareto-stationary,
then ``d = 0``). Coefficients ``c_t = w_t``; absent tasks get 0.

MGDA-UB ("upper bound") runs MGDA on the gradients with respect to the shared *representation* instead of
the shared parameters, to save backward passes. Here the gathered embedding rows *are* the shared
representation (matrix factorisation has no encoder behind them), so the bound is tight: MGDA-UB and
MGDA are the same method in this toolkit.

``normalize`` — gradient normalisation γ_t, **[reading]** (the paper's §3.3 leaves it to the
implementation); the choices are LibMTL's ``mgda_gn`` (from the authors' ``gradient_normalizers``):

- ``"none"`` (default, as torchjd's ``MGDA`` and LibMTL's default): γ_t = 1;
- ``"l2"``: γ_t = ‖g_t‖ (a zero gradient stays 0);
- ``"loss"``: γ_t = L_t, the step's task loss (``StepInfo.losses``; the same for every row in row mode);
- ``"loss+"``: γ_t = L_t · ‖g_t‖.

A loss that is not positive and finite (the DirectAU uniformity loss is negative) leaves its task
unnormalised by the loss factor (γ_t = 1, or ‖g_t‖ for ``"loss+"``) **[reading]**: dividing by it would flip
or blow up the gradient.

Output scale convention: the weights found on the normalised gradients are applied to the *raw* ones,
``d = Σ w_t g_t``, as in the authors' code (``loss = Σ scale[t] · loss_t``) and LibMTL's representation
path (``rep_grad=True``). LibMTL's parameter path (``rep_grad=False``) applies them to the normalised
gradients, ``d = Σ w_t g_t / γ_t``: with ``normalize`` other than ``"none"`` its update differs from ours by
the factor 1/γ_t per task. torchjd's ``MGDA`` has no normalisation; it equals ours with ``"none"``, up to its
stopping rule (it stops once the Frank-Wolfe step is below ``epsilon = 1e-3``, starting from uniform
weights, so its weights are approximate; ours are the exact optimum).

Per-row mode (ours): the same min-norm problem on each touched row's [T, d] gradients, all rows at once;
global mode (R = 1, all touched rows flattened) is the paper's. A row with one present task gets
coefficient exactly 1 whatever the normalisation (the simplex has one point), hence
``identity_on_single_task``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, min_norm_weights, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, finite_gram, option

NORMALIZE = ("none", "l2", "loss", "loss+")


def mgda_normalizers(norms: Tensor, losses: Tensor | None, normalize: str) -> Tensor:
    """The gradient normalisers γ [R, T] (float64) from the norms [R, T] and the step losses [T].

    ``"none"``: 1; ``"l2"``: ‖g_t‖; ``"loss"``: L_t; ``"loss+"``: L_t ‖g_t‖. A loss that is not positive and
    finite counts as 1. A zero γ (zero gradient) is left as is: :func:`mgda_weights` maps 0/0 to 0.
    """
    norms = norms.to(torch.float64)
    if normalize == "none":
        return torch.ones_like(norms)
    if normalize == "l2":
        return norms
    if losses is None:
        raise ValueError(f"mgda: normalize={normalize!r} needs the step's task losses (StepInfo.losses)")
    if losses.shape != (norms.shape[1],):
        raise ValueError(f"mgda: StepInfo.losses must be [T] = [{norms.shape[1]}], got {tuple(losses.shape)}")
    loss = losses.to(device=norms.device, dtype=torch.float64)
    loss = torch.where(torch.isfinite(loss) & (loss > 0), loss, 1.0).unsqueeze(0)  # [1, T]
    return loss.expand_as(norms) if normalize == "loss" else loss * norms


def mgda_weights(gram: Tensor, present: Tensor, normalizers: Tensor) -> Tensor:
    """Min-norm weights w [R, T] (float64, on the simplex of the present tasks) of the gradients divided by
    ``normalizers`` [R, T]: ``gram`` [R, T, T] → ``argmin_{w ∈ Δ} wᵀ G̃ w``, ``G̃_st = G_st / (γ_s γ_t)``."""
    outer = normalizers.unsqueeze(2) * normalizers.unsqueeze(1)
    return min_norm_weights(safe_div(gram.to(torch.float64), outer), present)


@dataclass(frozen=True)
class MGDA(Aggregator):
    """MGDA-UB: the min-norm point of the convex hull of the (normalised) task gradients."""

    normalize: str = option(
        "none", choices=NORMALIZE, help="[reading] gradient normalisation before the min-norm solve (LibMTL)"
    )

    name: ClassVar[str] = "mgda"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "min-norm point of the convex hull of the task gradients: a direction that decreases every task"
    )
    paper: ClassVar[str] = "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018"
    identity_on_single_task: ClassVar[bool] = True  # one present task: the simplex is {1}

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        gram, keep = finite_gram(grads)
        gram = gram.to(torch.float64)
        norms = torch.diagonal(gram, dim1=1, dim2=2).clamp(min=0.0).sqrt()
        gamma = mgda_normalizers(norms, info.losses, self.normalize)
        w = mgda_weights(gram, grads.present, gamma)
        return Weights(torch.where(keep, w, 0.0).to(compute_dtype(grads.values.dtype)), state)
