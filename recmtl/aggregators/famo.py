"""Fast adaptive multitask optimisation (``famo``): loss weights learned so all losses fall at one rate.

Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023. With logits ξ [T]
(state, init 0), ``z = softmax(ξ)`` and ``D_t = L_t − b_t + ε`` (b = 0, ε = 1e-8 as torchjd / LibMTL), FAMO
minimises ``c Σ_t z_t log D_t`` with ``c = (Σ_t z_t / D_t)^{-1}`` held constant; its gradient is
``Σ_t c z_t / D_t · ∇L_t``, so the coefficients are

    c_t = c · z_t / D_t   (Σ_t c_t = 1: a convex combination, as torchjd's ``FAMO`` scalarization)

on every present (row, task), 0 where absent: global weights, the same for every row, so per-row and global
mode run the same update (both are "paper").

The logits learn from how much each loss fell across a model step,
``δ_t = log D_t(before) − log D_t(after)``: the gradient ``J_softmax(ξ)ᵀ δ`` takes one Adam step
(torch.optim.Adam with ``lr`` 0.025 and L2 ``weight_decay`` 1e-3 as the paper's Algorithm 2, torchjd and
LibMTL — the official code's weight decay is 1e-5 —, betas (0.9, 0.999), eps 1e-8; moments and step counts
in the state).

[reading] ``delta``: torchjd and the paper recompute the losses on the same batch after the model step.
recmtl runs one forward per step, so ``delta="consecutive"`` (the only choice for now) uses the previous
step's losses as "before" and this step's as "after": ``δ_t = log D_t(previous step) − log D_t(this step)``
(the state keeps the previous losses). ``weigh`` first takes that logit step, then computes this step's
coefficients with the new logits — the order of torchjd's ``update(after)`` then the next call; the first
step (no previous losses) takes no logit step.

Conventions: the softmax, c and the logit step run over the tasks present in the step (on any row); a task's
δ needs a previous loss (the last step where it was present), a task without one keeps its logit, moments
and step count. FAMO needs L_t > 0: a loss ≤ 0 is taken as 0 (D_t = ε), which gives that task nearly all the
weight rather than NaN. Oracle: torchjd's ``FAMO`` fed ``update(current losses)`` after each call on the
previous ones gives the same logits and the gradient ``c_t`` with respect to the losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._loss_weights import adam_step, broadcast_weights, step_losses
from recmtl.aggregators._math import compute_dtype, masked_softmax, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option

EPSILON = 1e-8  # torchjd's and LibMTL's ε in D_t = L_t − b_t + ε
DELTA = ("consecutive",)


def famo_shifted(losses: Tensor) -> Tensor:
    """``D = max(L, 0) + ε`` [T]: ``L + ε`` for the positive losses FAMO assumes, never ≤ 0."""
    return losses.clamp(min=0.0) + EPSILON


def famo_coefficients(logits: Tensor, losses: Tensor, active: Tensor) -> Tensor:
    """``c z_t / D_t`` [T] with ``z = softmax(ξ)`` and ``c = 1 / Σ z / D`` over the ``active`` tasks, 0
    elsewhere (the gradient of ``c Σ z log D`` with respect to the losses, c held constant)."""
    ratio = masked_softmax(logits, active) / famo_shifted(losses)
    return safe_div(ratio, ratio.sum())


def famo_logit_grad(logits: Tensor, delta: Tensor, mask: Tensor) -> Tensor:
    """``J_softmax(ξ)ᵀ δ = z ⊙ (δ − <z, δ>)`` over the ``mask`` [T] tasks (z = their softmax), 0 elsewhere."""
    z = masked_softmax(logits, mask)
    delta = torch.where(mask, delta, 0.0)
    return z * (delta - (z * delta).sum())


@dataclass(frozen=True)
class FAMO(Aggregator):
    """FAMO (see the module docstring)."""

    lr: float = option(0.025, low=0.0, high=10.0, help="Adam learning rate of the logits (paper: 0.025)")
    weight_decay: float = option(1e-3, low=0.0, high=1.0, help="L2 weight decay of the logits (paper: 1e-3)")
    delta: str = option(
        "consecutive", choices=DELTA, help="[reading] loss change: previous step's losses vs this step's"
    )

    name: ClassVar[str] = "famo"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # global weights: same update
    summary: ClassVar[str] = "learned loss weights that make every task's log-loss fall at the same rate"
    paper: ClassVar[str] = "Liu et al., FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023"

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        zeros = torch.zeros(n_tasks, dtype=torch.float64)
        return {
            "logits": zeros,
            "exp_avg": zeros.clone(),
            "exp_avg_sq": zeros.clone(),
            "steps": zeros.clone(),
            "previous_losses": zeros.clone(),
            "has_previous": zeros.clone(),  # 1 once the task has been present in a step
        }

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        device = grads.present.device
        losses = step_losses(self.name, info, grads.n_tasks, device)
        st = {k: v.to(device) for k, v in (state or self.init_state(grads.n_tasks, 0)).items()}
        active = grads.present.any(0)  # [T] tasks present in this step

        # 1. the logit step from the change since the previous step ([reading] delta="consecutive")
        learn = active & (st["has_previous"] > 0)
        delta = torch.log(famo_shifted(st["previous_losses"])) - torch.log(famo_shifted(losses))
        logits, m, v, t = adam_step(
            st["logits"],
            famo_logit_grad(st["logits"], delta, learn),
            st["exp_avg"],
            st["exp_avg_sq"],
            st["steps"],
            learn,
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
        )
        # 2. this step's coefficients from the new logits
        w = famo_coefficients(logits, losses, active)
        coefficients = broadcast_weights(w, grads.present, compute_dtype(grads.values.dtype))
        new_state = {
            "logits": logits,
            "exp_avg": m,
            "exp_avg_sq": v,
            "steps": t,
            "previous_losses": torch.where(active, losses, st["previous_losses"]),
            "has_previous": torch.where(active, 1.0, st["has_previous"]),
        }
        return Weights(coefficients, new_state)
