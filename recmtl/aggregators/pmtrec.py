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
   - ``"unit"`` (default): ``g_r = (Σ_t w_t G_t / n_t) · (Σ_t w_t n_t)``, i.e. coefficients
     ``c_t = w_t · (Σ_k w_k n_k) / n_t`` (c_t = 0 when n_t = 0). The scale uses the *un-boosted* norms.
     A row touched only by the main task keeps exactly its gradient (c_0 = 1).
   - ``"raw"``: ``c_t = w_t``.

Ablation ``balance="uniform"`` (not a reading: the "no Gradient Magnitude Balancing" arm of the paper's
ablation) replaces step 2 by ``w_t = 1/|A|``; Task Focusing then has no effect either (with ``focus="norm"``
it acts only through the softmax), so the ablation's "no GMB" and "neither" arms coincide.

Only the norms are needed, never the Gram matrix; the coefficient math runs on [R, T] tensors in float32
(float64 for float64 gradients). Per-row mode is the paper's; global mode (R = 1) is offered for comparison.
The logged task weights are the softmax weights w (not the coefficients c).

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

COMBINE = ("unit", "raw")
FOCUS = ("norm", "logit")
BALANCE = ("softmax", "uniform")


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


def pmtrec_coefficients(w: Tensor, norms: Tensor, combine: str = "unit") -> Tensor:
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


@dataclass(frozen=True)
class PMTRec(Aggregator):
    """PMTRec aggregation (see the module docstring)."""

    alpha: float = option(
        1.1, low=1.0, high=10.0, help="Task Focusing base α: main norm × α^epoch (1 disables; grid 1.0-1.5)"
    )
    tau: float = option(
        1.0, low=0.0, high=100.0, low_open=True, help="softmax temperature τ (large: uniform; grid 0.1-10)"
    )
    combine: str = option("unit", choices=COMBINE, help="[reading] unit directions × weighted norm, or raw")
    focus: str = option("norm", choices=FOCUS, help="[reading] boost the main task's norm, or its logit")
    balance: str = option(
        "softmax", choices=BALANCE, help="ablation: softmax (GMB) or uniform w = 1/|A| (no GMB, no focusing)"
    )
    main_task: int = option(0, low=0, help="index of the main task among the tasks (0: rec)")

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
    # one present task: w = softmax over one = 1 and c = w · (w n) / n = 1 (unit) or w = 1 (raw)
    identity_on_single_task: ClassVar[bool] = True

    def fused_rows(self, grads: TaskGrads, info: StepInfo) -> FusedRows:
        self._check(grads, info)
        return FusedRows("pmtrec", self, info)

    def _check(self, grads: TaskGrads, info: StepInfo) -> None:
        check_main_task(self.name, self.main_task, grads.n_tasks)
        if info.epoch < 0:
            raise ValueError(f"pmtrec: StepInfo.epoch must be >= 0, got {info.epoch}")

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        self._check(grads, info)
        norms = grads.norms()
        if self.balance == "uniform":  # the ablation without Gradient Magnitude Balancing
            present = grads.present.to(norms.dtype)
            w = safe_div(present, present.sum(dim=-1, keepdim=True))
        else:
            w = pmtrec_task_weights(
                norms,
                grads.present,
                info.epoch,
                alpha=float(self.alpha),
                tau=float(self.tau),
                focus=self.focus,
                main_task=self.main_task,
            )
        return Weights(pmtrec_coefficients(w, norms, self.combine), state, task_weights=w)
