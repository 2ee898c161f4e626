"""GradCraft: magnitude balancing, then simultaneous deconfliction of each task's gradient (METHODS.md §5).

Bai, Zhang, Feng, Lu, Zang, Lei, Song, "GradCraft: Elevating Multi-task Recommendations through Holistic
Gradient Crafting", KDD 2024 (arXiv:2407.19682; code: github.com/baiyimeng/GradCraft,
``solvers/global_pc_grad_magnitude_positive.py``).

For task gradients g_t with norms n_t over the present tasks A, M = max_{t∈A} n_t:

1. Magnitude: ``ĝ_t = ((1 − τ) + τ · M / n_t) · g_t`` (factor ≥ 1: gradients are only scaled up; τ = 0
   switches the step off, τ = 1 brings every norm to M).
2. Direction, for each task i independently: the conflict set ``C_i = {j : <ĝ_i, ĝ_j> < 0}``, A_i the
   matrix whose rows are ĝ_j, j ∈ C_i, ``b_ij = ε ‖ĝ_i‖ ‖ĝ_j‖`` and

       λ_i = (A_i A_iᵀ)⁻¹ (b_i − A_i ĝ_i),    g̃_i = ĝ_i + A_iᵀ λ_i,

   so that ``<g̃_i, ĝ_j> = ε ‖ĝ_i‖ ‖ĝ_j‖`` for every j ∈ C_i, all at once (ε = 0: g̃_i is orthogonal to all
   of them; note the constraint uses ‖ĝ_i‖, so cos(g̃_i, ĝ_j) = ε ‖ĝ_i‖ / ‖g̃_i‖). With one conflict and
   ε = 0 this is PCGrad's projection.
3. Output: the mean ``(1/|A|) Σ_{i∈A} g̃_i`` (a mean, not PCGrad's / torchjd's sum).

Gram form (how it is computed). Everything depends only on the T×T Gram: with unit vectors u_t = g_t / n_t
and the cosine Gram ``K_ij = <u_i, u_j>`` (which step 1 leaves unchanged, its factors being positive),
step 2 becomes ``μ_i = (K_CC + ρI)⁻¹ (ε 1 − K_{C,i})``, ``g̃_i = ‖ĝ_i‖ (u_i + Σ_{j∈C_i} μ_ij u_j)``
(λ_ij = ‖ĝ_i‖ μ_ij / ‖ĝ_j‖), hence the coefficients ``c_k = (1/|A|) Σ_i s_i n_i Q_ik / n_k`` with
s_i the step-1 factor and ``Q = I + μ``. The T conflict systems of all rows are solved together in
float64: those with |C_i| ≤ 2 (most) in closed form, the others as one batch of masked [N, T, T] systems
by :func:`~recmtl.aggregators._math.ridge_solve` (N of the R·T (row, task) pairs); no loop over rows.

Conventions and readings:

- ε (``epsilon``, default 1e-10): METHODS.md gives no value; the authors' example run (``main.py``) uses
  ``e = 1e-10`` with ``r = τ = 0.1`` (its tuning grid is {1e-10, 1e-9, 1e-8}; its bare ``Config``
  default is 0).
- The paper's code measures norms with an optional moving average (``b``), set to 0 (off) in every run:
  we use this step's norms, as the paper's formula does.
- ``ridge`` ρ (default 1e-10) is added to each conflict set's cosine Gram (unit diagonal, so ρ is
  relative): it moves a regular solution by ~ρ·cond relative, far below the ~1e-7 noise of cosines from
  float32 gradients, so the reduction to PCGrad and the ε constraints hold to that level (exactly with
  ρ = 0, the paper's plain inverse).
- Singular systems [reading]: the paper inverts A_i A_iᵀ, which does not exist when the conflicting
  gradients are linearly dependent (duplicate gradients, D < T). Where a (row, task) system is flagged
  (condition number of the ridged cosine block above 1e8, ``ridge_solve``'s test, which the closed forms
  reproduce; or a failed solve) that task's crafted gradient is PCGrad's instead
  (:func:`~recmtl.aggregators._math.conflict_projection_in_order` on the magnitude-balanced gradients,
  ε ignored), projecting onto the other tasks from the most conflicting (lowest cosine) to the least: an
  order fixed by the data, so the result does not depend on how tasks are numbered (ties aside), and
  uses no randomness. For duplicated conflicting gradients this is the exact solution (the constraints
  coincide).
- Zero gradients (n_t = 0) conflict with nothing and keep factor 1 (their coefficient is irrelevant);
  a present task with a zero gradient still counts in the mean's divisor |A|. (The paper's code, global,
  treats a parameter without gradient as absent; per-row presence plays that role here.)
- Per-row mode (ours): the same formula on each touched row's [T, D] gradients. There M / n_t is unbounded
  (a task that barely touches a row), so the factor is capped at ``max_scale`` (default 100). Global mode
  (R' = 1, the paper's setting; ``TaskGrads.mode`` or ``StepInfo.mode`` "global") applies no cap, as
  the paper; a coefficient beyond its dtype's range (norm ratios ≳ 1e37 for float32) is clamped to it
  rather than becoming inf.
- The cosine Gram and the norms come from a float64 Gram of the gradients (:func:`cosine_gram`), not
  from ``TaskGrads.gram()``: a float32 Gram overflows for norms ≳ 1e19, underflows for norms ≲ 1e-19, and
  its ~1e-7 error makes exactly dependent gradients look solvable. Gradients anywhere in float32's range
  (1e-30, 1e30) are handled exactly. It reads the dense view ``gram()`` would build anyway, at the cost
  of one float64 copy of it.
- Logged task weights: the coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators import _math
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option


def cosine_gram(dense: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine Gram and norms of every row's task gradients, safe over the dtype's whole range.

    ``dense`` [R, T, D], ``present`` [R, T] bool → ``(K [R, T, T], n [R, T])`` in float64: ``K_ij`` the
    cosine of g_i and g_j (symmetric, in [-1, 1], diagonal exactly 1 for non-zero gradients; rows/columns
    of absent tasks and zero gradients 0) and ``n_t = ‖g_t‖`` (0 where absent).

    The Gram is taken in float64 whatever the input dtype. For float32 (and narrower) input this is exact
    up to 1e-16 relative (products of float32 numbers are exact in float64) and cannot over- or underflow
    (squares of float32 values stay within 1e±90). Hence linearly dependent gradients (duplicates, D < T)
    give singular blocks that the condition test catches, where a float32 Gram (error ~1e-7) would make
    them look merely ill-conditioned (condition ~1e7) and solvable; and norms 1e-30 or 1e30 are handled
    exactly. Float64 input is first divided by each gradient's largest |entry| (its squares could leave the
    range).
    """
    g = dense.to(torch.float64)
    peak = None
    if dense.dtype == torch.float64:
        peak = g.abs().amax(dim=2, keepdim=True)  # [R, T, 1]
        g = _math.safe_div(g, peak)  # entries in [-1, 1]
    gram = _math.gram(g, present)  # float64, symmetrised, 0 for absent tasks
    length = torch.diagonal(gram, dim1=1, dim2=2).sqrt()  # [R, T]
    nonzero = present & (length > 0)
    k = _math.safe_div(gram, length.unsqueeze(2) * length.unsqueeze(1)).clamp(-1.0, 1.0)
    eye = torch.eye(k.shape[1], dtype=torch.bool, device=k.device)
    k = torch.where(eye, nonzero.unsqueeze(2).to(k.dtype), k)
    norms = length if peak is None else length * peak.squeeze(2)
    return k, torch.where(nonzero, norms, 0.0)


