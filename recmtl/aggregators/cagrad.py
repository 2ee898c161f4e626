"""CAGrad (``cagrad``): the average gradient, bent to improve the worst task (METHODS.md §6).

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
(Algorithm 1).

For a row with present tasks A (m = |A|) and gradients g_t, ``g_0 = (1/m) Σ_{t∈A} g_t`` and
``φ = c² ‖g_0‖²``. CAGrad's update maximises the worst task's improvement in a ball around g_0,
``max_{‖d − g_0‖ ≤ √φ} min_{t∈A} <g_t, d>``; by duality,

    w* = argmin_{w ∈ Δ_A}  F(w) = g_wᵀ g_0 + √φ ‖g_w‖,    g_w = Σ_t w_t g_t,
    d  = g_0 + (√φ / ‖g_w*‖) g_w*,

i.e. coefficients ``c_t = 1/m + (√φ / ‖g_w*‖) w*_t`` (0 for absent tasks); c = 0.4 by default (the
paper's choice for its image experiments, METHODS.md §6).

``rescale`` — LibMTL's and the authors' output scaling: 0 none (torchjd's ``CAGrad``; our default), 1
``d / (1 + c²)`` (the authors' and LibMTL's default), 2 ``d / (1 + c)``.

Solver (:func:`cagrad_simplex_weights`, Gram form, exact): F is convex, so its minimum over the simplex is
the least, over the faces, of F's minimiser on the face's affine hull where that lies in the face. For a
support S (|S| ≥ 2) with Gram block M and ``h = (G b)_S`` (b the uniform weights: ``h_t = <g_t, g_0>``), let
``A = 1ᵀM⁻¹1``, ``B = 1ᵀM⁻¹h``, ``C = hᵀM⁻¹h``. The face's affine min-norm point is ``w_a = M⁻¹1 / A``
(``‖g_{w_a}‖² = 1/A``), and the stationary point of F on the affine hull (KKT: ``(G d)_t`` equal on S, with
``d = b + λ w``) is ``w_s = ((B + λ)/A · M⁻¹1 − M⁻¹h) / λ`` with ``λ = √(B² − A(C − φ)) = √φ / ‖g_{w_s}‖``.
Candidates: every vertex, and every face's ``w_s`` and ``w_a`` (``w_a`` covers the non-smooth minimum
``g_w = 0`` inside a face); the feasible one (``w ≥ −1e-10``, then clipped) of least F, F evaluated from the
Gram at the candidate, wins. The solves ``M⁻¹[1, h]`` run on the Jacobi-scaled block (unit diagonal: accurate
whatever the norms) by a Cholesky factorisation written out over the ≤ T columns, batched over rows ×
supports with the batch last, with a ridge 1e-12 and one step of refinement (singular blocks — duplicate,
collinear or zero gradients — stay finite, and their candidates face the same exact F). ``2^T − 1 − T``
faces: 11 at T = 4, 26 at T = 5. Never worse than cvxpy/Clarabel at tolerances 1e-14 (F within 1e-14
relative on 300 random cases with duplicate, opposite and zero gradients and D < T); torchjd's Clarabel
solution at its default tolerances agrees to ~1e-7 relative in F and ~1e-3 in the update (the tests).

Cost: ~30 ms at R = 10⁴, T = 4 and ~65 ms at T = 5 on one CPU core; it grows as 2^T·T³ (~0.3 s at T = 6,
~3 s at T = 8), so per-row CAGrad with more than 5 tasks is slow (global mode, R = 1, is always cheap).

Degenerate cases: where ‖g_w*‖ is zero up to the Gram's rounding (``‖g_w‖² ≤ 64 ε (Σ w_t ‖g_t‖)²``, ε the
gradients' compute-dtype epsilon) 0 lies in the hull at the optimum — Pareto-stationary — and, as torchjd,
the update is 0. torchjd decides this with an absolute threshold on the Frobenius-normalised Gram
(``‖g_w‖ < 1e-4 ‖J‖_F``, and it zeroes everything when ``‖J‖_F² < 1e-4``); ours is relative to the gradients
involved and scale-free, so the two differ only where torchjd's thresholds fire (tiny gradients, or norms
spread over more than four orders of magnitude). φ = 0 (g_0 = 0) gives d = g_0 = 0.

Per-row mode (ours): the same problem on each touched row's [T, d] gradients, all rows at once; global mode
(R = 1, all touched rows flattened) is the paper's. A row with one present task gets
``d = (1 + c) g`` before rescaling, so the method is not the identity there.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, finite_gram, option

_FEASIBLE = -1e-10  # a candidate weight at least this (in [0, 1] units) is clipped to 0, not rejected
_ZERO_NORM = 64.0  # ‖g_w‖² ≤ this × eps × (Σ w_t ‖g_t‖)²: zero up to the Gram's rounding
_RIDGE = 1e-12  # on the unit-diagonal (Jacobi-scaled) support blocks, removed again by one refinement step


def _spd_solve(a: Tensor, b: Tensor) -> Tensor:
    """``a⁻¹ b`` for a batch of symmetric positive definite systems stored batch-last: ``a`` [k, k, N],
    ``b`` [k, K, N] → [k, K, N]. A Cholesky factorisation written out entry by entry, so every operation is
    on contiguous length-N vectors (LAPACK's batched calls cost ~5 µs per small matrix on CPU)."""
    k = a.shape[0]
    tiny = torch.finfo(a.dtype).tiny
    low: list[list[Tensor]] = [[] for _ in range(k)]  # low[i][j] = L_ij, j < i
    inv_d: list[Tensor] = []  # 1 / L_jj
    for j in range(k):
        s = a[j, j].clone()
        for m in range(j):
            s.addcmul_(low[j][m], low[j][m], value=-1.0)
        inv_d.append(s.clamp_(min=tiny).rsqrt_())
        for i in range(j + 1, k):
            off = a[i, j].clone()
            for m in range(j):
                off.addcmul_(low[i][m], low[j][m], value=-1.0)
            low[i].append(off.mul_(inv_d[j]))
    y: list[Tensor] = []
    for i in range(k):  # L y = b
        acc = b[i].clone()
        for m in range(i):
            acc.addcmul_(low[i][m], y[m], value=-1.0)
        y.append(acc.mul_(inv_d[i]))
    x: list[Tensor] = [y[0]] * k
    for i in reversed(range(k)):  # Lᵀ x = y
        acc = y[i]
        for m in range(i + 1, k):
            acc.addcmul_(low[m][i], x[m], value=-1.0)
        x[i] = acc.mul_(inv_d[i])
    return torch.stack(x)


def _refined_solve(a: Tensor, b: Tensor) -> Tensor:
    """``a⁻¹ b`` (batch-last, as :func:`_spd_solve`) for a unit-diagonal PSD ``a`` that may be singular:
    solved with a ridge ``1e-12 I`` (the factorisation then exists: duplicate, collinear or zero gradients),
    then one step of iterative refinement against ``a`` itself, which restores full accuracy where ``a`` is
    regular."""
    k = a.shape[0]
    ridged = a + _RIDGE * torch.eye(k, dtype=a.dtype, device=a.device).unsqueeze(2)
    x = _spd_solve(ridged, b)
    residual = b - (a.unsqueeze(2) * x.unsqueeze(0)).sum(dim=1)  # b − a x: [k, K, N]
    return x + _spd_solve(ridged, residual)


def cagrad_simplex_weights(gram: Tensor, present: Tensor, c: float) -> tuple[Tensor, Tensor]:
    """CAGrad's inner problem, ``w* = argmin_{w ∈ Δ} g_wᵀg_0 + √φ ‖g_w‖`` with φ = c²‖g_0‖², in Gram form.

    ``gram`` [R, T, T], ``present`` [R, T] bool → ``(w [R, T], g [R, T, T])`` float64: the weights (on the
    simplex of the present tasks; all zeros for a row without any) and the masked Gram they refer to, divided
    by the row's largest present diagonal entry (F is positively homogeneous, so w does not depend on that
    scale). See the module docstring for the method (exact enumeration of the supports).
    """
    R, T = present.shape
    dev = gram.device
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)  # where, not multiply: absent entries may be NaN
    g = 0.5 * (g + g.transpose(1, 2))
    scale = torch.diagonal(g, dim1=1, dim2=2).amax(dim=1)
    g = g / torch.where(scale > 0, scale, 1.0).view(R, 1, 1)
    diag = torch.diagonal(g, dim1=1, dim2=2).clamp(min=0.0)  # [R, T]

    b = safe_div(present.to(torch.float64), present.sum(dim=1, keepdim=True).to(torch.float64))
    h = (g @ b.unsqueeze(2)).squeeze(2)  # [R, T]: <g_t, g_0>
    phi = c * c * (b * h).sum(dim=1).clamp(min=0.0)  # [R]
    sqrt_phi = phi.sqrt()

    # vertices: w = e_t, F = h_t + √φ ‖g_t‖
    f_vertex = (h + sqrt_phi.unsqueeze(1) * diag.sqrt()).masked_fill(~present, float("inf"))
    best_f, best_t = f_vertex.min(dim=1)  # a row without present task: inf, index 0 (masked at the end)
    best_w = torch.zeros(R, T, dtype=torch.float64, device=dev).scatter_(1, best_t.unsqueeze(1), 1.0)

    # faces with k >= 2 vertices, batch-last ([k, ..., C·R], support-major), in the Jacobi-scaled
    # coordinates C = S⁻¹ G S⁻¹ (S = diag of the norms; 1 for a zero gradient)
    norm = torch.where(diag > 0, diag.sqrt(), 1.0)  # [R, T]
    unit = (g / (norm.unsqueeze(2) * norm.unsqueeze(1))).reshape(R, T * T).t().contiguous()  # [T·T, R]
    norm_t, h_t, present_t = norm.t().contiguous(), h.t().contiguous(), present.t().contiguous()
    for k in range(2, T + 1):
        cols = torch.tensor(list(itertools.combinations(range(T), k)), device=dev).t()  # [k, C]
        n_sup = cols.shape[1]
        n = n_sup * R
        m = unit.index_select(0, (cols.unsqueeze(1) * T + cols.unsqueeze(0)).reshape(-1)).view(k, k, n)
        s_norm = norm_t.index_select(0, cols.reshape(-1)).view(k, n)
        s_h = h_t.index_select(0, cols.reshape(-1)).view(k, n)
        valid = present_t.index_select(0, cols.reshape(-1)).view(k, n).all(dim=0)
        s_phi = phi.repeat(n_sup)
        inv_norm = 1.0 / s_norm
        x = _refined_solve(m, torch.stack([inv_norm, s_h * inv_norm], dim=1))  # [k, 2, n]
        p, q = x[:, 0] * inv_norm, x[:, 1] * inv_norm  # G_SS⁻¹ 1, G_SS⁻¹ h: [k, n]
        a_ = p.sum(dim=0)  # 1ᵀG⁻¹1 = 1 / ‖g_{w_a}‖²
        b_ = q.sum(dim=0)  # 1ᵀG⁻¹h
        c_ = (s_h * q).sum(dim=0)  # hᵀG⁻¹h
        lam = (b_.square() - a_ * (c_ - s_phi)).clamp(min=0.0).sqrt()  # √φ / ‖g_w‖ at the stationary point
        # both candidates side by side, [k, 2, n]: the face's affine min-norm point p / A, and the stationary
        # point of F on its affine hull ((B + λ)/A p − q) / λ. A division by 0 (A = 0, λ = 0) gives inf or
        # NaN, which the bounds below reject (NaN fails every comparison)
        w_a = p / a_
        cand = torch.stack([w_a, (w_a * (b_ + lam) - q) / lam], dim=1)
        usable = valid & ((cand >= _FEASIBLE) & (cand <= 1.0 - _FEASIBLE)).all(dim=0)  # [2, n]
        cand = torch.where(usable, cand.clamp(min=0.0), 0.0)
        cand = cand / cand.sum(dim=0).clamp(min=torch.finfo(cand.dtype).tiny)
        scaled = cand * s_norm.unsqueeze(1)
        quad = ((m.unsqueeze(2) * scaled.unsqueeze(0)).sum(dim=1) * scaled).sum(dim=0)
        f = (cand * s_h.unsqueeze(1)).sum(dim=0) + s_phi.sqrt() * quad.clamp(min=0.0).sqrt()
        f_best, j = f.masked_fill(~usable, float("inf")).view(2 * n_sup, R).min(dim=0)  # [R]
        better = f_best < best_f
        pick = cand.view(k, 2 * n_sup, R).gather(1, j.view(1, 1, R).expand(k, 1, R)).squeeze(1).t()  # [R, k]
        full = torch.zeros(R, T, dtype=torch.float64, device=dev).scatter_(1, cols.t()[j % n_sup], pick)
        best_w = torch.where(better.unsqueeze(1), full, best_w)
        best_f = torch.where(better, f_best, best_f)
    return torch.where(present, best_w, 0.0), g


