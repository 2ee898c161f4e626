"""Uncertainty weighting (``uw``): the task losses weighted by learned homoscedastic uncertainties.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics", CVPR 2018. Every task t has a learnable log-variance ``s_t = log σ_t²`` and training minimises

    L_uw = Σ_t ½ e^{−s_t} L_t + ½ s_t,

the paper's regression form applied to every task, exactly torchjd's ``UW`` scalarizer. Its gradient with
respect to the model is ``Σ_t ½ e^{−s_t} ∇L_t``, so the coefficients are ``c_t = ½ e^{−s_t}`` on every
present (row, task) and 0 where absent: global weights, the same for every row, which is why per-row and
global mode run the same update (both are "paper"). A task absent from the whole step (present on no row)
takes no part: its s and Adam moments stay as they are.

The log-variances s [T] are in the state, initialised to 0 (σ² = 1, coefficients ½, as torchjd), and each
call takes one Adam step (torch.optim.Adam's update, betas (0.9, 0.999), eps 1e-8, no weight decay; moments
and step counts in the state) on ``∂L_uw/∂s_t = ½ (1 − e^{−s_t} L_t)``, whose fixed point is
``e^{s_t} = L_t``. The coefficients of a step are those of the s *before* its update (the paper's s and
model parameters are stepped together from the same loss).

Conventions:

- ``lr`` (default 1e-3): the paper (and LibMTL) learn s with the network's own optimiser; recmtl's network
  optimiser is Adam at lr 1e-3 (``--lr``), so that is the default. Adam moves s by about lr per step: at
  Ciao defaults (~110 steps an epoch) s travels ~0.1 an epoch towards ``log L_t``; raise ``lr`` to track
  faster. The option does not follow ``--lr``.
- LibMTL's ``UW`` uses the same ½ factors (``L_t / (2 e^{s_t}) + s_t / 2``) but initialises s = −0.5, so its
  first coefficients are ½ e^{0.5} ≈ 0.82 instead of ½.
- The loss is used as given (as torchjd); the paper assumes L_t ≥ 0. A coefficient beyond the gradients'
  dtype range (s < −87 in float32) is clamped to the largest finite value.

``step_losses`` and ``adam_step`` below are shared with the other loss-weighting methods (``famo``,
``gradnorm``, ``dwa``, ``dbmtl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._loss_weights import adam_step, broadcast_weights, step_losses
from recmtl.aggregators._math import compute_dtype
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option


def uw_coefficients(log_var: Tensor) -> Tensor:
    """``½ e^{−s_t}`` [T]: the gradient of ``Σ_t ½ e^{−s_t} L_t + ½ s_t`` with respect to each loss."""
    return 0.5 * torch.exp(-log_var)


def uw_log_var_grad(log_var: Tensor, losses: Tensor) -> Tensor:
    """``∂/∂s_t (Σ_k ½ e^{−s_k} L_k + ½ s_k) = ½ (1 − e^{−s_t} L_t)`` [T]."""
    return 0.5 * (1.0 - torch.exp(-log_var) * losses)


@dataclass(frozen=True)
class UW(Aggregator):
    """Uncertainty weighting (see the module docstring)."""

    lr: float = option(
        1e-3, low=0.0, high=10.0, help="Adam learning rate of the log-variances s (recmtl's model lr)"
    )

    name: ClassVar[str] = "uw"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # global weights: same update
    summary: ClassVar[str] = (
        "loss weights ½e^(−s_t) from learned log-variances s_t (homoscedastic uncertainty)"
    )
    paper: ClassVar[str] = (
        "Kendall, Gal & Cipolla, Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry "
        "and Semantics, CVPR 2018"
    )

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        zeros = torch.zeros(n_tasks, dtype=torch.float64)
        return {
            "log_var": zeros,
            "exp_avg": zeros.clone(),
            "exp_avg_sq": zeros.clone(),
            "steps": zeros.clone(),
        }

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        device = grads.present.device
        losses = step_losses(self.name, info, grads.n_tasks, device)
        state = {k: v.to(device) for k, v in (state or self.init_state(grads.n_tasks, 0)).items()}
        active = grads.present.any(0)  # [T] tasks present in this step
        s = state["log_var"]
        coefficients = broadcast_weights(uw_coefficients(s), grads.present, compute_dtype(grads.values.dtype))
        s, m, v, t = adam_step(
            s,
            uw_log_var_grad(s, losses),
            state["exp_avg"],
            state["exp_avg_sq"],
            state["steps"],
            active,
            lr=float(self.lr),
        )
        return Weights(coefficients, {"log_var": s, "exp_avg": m, "exp_avg_sq": v, "steps": t})