def magnitude_factors(norms: Tensor, present: Tensor, tau: float, max_scale: float | None) -> Tensor:
    """Step 1: ``s_t = (1 − τ) + τ · M / n_t`` [R, T] (float64) from ``norms`` [R, T] and ``present``.

    M is the row's largest present norm; s_t = 1 where n_t = 0 (a zero gradient: any factor gives the same
    vector); capped at ``max_scale`` when it is not None; 0 for absent tasks. Never inf: a float64 ratio
    beyond range is clamped to the largest finite value.
    """
    norms = norms.to(torch.float64)
    top = norms.masked_fill(~present, 0.0).amax(dim=1, keepdim=True)
    s = (1.0 - tau) + tau * _math.safe_div(top, norms)
    s = torch.where(norms > 0, s, 1.0).clamp(max=torch.finfo(torch.float64).max)
    if max_scale is not None:
        s = s.clamp(max=max_scale)
    return torch.where(present, s, 0.0)


#: condition-number bound above which a conflict system counts as singular (``ridge_solve``'s default)
MAX_CONDITION = 1e8


def _small_systems(
    cosines: Tensor, conflict: Tensor, *, epsilon: float, ridge: float
) -> tuple[Tensor, Tensor]:
    """The conflict systems with |C_i| ≤ 2 in closed form: what :func:`_math.ridge_solve` returns for them.

    ``cosines`` [R, T, T] float64 (unit diagonal), ``conflict`` [R, T, T] bool (``C_i`` = row i) →
    ``(μ [R, T, T], ok [R, T])``, meaningful only where |C_i| ≤ 2. The ridged block is ``a = 1 + ρ`` (ρ is
    relative to the block's unit diagonal, as in ``ridge_solve``): one conflict j gives ``μ_j = r_j / a``;
    two, j and k with ``c = K_jk``, give ``μ = (a r_j − c r_k, a r_k − c r_j) / ((a − |c|)(a + |c|))``,
    flagged where the condition number ``(a + |c|) / (a − |c|)`` exceeds :data:`MAX_CONDITION` (a zero
    denominator included); ``r_j = ε − K_ij``. One conflict is never flagged.
    """
    R, T, _ = cosines.shape
    first = (~conflict).to(torch.int8).argsort(dim=2, stable=True)[:, :, :2]  # conflicts first, [R, T, 2]
    j, k = first[:, :, 0], first[:, :, -1]  # T = 1: k = j (and μ_k = 0)
    size = conflict.sum(dim=2)
    r_j = epsilon - cosines.gather(2, j.unsqueeze(2)).squeeze(2)  # ε − K_ij
    r_k = epsilon - cosines.gather(2, k.unsqueeze(2)).squeeze(2)
    c = cosines.gather(1, j.unsqueeze(2).expand(R, T, T)).gather(2, k.unsqueeze(2)).squeeze(2)  # K_jk
    a = 1.0 + ridge
    low, high = a - c.abs(), a + c.abs()  # the 2×2 block's eigenvalues
    ok2 = (low > 0) & (high <= MAX_CONDITION * low)
    det = torch.where(ok2, low * high, 1.0)
    mu_j = torch.where(size == 2, (a * r_j - c * r_k) / det, r_j / a)
    mu_k = torch.where(size == 2, (a * r_k - c * r_j) / det, 0.0)
    ok = (size < 2) | (ok2 & torch.isfinite(mu_j) & torch.isfinite(mu_k))
    mu = torch.zeros_like(cosines).scatter(2, j.unsqueeze(2), mu_j.unsqueeze(2))
    mu = mu.scatter_add(2, k.unsqueeze(2), mu_k.unsqueeze(2))
    return torch.where(conflict & ok.unsqueeze(2), mu, 0.0), ok


