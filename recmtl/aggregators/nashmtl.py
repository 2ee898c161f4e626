"""Nash-MTL (``nashmtl``): the Nash bargaining solution between the tasks' gradients.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, "Multi-Task Learning as a Bargaining
Game", ICML 2022 (arXiv:2202.01017), Algorithm 1; torchjd ``NashMTL`` (adapted from the authors' code).

With task gradients g_t (rows of J), Gram ``G = J Jᵀ``, the update is ``Δθ = Jᵀα`` where α > 0 solves

    G α = 1 / α      (element-wise: α_t (G α)_t = 1 for every task t),

the Nash bargaining solution of the tasks (the direction maximising Σ_t log <g_t, d> in a ball, up to
scale). Then, as in the paper's code, the update is clipped: if ``‖Jᵀα‖ = sqrt(αᵀGα) > max_norm`` (> 0),
α ← α · max_norm / ‖Jᵀα‖.

How we solve it (torchjd and the paper iterate a convex-concave procedure with cvxpy/ECOS on one Gram;
ours is a batched pure-torch solver over [R, T, T], :func:`nash_weights`):

- The solution is covariant under per-task scaling (g_t → c_t g_t gives α_t → α_t / c_t and the same
  update), so we solve on the task-correlation matrix ``C = D^-½ G D^-½`` (unit diagonal, ``D = diag G``):
  ``C β = 1/β``, ``α_t = β_t / ‖g_t‖``. Scale-free, whatever the gradients' norms.
- ``C β = 1/β`` is the stationarity condition of the convex ``½ βᵀCβ − Σ_t log β_t``. Where no Nash
  solution exists (exactly conflicting gradients, i.e. some v ≥ 0, v ≠ 0 with Cv = 0: g and −g, or more
  tasks than dimensions) that function is unbounded below and β would grow without end, so we add the
  penalty ``ε/4 Σ_t β_t⁴`` (``cap`` ε, ours, default 1e-8): ``f(β) = ½ βᵀCβ + ε/4 Σ β_t⁴ − Σ log β_t``,
  strictly convex and self-concordant, whose minimiser solves ``β_t (Cβ)_t = 1 − ε β_t⁴``. On a regular
  case (β ~ 1) that moves α by ~ε = 1e-8 relative; on an exact conflict it caps β at ~ε^-¼ = 100 (g and
  −g: β = (100, 100), update 0). A plain ridge ``ε' β²/2`` does the same with a bias ε' on every case;
  capping at 100 with it would need ε' = 1e-4. The cap matters: the update of an exact conflict is a
  cancellation of terms of size ~β·‖g‖, so its rounding grows with β.
- ``optim_niter`` Newton steps from β = 1 (one unrolled batched Cholesky solve of
  ``C + diag(1/β² + 3εβ²)`` each): the full step, shortened to 0.99 of the largest one keeping β > 0, is
  taken where it lowers f, else the damped step ``1/(1 + λ)`` (λ the Newton decrement), which for a
  self-concordant f stays in β > 0 and lowers f by at least ``λ − log(1 + λ)``.
- Iterations (default ``optim_niter = 20``, the number torchjd uses for its own, different, iteration):
  Newton converges quadratically on well-conditioned cases in ~5-8 steps; exact conflicts first double β
  up to the cap (~7 steps). On random cases (T ≤ 8, norms over 8 orders of magnitude, D from 1 to 3T,
  duplicated and opposite gradients) the residual ``max_t |α_t (Gα)_t − 1 + ε β_t⁴|`` is below 1e-10
  after 12 steps; 20 leave margin. Cost: ~45-50 ms at R = 10⁴, T = 4 (one CPU thread), 20 × 2 ms.

Conventions that differ from torchjd's ``NashMTL``:

- torchjd's solver stops at a tolerance of ~1e-3 (and, on our checks, often stops far from the solution
  when the task norms differ by more than ~10×: its CCP stops on a change < 1e-6 of α in the normalised
  problem); ours converges to rounding. The oracle tests compare on well-conditioned cases only (norms
  within one order of magnitude, T ≤ D), where torchjd converged (its own Nash residual < 1e-4), with a
  tolerance from that residual.
- A task whose gradient is exactly zero has no direction to bargain for (its utility log <0, d> is −∞
  for every d): it is left out of the game and gets coefficient 0 (torchjd's ECOS fails on such a Gram
  and keeps its previous α). A row whose present gradients are all zero gets all zeros.
- A row whose present Gram is not finite (float32 gradients beyond ~1e19 overflow it) gets all zeros:
  no bounded update (max_norm) can be computed from it.
- torchjd's state also warm-starts its solver from the previous α; ours always starts from β = 1 (the
  solution is unique, the start only changes the speed).

State and modes:

- global mode (the paper's): the state is ``{"alpha": [T] float64, "step": [] int64}``, the previous
  weights (before clipping) and the number of calls, as torchjd's ``prvs_alpha`` and ``step``: α is
  recomputed when ``step % update_weights_every == 0`` and otherwise reused (masked to the present tasks,
  then clipped with the current Gram). It is saved with every checkpoint, so a resumed run reuses the
  same weights.
- per-row mode (ours): the same formula per touched row, **stateless**: α is recomputed for every row at
  every step (``init_state(..., mode="row")`` is empty and ``update_weights_every`` must be 1 there).
  Reason: ``update_weights_every`` only amortises the cvxpy solve of the paper, which the batched solver
  does not need, while a per-row cache would reuse, for a row touched again after many steps, weights
  computed on a gradient that is long gone. ``max_norm`` applies per row: each row's update has norm at
  most ``max_norm`` (with ≥ 2 non-conflicting tasks the Nash update of unit directions has norm ~sqrt(T),
  so rows are in practice normalised to ``max_norm``; the row optimiser (Adam) is scale-insensitive).

Not the identity on a single task: one task gets α = 1/‖g‖ (a unit update), not 1. Not scale equivariant
(the update ``Σ β_t g_t / ‖g_t‖`` does not scale with the gradients), hence its contract exemption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option
from recmtl.errors import ConfigError


def _masked_float64(gram: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
    """``gram`` [R, T, T] → (float64 [R, T, T] symmetrised, 0 outside the present block and on rows whose
    present block is not finite; finite [R] bool)."""
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)
    g = 0.5 * (g + g.transpose(1, 2))
    finite = torch.isfinite(g).all(dim=2).all(dim=1)
    return torch.where(finite.view(-1, 1, 1), g, 0.0), finite


def _spd_solve(h: Tensor, b: Tensor) -> Tensor:
    """``h⁻¹ b`` for symmetric positive definite ``h`` [T, T, R] (task-major) and ``b`` [T, R]: an unrolled
    Cholesky factorisation over the T ≤ ~8 tasks, every operation on [R] vectors (~3× faster than
    batched LAPACK ``solve_ex`` at R = 10⁴, T = 4). A pivot that is not positive (rounding on a singular
    matrix) is replaced by 1e-300 (the caller zeroes non-finite results)."""
    T = h.shape[0]
    low: list[list[Tensor]] = [[] for _ in range(T)]  # low[i][j], j ≤ i: the Cholesky factor
    for i in range(T):
        for j in range(i + 1):
            acc = h[i, j]
            for k in range(j):
                acc = acc - low[i][k] * low[j][k]
            low[i].append(acc.clamp(min=1e-300).sqrt() if i == j else acc / low[j][j])
    y: list[Tensor] = []
    for i in range(T):
        acc = b[i]
        for k in range(i):
            acc = acc - low[i][k] * y[k]
        y.append(acc / low[i][i])
    x: list[Tensor] = [b[0]] * T
    for i in reversed(range(T)):
        acc = y[i]
        for k in range(i + 1, T):
            acc = acc - low[k][i] * x[k]
        x[i] = acc / low[i][i]
    return torch.stack(x)


_CONVERGED = 1e-26  # Newton decrement² below which a row is solved (β then exact to ~1e-13)


def nash_weights(gram: Tensor, present: Tensor, *, iterations: int = 20, cap: float = 1e-8) -> Tensor:
    """The Nash bargaining weights α [R, T] float64 of every row: ``α_t (G α)_t = 1 − ε (α_t ‖g_t‖)⁴``
    (ε = ``cap``) over the present tasks with a non-zero gradient, 0 elsewhere (see the module docstring).

    ``gram`` [R, T, T], ``present`` [R, T] bool. Rows with no such task, or a non-finite present Gram,
    get all zeros. No clipping here (see :func:`clip_weights`).
    """
    g, finite = _masked_float64(gram, present)
    R, T = present.shape
    diag = torch.diagonal(g, dim1=1, dim2=2)
    active = present & (diag > 0) & finite.unsqueeze(1)  # [R, T]
    d = torch.where(active, diag, 1.0).sqrt()
    n_active = active.sum(dim=1)
    if bool((n_active == 1).any()):
        # a lone task solves β² + ε β⁴ = 1 in closed form (written without cancellation); Newton runs on the
        # rows where tasks meet only (on real data a small minority)
        lone = math.sqrt(2.0 / (1.0 + math.sqrt(1.0 + 4.0 * cap)))
        out = torch.where(active, lone / d, 0.0)
        rows = (n_active >= 2).nonzero().squeeze(1)
        if rows.numel():
            out[rows] = nash_weights(gram[rows], present[rows], iterations=iterations, cap=cap)
        return out
    both = active.unsqueeze(2) & active.unsqueeze(1)
    eye = torch.eye(T, dtype=torch.bool, device=gram.device)
    corr = (g / d.unsqueeze(2) / d.unsqueeze(1)).clamp(-1.0, 1.0)
    # unit diagonal on active tasks, identity rows/columns elsewhere (β_t stays 1 there, unused)
    c = torch.where(both & ~eye, corr, 0.0) + eye.to(torch.float64)
    # task-major layout: every operation below is on contiguous [R] or [T, R] slices
    c, one = c.permute(1, 2, 0).contiguous(), active.t().to(torch.float64).contiguous()  # [T, T, R], [T, R]
    beta = torch.ones(T, R, dtype=torch.float64, device=gram.device)
    for _ in range(iterations):
        cb = (c * beta.unsqueeze(0)).sum(dim=1)  # C β, [T, R]
        inv, b2 = 1.0 / beta, beta * beta
        grad = (cb + cap * b2 * beta - inv) * one
        hess = c.clone()
        hess.diagonal(dim1=0, dim2=1).add_((one * (inv * inv + 3.0 * cap * b2)).t())
        step = -_spd_solve(hess, grad)
        step = torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0) * one  # a guard: never seen
        # Newton decrement λ² = ΔᵀHΔ = −∇fᵀΔ. The full step (shortened to keep β > 0) is taken where it
        # lowers f, else the damped step 1/(1 + λ), which for this self-concordant f stays in β > 0 and
        # lowers f by at least λ − log(1 + λ). With r = sΔ/β, f(β + sΔ) − f(β) = s Δᵀ(Cβ) + ½ s² ΔᵀCΔ
        # + ε/4 Σ β⁴ r (4 + 6r + 4r² + r³) − Σ log(1 + r), ΔᵀCΔ = λ² − Σ Δ² (1/β² + 3εβ²); written in
        # r and log1p it stays accurate near the optimum, where the change is below the rounding of f.
        ratio = step * inv
        decrement2 = -(grad * step).sum(dim=0)
        quad = decrement2 - (step * step * (inv * inv + 3.0 * cap * b2) * one).sum(dim=0)
        lin = (step * cb).sum(dim=0)
        bound = torch.where(ratio < 0, -1.0 / ratio, float("inf")).amin(dim=0)
        full = (0.99 * bound).clamp(max=1.0)
        r = full * ratio
        quartic = (b2 * b2 * r * (4.0 + r * (6.0 + r * (4.0 + r))) * one).sum(dim=0)
        change = full * lin + 0.5 * full * full * quad + 0.25 * cap * quartic
        change = change - (torch.log1p(r) * one).sum(dim=0)
        damped = 1.0 / (1.0 + decrement2.clamp(min=0.0).sqrt())
        beta = beta + torch.where(change < 0, full, damped) * step
        if bool((decrement2 <= _CONVERGED).all()):  # Newton's quadratic convergence: every row is done
            break
    return torch.where(active, beta.t() / d, 0.0)


def clip_weights(alpha: Tensor, gram: Tensor, present: Tensor, max_norm: float) -> Tensor:
    """α [R, T] scaled per row so that ``‖Σ_t α_t g_t‖ = sqrt(αᵀGα) ≤ max_norm`` (0: no clipping)."""
    if max_norm <= 0:
        return alpha
    g, _ = _masked_float64(gram, present)
    norm = ((g * alpha.unsqueeze(1)).sum(dim=2) * alpha).sum(dim=1).clamp(min=0.0).sqrt()
    factor = torch.where(norm > max_norm, safe_div(torch.full_like(norm, max_norm), norm), 1.0)
    return alpha * factor.unsqueeze(1)


@dataclass(frozen=True)
class NashMTL(Aggregator):
    """Nash-MTL (see the module docstring)."""

    max_norm: float = option(1.0, low=0.0, help="clip the update's norm ‖Jᵀα‖ to this (0: no clipping)")
    update_weights_every: int = option(
        1, low=1, help="recompute α every this many steps, else reuse it (global mode; row mode: 1)"
    )
    optim_niter: int = option(20, low=1, high=1000, help="Newton iterations of the batched Nash solver")
    cap: float = option(
        1e-8,
        low=0.0,
        high=1.0,
        low_open=True,
        help="[ours] ε of the penalty ε/4 Σ β⁴ that bounds α on conflicts",
    )

    name: ClassVar[str] = "nashmtl"
    summary: ClassVar[str] = (
        "Nash bargaining between the tasks: weights α with α_t <g_t, Σ_s α_s g_s> = 1, update clipped"
    )
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    paper: ClassVar[str] = "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022"
    # one task: α = 1/‖g‖ (a unit update), not 1
    identity_on_single_task: ClassVar[bool] = False

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        if mode != "global":
            return {}
        return {
            "alpha": torch.ones(n_tasks, dtype=torch.float64),
            "step": torch.zeros((), dtype=torch.int64),
        }

    def check_mode(self, mode: str) -> None:
        if mode == "row" and self.update_weights_every != 1:
            raise ConfigError(
                f"nashmtl: update_weights_every={self.update_weights_every} needs the global mode "
                "(per-row mode recomputes the weights at every step)"
            )

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        present, gram = grads.present, grads.gram()
        alpha = nash_weights(gram, present, iterations=self.optim_niter, cap=self.cap)
        if "alpha" in state:  # global mode: torchjd's prvs_alpha and step
            alpha, state = self._recompute_or_reuse(alpha, present, state)
        else:
            self.check_mode("row")
        alpha = clip_weights(alpha, gram, present, self.max_norm)
        return Weights(alpha.to(compute_dtype(grads.values.dtype)), state)

    def _recompute_or_reuse(self, fresh: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        """Global mode: the weights ``fresh`` [1, T] at every ``update_weights_every``-th call (counting
        from 0), else the previous ones masked to the present tasks; and the new state. (The solve runs at
        every call anyway: at R = 1 it costs ~1 ms, and the choice stays a tensor operation.)"""
        if present.shape[0] != 1:
            raise ValueError(f"nashmtl: the global-mode state needs one row, got {present.shape[0]}")
        step, previous = state["step"], state["alpha"].to(fresh)
        recompute = step % self.update_weights_every == 0
        alpha = torch.where(recompute, fresh, torch.where(present, previous.unsqueeze(0), 0.0))
        return alpha, {"alpha": torch.where(recompute, fresh[0], previous), "step": step + 1}
