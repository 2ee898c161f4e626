"""Priority-Constrained Descent (``pcd``): follow the main task, guarantee the others some progress (§6).

"Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical Multi-Objective
Optimization", TMLR 2026 (openreview HT01yGHLEt, arXiv:2606.29521, as torchjd 0.18 cites it; reference code
github.com/DaraVaram/priority-constrained-descent); torchjd ``PCD``. Task 0
(``main_task``, rec) is the primary objective g_1 in the paper's notation, the others are secondary:

    d̃ = argmin_d ½ ‖d − g̃_1‖²   subject to   g̃_jᵀ d ≥ τ ‖g̃_j‖²   for every secondary task j,

with normalised gradients ``g̃_i = s_i g_i``, ``s_i = 1 / √(v̂_i + ε)``, v̂_i the bias-corrected exponential
moving average (decay β) of ‖g_i‖² over the steps; the update is d̃ rescaled to the norm of g_1. By the KKT
conditions ``d̃ = g̃_1 + Σ_j μ_j g̃_j`` with multipliers μ ≥ 0, so the coefficients are
``c = (e_1 + μ) ⊙ s · ‖g_1‖ / ‖d̃‖`` and everything is read from the Gram matrix. τ = ``tau`` (0.02),
β = ``beta`` (0.999), ε = ``eps`` (1e-8): torchjd's defaults.

Solver. torchjd solves the QP with Goldfarb & Idnani's dual active-set method; the paper's reference code
enumerates the working sets (its Appendix B.2). Here, batched over rows: every subset S of the secondary
tasks (2^{T−1}, all at once) gives the candidate ``μ_S = (G̃_SS)⁻¹ b_S`` (``b_j = τ G̃_jj − G̃_j1``, the
constraints of S active), kept where it is a KKT point: ``μ_S ≥ 0`` and every other constraint holds
(violation ≤ 1e-9 · max G̃_ii, torchjd's tolerance); G̃_SS must pass torchjd's dependence test (each active
gradient's component orthogonal to the previous ones has a squared norm > max(1e-9, 10·eps_dtype) of its
own: the squared pivots of the Jacobi-scaled Cholesky factor). The QP being strictly convex, its KKT point
is unique and some independent S reaches it; the smallest such S is taken. As in torchjd:

- if the constraints cannot all hold (no KKT point; T ≥ 3, e.g. two opposite secondary gradients) they are
  dropped: d̃ = g̃_1, i.e. the update is g_1;
- if g_1 = 0 the update is 0; if d̃ = 0 up to the Gram's rounding (``d̃ᵀd̃ ≤ 10·eps_dtype · (Σ|w_i| ‖g̃_i‖)²``)
  the update is 0;
- a secondary task whose gradient is 0 constrains nothing (0 ≥ 0).

Conventions (vs torchjd): ε is absolute, as in torchjd, so gradients of norm ≲ 1e-4 (per-row embedding
gradients often are) are barely normalised (s ≈ 1/√ε) and the method is not scale-equivariant; ``eps = 0``
makes it scale-free. The bias correction ``1 − β^n`` is kept per task (per row and task in row mode), n
counting the steps where the task was present, as ``x ← β x + (1 − β)`` (torchjd: one step counter; the
same when every task is present at every step). A row whose Gram has a non-finite present entry leaves the
state untouched and gets coefficients 0 (torchjd: NaN). 2^{T−1} small Cholesky solves per row (16 for
T = 5), taken 16 at a time.

State: ``sq_norm_ema`` (the moving average of ‖g_i‖²) and ``debias`` (1 − β^n), float64 — ``[T]`` in global
mode (the paper's), ``[n_rows, T]`` per row (ours) indexed by storage row id (``info.rows``): each touched row
runs the method on its own gradients with its own normalisation, and only the tasks present on it in this
step update its entries (saved with the checkpoint: it survives ``--resume``). In row mode a row that rec
does not touch has g_1 = 0, so the formula gives it no update; ``without_main = "sum"`` [reading] gives it the
plain sum of its tasks' gradients instead. Not the identity on single-task rows (a row with only an
auxiliary task gets 0, and the state moves on every row). Logged task weights: the coefficients.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import (
    Aggregator,
    State,
    StepInfo,
    TaskGrads,
    Weights,
    check_main_task,
    main_task_mask,
    option,
)
from recmtl.errors import ConfigError

WITHOUT_MAIN = ("zero", "sum")
_TOL = 1e-9  # torchjd's constraint tolerance, relative to the largest normalised squared norm
_DEPENDENCE = 1e-9  # torchjd's floor of the dependence tolerance
_SETS_PER_PASS = 16  # active sets solved at once (all of them for T ≤ 5)


def _subsets(candidates: list[int], n_tasks: int, device: torch.device) -> Tensor:
    """[K, T] bool: every subset of ``candidates``, by increasing size (the empty set first)."""
    rows = [
        [t in chosen for t in range(n_tasks)]
        for size in range(len(candidates) + 1)
        for chosen in itertools.combinations(candidates, size)
    ]
    return torch.tensor(rows, dtype=torch.bool, device=device).view(-1, n_tasks)


def pcd_qp(gram: Tensor, present: Tensor, tau: float, main_task: int, dependence_tol: float) -> Tensor:
    """The multipliers of PCD's quadratic program for every row: ``w = e_main + μ`` [R, T] float64.

    ``gram`` [R, T, T] the Gram of the *normalised* gradients (float64, absent rows/columns 0), ``present``
    [R, T] bool → ``w`` with w_main = 1, μ_j ≥ 0 on the present secondary tasks, 0 elsewhere; ``e_main`` where
    the constraints are infeasible. See the module docstring (enumeration of the active sets).
    """
    R, T = present.shape
    device = gram.device
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    is_main = main_task_mask(main_task, T, device)
    eligible = present & ~is_main & (diag > 0)  # a zero secondary gradient constrains nothing
    b = tau * diag - gram[:, :, main_task]  # [R, T]: b_j > 0 iff g_1 violates constraint j
    atol = _TOL * diag.amax(dim=1).clamp(min=torch.finfo(torch.float64).tiny)  # [R]
    # where g_main violates no constraint the empty active set (μ = 0, the first one tried) is the answer:
    # enumerate only the other rows
    todo = (eligible & (b > atol.unsqueeze(1))).any(dim=1)
    if not bool(todo.all()):
        out = torch.where(is_main & present, 1.0, 0.0).to(torch.float64).expand(R, T).clone()
        rows = todo.nonzero().squeeze(1)
        if rows.numel():
            out[rows] = pcd_qp(gram[rows], present[rows], tau, main_task, dependence_tol)
        return out

    d = torch.where(eligible, diag, 1.0).sqrt()
    unit = (gram / (d.unsqueeze(2) * d.unsqueeze(1))).unsqueeze(1)  # unit diagonal on the eligible tasks
    eye = torch.eye(T, dtype=torch.float64, device=device)
    sets = _subsets([t for t in range(T) if t != main_task], T, device)  # [K, T], by increasing size
    chosen = torch.zeros(R, T, dtype=torch.float64, device=device)
    found = torch.zeros(R, dtype=torch.bool, device=device)
    for chunk in sets.split(_SETS_PER_PASS):  # bounded memory: [R, 16, T, T] at a time
        active = chunk.unsqueeze(0) & eligible.unsqueeze(1)  # [R, K, T]
        valid = (active == chunk.unsqueeze(0)).all(dim=2)  # S ⊆ eligible
        pair = active.unsqueeze(3) & active.unsqueeze(2)  # [R, K, T, T]
        chol, info = torch.linalg.cholesky_ex(torch.where(pair, unit, eye))  # identity outside S
        pivots = torch.diagonal(chol, dim1=2, dim2=3).square()  # [R, K, T]: 1 outside S
        independent = (info == 0) & (pivots > dependence_tol).all(dim=2)
        rhs = torch.where(active, (b / d).unsqueeze(1), 0.0)
        mu = torch.cholesky_solve(rhs.unsqueeze(3), chol).squeeze(3) / d.unsqueeze(1)  # [R, K, T]
        mu = torch.where(active & independent.unsqueeze(2), mu, 0.0)
        slack = torch.einsum("rts,rks->rkt", gram, mu) - b.unsqueeze(1)  # constraint j holds iff ≥ 0
        holds = ((slack >= -atol.view(R, 1, 1)) | ~eligible.unsqueeze(1) | active).all(dim=2)
        kkt = valid & independent & holds & (mu >= 0).all(dim=2) & torch.isfinite(mu).all(dim=2)
        first = kkt.to(torch.int8).argmax(dim=1)  # the smallest KKT active set of the chunk
        take = kkt.any(dim=1) & ~found
        chosen = torch.where(
            take.unsqueeze(1), mu.gather(1, first.view(R, 1, 1).expand(R, 1, T)).squeeze(1), chosen
        )
        found = found | take
    return torch.where(is_main & present, 1.0, chosen)


def pcd_weights(
    gram: Tensor,
    present: Tensor,
    sq_norm_ema: Tensor,
    debias: Tensor,
    *,
    tau: float,
    beta: float,
    eps: float,
    main_task: int,
    precision: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """PCD's coefficients [R, T] float64 and the new moving-average state (``sq_norm_ema``, ``debias``
    [R, T] float64), from the Gram [R, T, T], ``present`` [R, T] and the previous state [R, T].

    ``precision`` is the relative precision of the Gram (10 × the machine epsilon of the gradients' dtype).
    """
    R, T = present.shape
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    g = torch.where(keep, gram.to(torch.float64), 0.0)
    g = 0.5 * (g + g.transpose(1, 2))
    finite = torch.isfinite(g).all(dim=(1, 2))
    g = torch.where(finite.view(R, 1, 1), g, 0.0)
    sq_norms = torch.diagonal(g, dim1=1, dim2=2)

    update = present & finite.unsqueeze(1)
    ema = torch.where(update, beta * sq_norm_ema + (1.0 - beta) * sq_norms, sq_norm_ema)
    bias = torch.where(update, beta * debias + (1.0 - beta), debias)
    denominator = (safe_div(ema, bias) + eps).sqrt()
    scales = torch.where(present & (denominator > 0), safe_div(torch.ones_like(ema), denominator), 0.0)

    normalised = g * (scales.unsqueeze(2) * scales.unsqueeze(1))
    w = pcd_qp(normalised, present, tau, main_task, max(_DEPENDENCE, precision))
    direction = (w * torch.bmm(normalised, w.unsqueeze(2)).squeeze(2)).sum(dim=1)  # ‖d̃‖²
    magnitude = (w.abs() * torch.diagonal(normalised, dim1=1, dim2=2).clamp(min=0.0).sqrt()).sum(dim=1) ** 2
    main_sq = sq_norms[:, main_task]
    ok = (main_sq > 0) & (direction > precision * magnitude)
    weights = w * scales * safe_div(main_sq, direction).sqrt().unsqueeze(1)
    return torch.where(ok.unsqueeze(1) & present, weights, 0.0), ema, bias


@dataclass(frozen=True)
class PCD(Aggregator):
    """Priority-constrained descent, the main task primary (see the module docstring)."""

    tau: float = option(
        0.02, low=0.0, high=1.0, help="fraction τ of normalised progress guaranteed to each aux"
    )
    beta: float = option(0.999, low=0.0, high=1.0, help="decay β < 1 of the moving average of squared norms")
    eps: float = option(
        1e-8, low=0.0, help="absolute ε added to the moving average (torchjd's); 0: scale-free"
    )
    main_task: int = option(0, low=0, help="index of the primary task among the tasks (0: rec)")
    without_main: str = option(
        "zero", choices=WITHOUT_MAIN, help="[reading] rows without the main task: no update, or the sum"
    )

    name: ClassVar[str] = "pcd"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    summary: ClassVar[str] = (
        "the direction closest to the main gradient that gives every auxiliary task a fraction τ of progress"
    )
    paper: ClassVar[str] = (
        "Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical Multi-Objective "
        "Optimization, TMLR 2026 (arXiv:2606.29521)"
    )
    identity_on_single_task: ClassVar[bool] = False  # an aux-only row gets 0; the state moves on every row

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta >= 1.0:
            raise ConfigError(f"{self.name}: beta must be in [0, 1), found {self.beta!r}")

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        shape = (n_tasks,) if mode == "global" else (n_rows, n_tasks)
        zeros = torch.zeros(shape, dtype=torch.float64)
        return {"sq_norm_ema": zeros, "debias": zeros.clone()}

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        check_main_task(self.name, self.main_task, grads.n_tasks)
        R, T = grads.present.shape
        device = grads.present.device
        ema, debias = state["sq_norm_ema"].to(device), state["debias"].to(device)
        if ema.dim() == 1:  # global state: one row (R' = 1)
            if R != 1 or ema.shape != (T,):
                raise ValueError(f"pcd: global state {tuple(ema.shape)} for {R} row(s) of {T} tasks")
            rows_ema, rows_debias = ema.unsqueeze(0), debias.unsqueeze(0)
        else:
            rows = info.rows(R, device)
            if rows.numel() != R or ema.shape[1:] != (T,):
                raise ValueError(
                    f"pcd: per-row state {tuple(ema.shape)} for {rows.numel()} row id(s), {R} rows, {T} tasks"
                )
            rows_ema, rows_debias = ema.index_select(0, rows), debias.index_select(0, rows)
        dtype = compute_dtype(grads.values.dtype)
        coefficients, new_ema, new_debias = pcd_weights(
            grads.gram(),
            grads.present,
            rows_ema.to(torch.float64),
            rows_debias.to(torch.float64),
            tau=float(self.tau),
            beta=float(self.beta),
            eps=float(self.eps),
            main_task=self.main_task,
            precision=10.0 * torch.finfo(dtype).eps,
        )
        if self.without_main == "sum":
            orphan = ~grads.present[:, self.main_task : self.main_task + 1]
            coefficients = torch.where(orphan & grads.present, 1.0, coefficients)
        if ema.dim() == 1:
            new_state = {"sq_norm_ema": new_ema[0], "debias": new_debias[0]}
        else:
            new_state = {
                "sq_norm_ema": ema.index_copy(0, rows, new_ema.to(ema.dtype)),
                "debias": debias.index_copy(0, rows, new_debias.to(debias.dtype)),
            }
        finfo = torch.finfo(dtype)
        return Weights(coefficients.clamp(min=finfo.min, max=finfo.max).to(dtype), new_state)
