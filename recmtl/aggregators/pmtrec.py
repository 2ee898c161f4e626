"""PMTRec: personalised multi-task gradient aggregation (METHODS.md §4).

Yang et al. 2024, "Personalized Multi-task Training for Recommender System", IEEE BigData 2024,
arXiv:2407.21364. The paper publishes no code; every step below is a **[reading]** of its formulas and
sits behind a named option whose default is the reading in METHODS.md §4.

For a row r with active (present) tasks A, task gradients G_t = G[r, t], norms n_t = ||G_t||, main task 0
(``main_task``) and epoch index s (0-based, ``StepInfo.epoch``):

1. Task Focusing — ``focus`` [reading]:
   - ``"norm"`` (default): boost the main task's norm, ``n'_0 = α^s · n_0``, others unchanged, then
     ``p_t = n'_t / Σ_{k∈A} n'_k``. Computed without ever forming α^s: numerator and denominator are
     divided by α^s, so the other tasks' norms are scaled by ``e^{−s·ln α} ∈ (0, 1]`` (a scalar that
     underflows to 0 for huge s, giving the exact limit p_0 = 1); s = 10 000 cannot overflow, and no
     log/exp of zero norms is taken (such special values also take slow paths on CPU).
   - ``"logit"``: p from the un-boosted norms, and ``s·ln α`` added to the main task's softmax logit.
2. Gradient Magnitude Balancing [reading]: ``w_t = softmax_{t∈A}(p_t / τ)``.
   Note that with ``focus="norm"`` p_0 → 1 as s grows, so w_0 tends to ``e^{1/τ} / (e^{1/τ} + |A| − 1)``
   (≈ 0.73 for τ = 1 and two tasks), not to 1; ``focus="logit"`` drives w_0 → 1 for any τ.
3. Combination — ``combine`` [reading]:
   - ``"raw"`` (default): ``g_r = Σ_t w_t G_t``, coefficients ``c_t = w_t``.
   - ``"unit"`` (METHODS.md §4's default): ``g_r = (Σ_t w_t G_t / n_t) · (Σ_t w_t n_t)``, i.e. coefficients
     ``c_t = w_t · (Σ_k w_k n_k) / n_t`` (c_t = 0 when n_t = 0). The scale uses the *un-boosted* norms.
   Either way a row touched only by the main task keeps exactly its gradient (w_0 = c_0 = 1). ``raw`` is
   the default because the study showed it (docs/training.md, docs/results.md § PMTRec's combination):
   where tasks meet on a row, ``unit`` rescales every task's gradient to the weighted mean norm, which
   costs PMTRec 13-40% NDCG@20 against EW on Last.fm, while ``raw`` is ahead of EW there; where tasks
   seldom meet the two are level.

Norm source — ``norm_source`` [reading] (METHODS.md §4.5):

- ``"step"`` (default): the norms n_t above are this step's, and the softmax runs over the tasks present on
  the row in this step. A row with one present task keeps its gradient (``identity_on_single_task``).
- ``"ema"``: the aggregator's state keeps ``norm_ema`` [n_rows, T] float32 (global mode: [1, T]), a moving
  average of every (storage row, task) gradient norm, NaN for a pair never seen. Each step, for every touched
  row and present task with a finite norm: ``m = n`` at first sight, else ``m = β·m + (1−β)·n``; other
  entries keep their value. Let E be the row's *known* tasks (an EMA after this update; E ⊇ A, the present
  ones). Steps 1–2 run on the EMA norms m_t over E: ``p_t = m'_t / Σ_{k∈E} m'_k`` (focusing on m_0 as
  above), ``w = softmax_{t∈E}(p_t / τ)`` (``balance="uniform"``: w = 1/|E|). A known but absent task thus
  takes its share of the normalisation and of the softmax, but its coefficient is 0 (no gradient this step).
  Step 3 applies w to the present tasks' gradients: ``unit``: ``c_t = w_t · S_A / n_t`` for t ∈ A with
  ``S_A = Σ_{k∈A} w_k n_k / Σ_{k∈A} w_k``, the w-weighted mean of this step's norms over the present tasks
  (so the update keeps this step's gradient scale and the EMA only decides the split); ``raw``: ``c_t = w_t``
  for t ∈ A. So a row touched only by the main task gets ``w_0 · G_0`` (w_0 < 1 once another task has been
  seen on it); a row whose only known task is present keeps its gradient exactly; with every known task
  present and β = 0 this is ``norm_source="step"``. Every touched row is weighed (the single-task shortcut
  is off: the EMA moves on single-task rows too). Memory: 4·T bytes per storage row (Ciao, 112,471 rows,
  T = 3: 1.35 MB), saved in checkpoints; the new state is a copy of it per step.

Ablation ``balance="uniform"`` (not a reading: the "no Gradient Magnitude Balancing" arm of the paper's
ablation) replaces step 2 by ``w_t = 1/|A|``; Task Focusing then has no effect either (with ``focus="norm"``
it acts only through the softmax), so the ablation's "no GMB" and "neither" arms coincide.

Only the norms are needed, never the Gram matrix; the coefficient math runs on [R, T] tensors in float32
(float64 for float64 gradients). Per-row mode is the paper's; global mode (R = 1) is offered for comparison.
The logged task weights are the softmax weights w (not the coefficients c); with ``ema`` a known but
absent task's w is not logged (the trainer averages a task's weight over the rows where it is present).

In row mode the whole per-row combination is also one kernel op (``fused_rows``, ``"pmtrec"``): a fused
back end (:mod:`recmtl.kernels`) computes norms, w, c and the update in one pass over the gradients; the
functions here are its specification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators import _math
from recmtl.aggregators._math import masked_softmax, safe_div
from recmtl.aggregators.base import (
    Aggregator,
    FusedRows,
    State,
    StepInfo,
    TaskGrads,
    Weights,
    check_main_task,
    main_task_mask,
    option,
)

COMBINE = ("raw", "unit")
FOCUS = ("norm", "logit")
BALANCE = ("softmax", "uniform")
NORM_SOURCE = ("step", "ema")
EMA_DTYPE = torch.float32  # the per-(row, task) norm EMA


def pmtrec_task_weights(
    norms: Tensor,
    present: Tensor,
    epoch: int,
    *,
    alpha: float,
    tau: float,
    focus: str = "norm",
    main_task: int = 0,
) -> Tensor:
    """Steps 1–2: the softmax weights w [R, T] from the norms [R, T] (0 for absent tasks, rows sum to 1
    over present tasks, all zeros for a row with no present task)."""
    boost = epoch * math.log(alpha)  # s · ln α, a Python float: finite for any realistic s
    is_main = main_task_mask(main_task, norms.shape[1], norms.device)
    masked = norms.masked_fill(~present, 0.0)
    if focus == "norm":
        # p_t = n'_t / Σ n'_k with n'_0 = e^b n_0, numerator and denominator divided by e^b: the other tasks
        # are scaled by e^{-b} ∈ (0, 1] (a scalar, never overflows; at huge b it underflows to 0 and p_0 = 1).
        # When n_0 = 0 the boost is irrelevant and the others keep their plain shares.
        main_positive = masked[:, main_task : main_task + 1] > 0
        shrink = torch.where(
            main_positive, masked.new_tensor(math.exp(-boost)), masked.new_tensor(1.0)
        )  # [R, 1]
        scaled = torch.where(is_main, masked, masked * shrink)
        logits = safe_div(scaled, scaled.sum(dim=-1, keepdim=True)) / tau
    else:  # "logit"
        p = safe_div(masked, masked.sum(dim=-1, keepdim=True))
        logits = p / tau + boost * is_main.to(norms.dtype)
    return masked_softmax(logits, present)


def pmtrec_coefficients(w: Tensor, norms: Tensor, combine: str) -> Tensor:
    """Step 3: coefficients c [R, T] such that update = Σ_t c_t G_t.

    "unit": c_t = w_t · (Σ_k w_k n_k) / n_t, 0 where n_t = 0 (written as (w_t S) / n_t so a zero weight
    never meets an infinite ratio); "raw": c_t = w_t. ``norms`` [R, T] (0 where absent), ``w`` [R, T].
    """
    if combine == "raw":
        return w
    scale = (w * norms).sum(dim=-1, keepdim=True)  # Σ_k w_k n_k, un-boosted norms
    # A ratio S / n_t beyond the dtype's range (n_t < S / 3e38: only for near-underflow norms) is clamped
    # to the largest finite value instead of becoming inf.
    return safe_div(w * scale, norms).clamp(max=torch.finfo(norms.dtype).max)


def _all_row_norms(grads: TaskGrads) -> Tensor:
    """``grads.norms()`` [R', T], computed for every row without the dense [R, T, D] view when none is
    cached (``norm_source=ema`` weighs every touched row, most with one task): the entries are summed per
    present (row, task) into a compact [N, D] buffer (N entries >= present pairs), about half the memory
    traffic of the zero-filled [R·T, D] view."""
    if grads.mode != "row" or "dense" in grads.__dict__:
        return grads.norms()
    flat = grads.row_present.reshape(-1)
    position = torch.cumsum(flat, 0) - 1  # [R·T] compact position of each present (row, task)
    sums = grads.values.new_zeros(max(grads.values.shape[0], 1), grads.dim)  # (>= 1 row: no entry at all)
    sums.index_add_(0, position.index_select(0, grads.slot), grads.values)
    norms = _math.norms(sums)  # [N]; rows past the present pairs are zero
    compact = torch.where(flat, norms.index_select(0, position.clamp(min=0)), 0.0)
    return compact.view(grads.row_present.shape)


def update_norm_ema(ema: Tensor, norms: Tensor, present: Tensor, beta: float) -> Tensor:
    """The norm EMA after one step: ``ema`` [R, T] (NaN: never seen), this step's ``norms`` [R, T] and
    ``present`` [R, T] → [R, T] in ``ema.dtype``: ``norms`` at first sight, ``β·ema + (1−β)·norms`` for a
    seen pair, unchanged where the task is absent or its norm is not finite."""
    n = norms.to(ema.dtype)
    moved = torch.where(torch.isnan(ema), n, beta * ema + (1.0 - beta) * n)
    return torch.where(present & torch.isfinite(n), moved, ema)


def pmtrec_present_coefficients(w: Tensor, norms: Tensor, present: Tensor, combine: str) -> Tensor:
    """Step 3 with weights ``w`` [R, T] over more tasks than the ``present`` ones [R, T] (norm_source ema):
    ``unit``: c_t = w_t · S_A / n_t with S_A = Σ_{k∈A} w_k n_k / Σ_{k∈A} w_k; ``raw``: c_t = w_t; 0 for
    absent tasks (and, in ``unit``, where n_t = 0). Equals :func:`pmtrec_coefficients` when w sums to 1 over
    the present tasks."""
    wp = torch.where(present, w, 0.0)
    if combine == "raw":
        return wp
    scale = safe_div((wp * norms).sum(dim=-1, keepdim=True), wp.sum(dim=-1, keepdim=True))
    return safe_div(wp * scale, norms).clamp(max=torch.finfo(norms.dtype).max)


@dataclass(frozen=True)
class PMTRec(Aggregator):
    """PMTRec aggregation (see the module docstring)."""

    alpha: float = option(
        1.1, low=1.0, high=10.0, help="Task Focusing base α: main norm × α^epoch (1 disables; grid 1.0-1.5)"
    )
    tau: float = option(
        1.0, low=0.0, high=100.0, low_open=True, help="softmax temperature τ (large: uniform; grid 0.1-10)"
    )
    combine: str = option("raw", choices=COMBINE, help="[reading] raw Σ w·G, or unit directions × mean norm")
    focus: str = option("norm", choices=FOCUS, help="[reading] boost the main task's norm, or its logit")
    balance: str = option(
        "softmax", choices=BALANCE, help="ablation: softmax (GMB) or uniform w = 1/|A| (no GMB, no focusing)"
    )
    main_task: int = option(0, low=0, help="index of the main task among the tasks (0: rec)")
    norm_source: str = option(
        "step", choices=NORM_SOURCE, help="[reading] this step's norms, or a per-(row, task) norm EMA (state)"
    )
    beta: float = option(
        0.9,
        low=0.0,
        high=1.0,
        help="EMA rate β with norm_source=ema: m = β·m + (1-β)·norm (first sight: norm)",
    )

    name: ClassVar[str] = "pmtrec"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row"})
    summary: ClassVar[str] = (
        "per row: weights from a tempered softmax over the tasks' norm shares, the main task's share "
        "boosted by α^epoch"
    )
    paper: ClassVar[str] = (
        "Yang et al., Personalized Multi-task Training for Recommender System, IEEE BigData 2024 "
        "(arXiv:2407.21364)"
    )

    @property
    def identity_on_single_task(self) -> bool:  # type: ignore[override]
        """step: one present task gives w = softmax over one = 1 and c = w · (w n) / n = 1 (unit) or w = 1
        (raw). ema: not so (another known task takes a share of w), and the EMA moves on every row."""
        return self.norm_source == "step"

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        if self.norm_source != "ema":
            return {}
        rows = 1 if mode == "global" else n_rows
        return {"norm_ema": torch.full((rows, n_tasks), float("nan"), dtype=EMA_DTYPE)}

    def fused_rows(self, grads: TaskGrads, info: StepInfo) -> FusedRows | None:
        """The kernel op ``"pmtrec"`` for ``norm_source=step``; None for ``ema`` (its state, the norm EMA,
        is not in the kernel: the generic weighted-sum kernel then applies the coefficients)."""
        self._check(grads, info)
        return FusedRows("pmtrec", self, info) if self.norm_source == "step" else None

    def _check(self, grads: TaskGrads, info: StepInfo) -> None:
        check_main_task(self.name, self.main_task, grads.n_tasks)
        if info.epoch < 0:
            raise ValueError(f"pmtrec: StepInfo.epoch must be >= 0, got {info.epoch}")

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        self._check(grads, info)
        norms = grads.norms() if self.norm_source == "step" else _all_row_norms(grads)
        if self.norm_source == "ema":
            stats, known, state = self._ema(norms, grads, state, info)
        else:
            stats, known = norms, grads.present
        if self.balance == "uniform":  # the ablation without Gradient Magnitude Balancing
            mask = known.to(norms.dtype)
            w = safe_div(mask, mask.sum(dim=-1, keepdim=True))
        else:
            w = pmtrec_task_weights(
                stats,
                known,
                info.epoch,
                alpha=float(self.alpha),
                tau=float(self.tau),
                focus=self.focus,
                main_task=self.main_task,
            )
        if self.norm_source == "ema":
            coefficients = pmtrec_present_coefficients(w, norms, grads.present, self.combine)
        else:
            coefficients = pmtrec_coefficients(w, norms, self.combine)
        return Weights(coefficients, state, task_weights=w)

    def _ema(
        self, norms: Tensor, grads: TaskGrads, state: State, info: StepInfo
    ) -> tuple[Tensor, Tensor, State]:
        """The EMA norms [R', T] (0 where unknown), the known mask [R', T] and the new state."""
        stored = state.get("norm_ema")
        R, T = norms.shape
        if stored is None or stored.dim() != 2 or stored.shape[1] != T:
            found = None if stored is None else tuple(stored.shape)
            raise ValueError(
                f"pmtrec: norm_source=ema needs state norm_ema [rows, {T}] (init_state), got {found}"
            )
        stored = stored.to(norms.device)
        if grads.mode == "global":  # one global row
            rows = torch.zeros(1, dtype=torch.long, device=norms.device)
        else:
            rows = info.rows(R, norms.device)
        ema = update_norm_ema(stored.index_select(0, rows), norms, grads.present, float(self.beta))
        known = ~torch.isnan(ema)
        stats = torch.where(known, ema.to(norms.dtype), 0.0)
        return stats, known, {"norm_ema": stored.index_copy(0, rows, ema)}
