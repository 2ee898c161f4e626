"""FairGrad (``fairgrad``): α-fair allocation of the update among the tasks (METHODS.md §6).

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (arXiv:2402.15638), Algorithm 1 /
Eq. 4; torchjd ``FairGrad``. With task gradients g_t, Gram ``G_st = <g_s, g_t>`` and the fairness parameter
a (``alpha``; the paper's α, not to be confused with the weights), the update is ``d = Σ_t w_t g_t`` where the
weights w > 0 solve

    G w = w^{-1/a}          (componentwise: <g_t, d> = w_t^{-1/a} for every task t),

i.e. task t gets the progress rate ``<g_t, d> = w_t^{-1/a}``, the α-fair allocation. a = 1 is proportional
fairness, a → ∞ approaches max-min fairness; a = 0 is linear scalarisation, where (as torchjd does) the
weights are uniform ``1/|A|`` over the present tasks A. Default a = 1 (the authors' code's default; torchjd
has none; the authors' experiment scripts use other values, e.g. 2 on QM9).

Solver. The equation is the stationarity condition of the strictly convex

    F(w) = ½ wᵀ G w − Σ_t φ(w_t),   φ(w) = w^{1−1/a} / (1 − 1/a)  (log w when a = 1),

so it has at most one solution, and one exists iff F attains its minimum (e.g. none when two gradients are
exactly opposite: then no direction gives every task positive progress). We minimise F by damped Newton in
log-space, batched over the rows where ≥ 2 tasks meet (a row with one gets its closed form, below), in
float64 on the Gram divided by its largest diagonal entry (the solution of ``sG`` is ``s^{-a/(a+1)}`` times
that of G, applied exactly afterwards):

- x = log w, starting from the solution for orthogonal gradients, ``w_t = G_tt^{-a/(a+1)}``;
- Newton direction ``Δw = −(G + diag(w^{-1/a-1}) / a)⁻¹ (G w − w^{-1/a})``, taken as the step ``Δw / w``
  in x (a descent direction of F that agrees with Newton to first order: quadratic convergence near the
  solution);
- the step is shortened to a per-row trust radius (4 in every coordinate of x at the start; doubled after
  an accepted step, a quarter of the step after a rejected one) and accepted where it meets Armijo's
  condition on F; ``iterations`` (20) fixed iterations.

On random solvable cases (T ≤ 5, D from T−1, norms over 6 orders of magnitude, a ∈ [0.1, 10]) the fixed
point holds to ~1e-12 relative after 8–17 iterations, while torchjd's scipy ``least_squares`` (default
tolerances, start 1/T) often stops far from it when the norms differ by more than ~2 orders of magnitude.

Rows without a solution. Where no direction gives every present task positive progress (0 in the convex hull
of the gradients: opposite or positively dependent gradients, only possible when they are linearly
dependent, e.g. D < T), F is unbounded below: the iterates drift (w → ∞) while the update Σ w_t g_t tends
to 0, until rounding stops them. A row counts as solved where, on every present task, ``|G w − w^{-1/a}| ≤
1e-8 (|G| w + w^{-1/a})`` and the progress ``w^{-1/a}`` exceeds 1e-12 of ``|G| w + w^{-1/a}`` (the terms it is
computed from; below that it is rounding noise); every other row gets coefficients 0 (its limit update, and
a safe fallback for a row not converged in ``iterations``). On the random cases above no solved row is
lost. The iterates stay finite: |log w| ≤ 300 and a step that fails Armijo's test (or a failed solve) is not
taken. No scipy.

Conventions and readings:
- output ``Σ_t w_t g_t`` with the raw weights, as torchjd does; the authors' code multiplies it by T "to
  match the sum loss" and then clips the shared gradient's norm to 1 (neither is done here);
- a task whose gradient is exactly 0 (Gram diagonal 0, e.g. a float32 gradient of norm < 1e-19) would need
  w_t = ∞; it gets coefficient 0 and the others are solved without it (its gradient adds nothing anyway);
- a row whose Gram has a non-finite present entry (float32 gradients of norm > 1e19) gets all zeros;
- the weights are not scale-equivariant: gradients × k give weights × k^{-2a/(a+1)} and the update
  × k^{(1−a)/(1+a)} (a = 1: scale-invariant, every update has the same "size" in the fairness sense).

Per-row, ours: the same equation solved for each touched row's [T, D] gradients (row mode); global mode
(R = 1, all rows flattened) is the paper's and torchjd's. A row with one present task gets
``w = ‖g‖^{-2a/(a+1)}`` (a = 1: the unit vector ``g/‖g‖``), not its gradient, so this method is not the
identity on single-task rows. Logged task weights: the coefficients w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option

_RADIUS = 4.0  # initial trust radius of a step in log w (per coordinate)
_ARMIJO = 1e-4
_SOLVED = 1e-8  # a solved row: |G w − w^{-1/a}| ≤ _SOLVED · (|G| w + w^{-1/a}) on every task
_RESOLVED = 1e-12  # … and w^{-1/a} > _RESOLVED · (|G| w + w^{-1/a}): the progress is not rounding noise
_MAX_LOG = 300.0
_LOG_MAX_F64 = math.log(
    torch.finfo(torch.float64).max
)  # |log w| bound of the iterates (normalised Gram): e^{2·300}·T² stays far below 1e308


def _phi(x: Tensor, q: float) -> Tensor:
    """φ(e^x) = (e^{q x} − 1) / q with q = 1 − 1/a (x itself when q = 0), computed without cancellation."""
    return x if q == 0.0 else torch.expm1(q * x) / q


_CONVERGED = 1e-14  # relative residual at which the iterations stop early (all rows at once)


def fairgrad_weights(gram: Tensor, present: Tensor, alpha: float, *, iterations: int = 20) -> Tensor:
    """FairGrad's weights: the solution w > 0 of ``G w = w^{-1/a}`` over the present tasks of every row.

    ``gram`` [R, T, T], ``present`` [R, T] bool, ``alpha`` (a ≥ 0) → ``w`` [R, T] float64: 0 for absent
    tasks, for present tasks with a zero gradient and for rows with a non-finite present Gram entry;
    ``1/|A|`` on the present tasks when a = 0. See the module docstring for the method.
    """
    R, T = present.shape
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)  # where, not multiply: absent entries may be NaN
    finite = torch.isfinite(g).all(dim=(1, 2))
    g = torch.where(finite.view(R, 1, 1), 0.5 * (g + g.transpose(1, 2)), 0.0)
    if alpha == 0.0:
        uniform = present.to(torch.float64)
        return torch.where(finite.unsqueeze(1), uniform / uniform.sum(1, keepdim=True).clamp(min=1.0), 0.0)

    diag = torch.diagonal(g, dim1=1, dim2=2)
    active = present & (diag > 0) & finite.unsqueeze(1)
    # one active task: w = G_tt^{-a/(a+1)} in closed form; the solver runs only on the rows where ≥ 2 meet
    p = alpha / (alpha + 1.0)
    log_w = torch.where(active, -p * torch.log(torch.where(active, diag, 1.0)), 0.0)
    weights = torch.where(active, log_w.clamp(max=_LOG_MAX_F64).exp(), 0.0)
    meet = (active.sum(dim=1) > 1).nonzero().squeeze(1)
    solved = _solve(g.index_select(0, meet), active.index_select(0, meet), float(alpha), iterations)
    return weights.index_copy(0, meet, solved)


def _solve(g: Tensor, active: Tensor, alpha: float, iterations: int) -> Tensor:
    """The damped Newton solve of the module docstring: ``g`` [M, T, T] float64 (finite, symmetric, absent
    entries 0), ``active`` [M, T] (present with a positive diagonal) → w [M, T] (0 off ``active`` and on
    the rows found without a solution)."""
    R, T = active.shape
    diag = torch.diagonal(g, dim1=1, dim2=2)
    on = active.to(torch.float64)
    scale = (diag * on).amax(dim=1)
    scale = torch.where(scale > 0, scale, 1.0)
    # inactive tasks: Gram rows/columns 0 and x = dx = 0 throughout, so they add exactly 0 to F (φ(e^0) = 0)
    g = g * (on.unsqueeze(2) * on.unsqueeze(1)) / scale.view(R, 1, 1)
    diag = torch.diagonal(g, dim1=1, dim2=2).contiguous()

    a, q, p = alpha, 1.0 - 1.0 / alpha, alpha / (alpha + 1.0)

    def at(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """w = e^x, w^{-1/a}, G w, F(x) and the rounding scale of F, at the log-weights x [R, T]."""
        w = x.exp()
        gw = (g * w.unsqueeze(1)).sum(dim=2)  # inactive tasks: w = 1 but their Gram rows/columns are 0
        phi = _phi(x, q)  # 0 at inactive tasks (x = 0)
        quad = 0.5 * (w * gw).sum(dim=1)
        return w, torch.exp(-x / a), gw, quad - phi.sum(dim=1), 1e-14 * (quad.abs() + phi.abs().sum(dim=1))

    # start: the solution for orthogonal gradients, w_t = G_tt^{-a/(a+1)}
    x = -p * torch.log(torch.where(active, diag, 1.0))
    w, power, gw, f, noise = at(x)
    radius = torch.full_like(f, _RADIUS)
    for _ in range(iterations):
        residual = (gw - power) * on  # ∇F in w
        curvature = on * power / (a * w) + (1.0 - on)  # inactive tasks: identity rows of the system
        hess = g + torch.diag_embed(curvature)
        d = (diag + curvature).sqrt()  # Jacobi scaling (unit diagonal); = sqrt(diag(hess)), contiguous
        newton, info = torch.linalg.solve_ex(hess / (d.unsqueeze(2) * d.unsqueeze(1)), residual / d)
        dx = -newton / (d * w) * on  # the Newton step Δw, as a step in x = log w
        dx = torch.where(((info == 0) & torch.isfinite(dx).all(dim=1)).unsqueeze(1), dx, 0.0)
        size = dx.abs().amax(dim=1)
        step = torch.minimum(size, radius)
        dx = dx * safe_div(step, size).unsqueeze(1)  # at most `radius` in every coordinate
        trial = x + dx
        w_t, power_t, gw_t, f_t, noise_t = at(trial.clamp(-_MAX_LOG, _MAX_LOG))
        slope = (w * residual * dx).sum(dim=1)  # dF/dτ of F(x + τ dx) at τ = 0 (≤ 0)
        ok = (f_t <= f + noise + _ARMIJO * slope) & (trial.abs().amax(dim=1) <= _MAX_LOG)
        radius = torch.where(ok, torch.maximum(radius, 2.0 * step), 0.25 * step)
        keep = ok.unsqueeze(1)
        x, w, power, gw = (
            torch.where(keep, new, old) for new, old in ((trial, x), (w_t, w), (power_t, power), (gw_t, gw))
        )
        f, noise = torch.where(ok, f_t, f), torch.where(ok, noise_t, noise)
        terms = (g.abs() * w.unsqueeze(1)).sum(dim=2) + power
        if bool((((gw - power).abs() <= _CONVERGED * terms) | ~active).all()):
            break  # every row's equations hold to rounding: further Newton steps change nothing

    # a row is solved where every task's equation holds to _SOLVED relative to the size of its terms, and
    # every task's progress w_t^{-1/a} is resolvable (above _RESOLVED of the terms it is the difference of)
    terms = (g.abs() * w.unsqueeze(1)).sum(dim=2) + power
    residual = (gw - power).abs()
    solved = ((residual <= _SOLVED * terms) & (power > _RESOLVED * terms) | ~active).all(dim=1)
    # undo the normalisation: w(sG) = s^{-a/(a+1)} w(G), in log-space so no intermediate overflows
    log_w = x - p * torch.log(scale).unsqueeze(1)
    weights = log_w.clamp(max=_LOG_MAX_F64).exp()
    return torch.where(active & solved.unsqueeze(1), weights, 0.0)


@dataclass(frozen=True)
class FairGrad(Aggregator):
    """FairGrad: weights solving ``G w = w^{-1/a}`` (see the module docstring)."""

    alpha: float = option(
        1.0, low=0.0, high=100.0, help="fairness a: 0 uniform, 1 proportional (default), large → max-min"
    )
    iterations: int = option(20, low=1, high=1000, help="damped Newton iterations of the weight solve")

    name: ClassVar[str] = "fairgrad"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "weights w solving G w = w^(-1/a): every task gets an α-fair share of progress <g_t, d> = w_t^(-1/a)"
    )
    paper: ClassVar[str] = (
        "Ban & Ji, Fair Resource Allocation in Multi-Task Learning, ICML 2024 (arXiv:2402.15638)"
    )
    identity_on_single_task: ClassVar[bool] = False  # one task: w = ‖g‖^{-2a/(a+1)}, not 1

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        w = fairgrad_weights(grads.gram(), grads.present, float(self.alpha), iterations=int(self.iterations))
        dtype = compute_dtype(grads.values.dtype)
        finfo = torch.finfo(dtype)
        return Weights(w.clamp(max=finfo.max).to(dtype), state)