def craft_directions(
    cosines: Tensor, present: Tensor, *, epsilon: float, ridge: float
) -> tuple[Tensor, Tensor]:
    """Step 2 in unit-vector form, every row and every task at once.

    ``cosines`` [R, T, T] (the cosine Gram K of :func:`cosine_gram`), ``present`` [R, T] bool →
    ``(Q [R, T, T], solved [R, T])`` in float64 with the crafted direction of task i
    ``ũ_i = Σ_k Q[r, i, k] u_k`` (u_k the unit gradients), so ``g̃_i = ‖ĝ_i‖ ũ_i``:

    - ``C_i = {j : K_ij < 0}`` (zero gradients: never), ``μ_i = (K_CC + ρI)⁻¹ (ε 1 − K_{C,i})`` on C_i, 0
      elsewhere, ``Q[i] = e_i + μ_i``. Systems with |C_i| ≤ 2 (most of them) are solved in closed form
      (:func:`_small_systems`), the others as one batch of masked [N, T, T] systems by
      :func:`_math.ridge_solve` (N = the number of such (row, task) pairs);
    - where a system is flagged singular (``solved`` False), ``Q[i]`` is PCGrad's projection of u_i instead
      (:func:`_math.conflict_projection_in_order`, projecting onto the most conflicting task first),
      computed for the rows that have such a system only;
    - rows of Q for absent tasks are 0; a task without conflict keeps ``Q[i] = e_i``.
    """
    R, T = present.shape
    k = cosines.to(torch.float64)
    nonzero = present & (torch.diagonal(k, dim1=1, dim2=2) > 0)
    conflict = (k < 0) & nonzero.unsqueeze(2) & nonzero.unsqueeze(1)  # [R, i, j]; K_ii ≥ 0: i ∉ C_i
    mu, solved = _small_systems(k, conflict, epsilon=epsilon, ridge=ridge)

    large = (conflict.sum(dim=2) > 2).view(-1).nonzero().squeeze(1)  # (r, i) pairs as r·T + i, [N]
    flat_conflict = conflict.view(R * T, T).index_select(0, large)
    rhs = (epsilon - k).view(R * T, T).index_select(0, large)  # row (r, i): ε − K[r, i, j]
    mu_large, ok_large = _math.ridge_solve(
        k.index_select(0, large // T), rhs, flat_conflict, ridge=ridge, max_condition=MAX_CONDITION
    )
    mu = mu.view(R * T, T).index_copy(0, large, mu_large).view(R, T, T)
    solved = (solved.view(-1).index_copy(0, large, ok_large).view(R, T)) | ~present
    crafted = torch.diag_embed(present.to(torch.float64)) + mu

    failed = (~solved).any(dim=1).nonzero().squeeze(1)  # rows with a singular system, [F]
    k_failed = k.index_select(0, failed)
    order = k_failed.argsort(dim=2, stable=True)  # per (r, i): the most conflicting task first
    projected = _math.conflict_projection_in_order(k_failed, present.index_select(0, failed), order)
    fixed = torch.where(
        solved.index_select(0, failed).unsqueeze(2), crafted.index_select(0, failed), projected
    )
    q = crafted.index_copy(0, failed, fixed)
    return torch.where(present.unsqueeze(2), q, 0.0), solved


def gradcraft_coefficients(
    cosines: Tensor,
    norms: Tensor,
    present: Tensor,
    *,
    tau: float,
    epsilon: float,
    ridge: float,
    max_scale: float | None,
) -> Tensor:
    """The coefficients c [R, T] (float64) with ``update = Σ_k c_k g_k`` = the mean of the crafted g̃_i.

    ``c_k = (1/|A|) Σ_{i∈A} s_i n_i Q_ik / n_k`` (Q_kk's term is s_k; 0 for absent k; all 0 for a row with
    no present task), from ``cosines`` [R, T, T] and ``norms`` [R, T] of :func:`cosine_gram`.
    """
    s = magnitude_factors(norms, present, tau, max_scale)
    q, _ = craft_directions(cosines, present, epsilon=epsilon, ridge=ridge)
    ratio = _math.safe_div(norms.unsqueeze(2), norms.unsqueeze(1))  # n_i / n_k, [R, i, k]
    w = torch.where(q != 0, s.unsqueeze(2) * ratio * q, 0.0)  # no inf · 0
    eye = torch.eye(present.shape[1], dtype=torch.bool, device=present.device)
    w = torch.where(eye, torch.diag_embed(s), w)  # Q_ii = 1: the term of ĝ_i itself, s_i g_i
    big = torch.finfo(torch.float64).max
    total = w.clamp(-big, big).sum(dim=1).clamp(-big, big)
    c = _math.safe_div(total, present.sum(dim=1, keepdim=True).to(total.dtype))
    return torch.where(present, c, 0.0)


@dataclass(frozen=True)
class GradCraft(Aggregator):
    """GradCraft (see the module docstring)."""

    tau: float = option(0.1, low=0.0, high=1.0, help="magnitude τ: factor (1-τ) + τ·max_norm/norm (0: off)")
    epsilon: float = option(
        1e-10, low=0.0, high=1.0, help="ε: target <g̃_i, ĝ_j> = ε‖ĝ_i‖‖ĝ_j‖ for conflicts (0: orthogonal)"
    )
    ridge: float = option(1e-10, low=0.0, high=1.0, help="ridge ρ on each conflict set's cosine Gram")
    max_scale: float = option(
        100.0, low=1.0, help="per-row mode (ours): cap on the magnitude factor (paper, global: no cap)"
    )

    name: ClassVar[str] = "gradcraft"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "task gradients raised towards the largest norm, each then deconflicted against all the others at "
        "once; their mean"
    )
    paper: ClassVar[str] = (
        "Bai et al., GradCraft: Elevating Multi-task Recommendations through Holistic Gradient Crafting, "
        "KDD 2024 (arXiv:2407.19682)"
    )
    # one present task: M = n, factor 1, no conflict, mean over one: c = 1 (also for a zero gradient)
    identity_on_single_task: ClassVar[bool] = True

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        present = grads.present
        paper_setting = grads.mode == "global" or info.mode == "global"  # either says global: no cap
        cosines, norms = cosine_gram(grads.dense, present)
        c = gradcraft_coefficients(
            cosines,
            norms,
            present,
            tau=float(self.tau),
            epsilon=float(self.epsilon),
            ridge=float(self.ridge),
            max_scale=None if paper_setting else float(self.max_scale),
        )
        out = _math.compute_dtype(grads.values.dtype)
        big = torch.finfo(out).max
        return Weights(c.clamp(-big, big).to(out), state)
