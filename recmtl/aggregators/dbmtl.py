"""Dual-balancing multi-task learning (``dbmtl``): log-loss scale balancing + gradient-magnitude balancing.

Lin et al., "Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023 (LibMTL's ``DB_MTL``).
Loss-scale balancing trains on ``log L_t``, whose gradient is ``g_t / L_t``; gradient-magnitude balancing
scales every task's (averaged) log-gradient up to the largest norm:

    u_t ← β_k u_t + (1 − β_k) ||g_t|| / L_t,   β_k = β / k^{β_σ}   (k = the task's step count, from 1),
    α_t = max_j u_j / u_t,   update = Σ_t α_t g_t / L_t,

so the coefficients are ``α_t / L_t`` on every present (row, task), 0 where absent (global weights, the
same for every row). ``beta`` = 0.9 and ``beta_sigma`` = 0 are LibMTL's defaults (``--DB_beta 0.9``,
``--DB_beta_sigma 0``: a constant β); the EMA starts from u = 0, as LibMTL's zero buffer.

[reading] the EMA: the paper and LibMTL keep an EMA of the full log-gradients ``g_t / L_t`` and apply α to
that buffer (a momentum). Here the buffer would be T × every embedding row, and an update built from it is
not a combination of this step's gradients, so recmtl keeps an EMA of their *norms* ``u_t`` and applies
α to the current log-gradients. With β = 0 both readings are the same.

- The norm is over all the rows the task touched (the paper's norm of the shared parameters' gradient): in
  global mode the norm of the flattened vector, in per-row mode ``sqrt(Σ_r ||g_rt||²)`` of the per-row
  norms — the same number, so both modes run the same update (both are "paper").
- ``L_t`` is ``max(L_t, 0) + 1e-8`` (LibMTL's ``log(L + 1e-8)``; the method needs positive losses, and a
  loss ≤ 0 would flip or explode the log-gradient). α_t = 0 where u_t = 0 (a task whose gradients have all
  been zero: nothing to scale), where LibMTL divides by ``u_t + 1e-8``.
- The max, the EMA and the step count run over the tasks present in the step (on any row); an absent task
  keeps its u and count.
- Scale equivariant (α reads ratios of norms only); no torchjd oracle (torchjd has no DB-MTL): the tests
  pin the properties and the EMA recursion against a plain loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._loss_weights import broadcast_weights, step_losses, task_norms
from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option

EPSILON = 1e-8  # LibMTL's log(L + 1e-8)


def dbmtl_ema(
    average: Tensor,
    norms: Tensor,
    losses: Tensor,
    steps: Tensor,
    active: Tensor,
    beta: float,
    beta_sigma: float,
) -> tuple[Tensor, Tensor]:
    """One EMA step of the log-gradient norms over the ``active`` [T] tasks: ``u ← β_k u + (1 − β_k) n / L``
    with ``β_k = β / k^{β_σ}``, k = the task's new step count. ``average`` u, ``norms`` n, ``losses`` L
    (floored at 1e-8), ``steps`` k − 1: float64 [T]. Returns the new ``(u, steps)``."""
    k = steps + 1.0
    beta_k = beta / k.pow(beta_sigma)
    new = beta_k * average + (1.0 - beta_k) * norms / (losses.clamp(min=0.0) + EPSILON)
    return torch.where(active, new, average), torch.where(active, k, steps)


def dbmtl_weights(average: Tensor, losses: Tensor, active: Tensor) -> Tensor:
    """The loss weights ``α_t / L_t`` [T], ``α_t = max_j u_j / u_t`` over the ``active`` tasks (0 where
    u_t = 0 and for the others)."""
    u = torch.where(active, average, 0.0)
    alpha = safe_div(u.amax(), u)
    return torch.where(active, alpha / (losses.clamp(min=0.0) + EPSILON), 0.0)


@dataclass(frozen=True)
class DBMTL(Aggregator):
    """DB-MTL (see the module docstring)."""

    beta: float = option(0.9, low=0.0, high=1.0, help="EMA rate β of the log-gradient norms (LibMTL: 0.9)")
    beta_sigma: float = option(0.0, low=0.0, high=10.0, help="β decay: β_k = β / k^β_σ (LibMTL: 0, constant)")

    name: ClassVar[str] = "dbmtl"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # global weights: same update
    summary: ClassVar[str] = (
        "log-transformed losses; each task's gradient rescaled to the largest EMA gradient norm"
    )
    paper: ClassVar[str] = "Lin et al., Dual-Balancing for Multi-Task Learning, arXiv:2308.12029, 2023"

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        zeros = torch.zeros(n_tasks, dtype=torch.float64)
        return {"norm_average": zeros, "steps": zeros.clone()}

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        device = grads.present.device
        losses = step_losses(self.name, info, grads.n_tasks, device)
        st = {k: v.to(device) for k, v in (state or self.init_state(grads.n_tasks, 0)).items()}
        active = grads.present.any(0)  # [T] tasks present in this step
        average, steps = dbmtl_ema(
            st["norm_average"],
            task_norms(grads),
            losses,
            st["steps"],
            active,
            float(self.beta),
            float(self.beta_sigma),
        )
        w = dbmtl_weights(average, losses, active)
        coefficients = broadcast_weights(w, grads.present, compute_dtype(grads.values.dtype))
        return Weights(coefficients, {"norm_average": average, "steps": steps})