def cagrad_coefficients(gram: Tensor, present: Tensor, c: float, rescale: int, eps: float) -> Tensor:
    """CAGrad's coefficients [R, T] (float64): ``d = g_0 + (√φ/‖g_w*‖) g_w*``, divided by 1, ``1 + c²`` or
    ``1 + c`` (``rescale`` 0, 1, 2). ``eps``: the gradients' compute-dtype epsilon (the zero-norm test)."""
    w, g = cagrad_simplex_weights(gram, present, c)
    b = safe_div(present.to(torch.float64), present.sum(dim=1, keepdim=True).to(torch.float64))
    diag = torch.diagonal(g, dim1=1, dim2=2).clamp(min=0.0)
    sqrt_phi = c * (b * (g @ b.unsqueeze(2)).squeeze(2)).sum(dim=1).clamp(min=0.0).sqrt()  # [R]
    rho2 = (w * (g @ w.unsqueeze(2)).squeeze(2)).sum(dim=1)
    spread = (w * diag.sqrt()).sum(dim=1)  # Σ w_t ‖g_t‖ ≥ ‖g_w‖
    zero = rho2 <= _ZERO_NORM * eps * spread.square()  # Pareto-stationary: 0 in the hull at the optimum
    lam = safe_div(sqrt_phi, rho2.clamp(min=0.0).sqrt())
    coefficients = torch.where(zero.unsqueeze(1), 0.0, b + lam.unsqueeze(1) * w)
    return coefficients / (1.0, 1.0 + c * c, 1.0 + c)[rescale]


@dataclass(frozen=True)
class CAGrad(Aggregator):
    """CAGrad: the mean gradient plus the step towards the worst task's improvement within radius c‖g_0‖."""

    c: float = option(0.4, low=0.0, high=10.0, help="radius of the ball around g_0, × ‖g_0‖ (paper: 0.4)")
    rescale: int = option(
        0, low=0, high=2, help="output scale: 0 none (torchjd), 1 /(1+c²) (LibMTL's default), 2 /(1+c)"
    )

    name: ClassVar[str] = "cagrad"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "mean gradient moved within radius c‖g_0‖ to maximise the worst task's improvement"
    )
    paper: ClassVar[str] = (
        "Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021"
    )
    identity_on_single_task: ClassVar[bool] = False  # one task: d = (1 + c) g before rescaling

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        dtype = compute_dtype(grads.values.dtype)
        gram, keep = finite_gram(grads)
        eps = torch.finfo(dtype).eps
        coefficients = cagrad_coefficients(gram, grads.present, float(self.c), int(self.rescale), eps)
        return Weights(torch.where(keep, coefficients, 0.0).to(dtype), state)
