"""GradNorm (``gradnorm``): loss weights learned so the weighted gradient norms follow the training rates.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
Deep Multitask Networks", ICML 2018 (Algorithm 1). Task weights w [T] (state, init 1) give the coefficients
``w[t]`` on every present (row, task), 0 where absent (global weights, the same for every row). At every
call, with ``g_t`` task t's gradient and ``L_t(0)`` its loss at the first call where it was present:

    G_t = ||w_t g_t|| = |w_t| ||g_t||,   Ḡ = mean_t G_t,
    L̃_t = L_t / L_t(0),   r_t = L̃_t / mean_k L̃_k,
    L_grad = Σ_t |G_t − Ḡ r_t^α|           (the target Ḡ r_t^α held constant, as the paper),

then one Adam step on w along ``∂L_grad/∂w_t = sign(G_t − Ḡ r_t^α) sign(w_t) ||g_t||`` and the
renormalisation ``w ← T w / Σ w``. The coefficients of a step are the weights *before* its update (the
paper steps w and the network from the same forward pass). α = ``alpha`` (1.5, LibMTL's default; the
paper tunes α per benchmark).

- The gradient norm is over all the rows the task touched (the paper's norm of the shared parameters'
  gradient): in global mode the norm of the flattened vector, in per-row mode ``sqrt(Σ_r ||g_rt||²)`` of
  the per-row norms — the same number, so both modes run the same update (both are "paper").
- Optimiser: torch.optim.Adam (betas (0.9, 0.999), eps 1e-8, no weight decay; moments and step counts in
  the state) with ``lr`` (default 1e-3). The paper's Algorithm 1 only says "update w using ∇_w L_grad";
  recmtl's network optimiser is Adam at lr 1e-3 (``--lr``; the option does not follow it), and Adam makes
  the step of w (≈ lr) nearly independent of the gradients' scale, which plain SGD on a gradient of size
  ``||g_t||`` would not be (embedding gradients are small). w is not clamped (as the paper): a weight
  pushed below its target is pulled back up.
- LibMTL parametrises ``w = T softmax(θ)``, trains θ with the network's optimiser and starts at epoch 1
  with ``L(0)`` the first epoch's average loss; recmtl follows the paper (w itself, ``L(0)`` at the first
  step, updates from the first step).
- The means, ratios and the step run over the tasks present in the step (on any row); an absent task
  keeps its weight (the renormalisation runs over all T weights, as Σ w = T). Losses should be positive
  (the paper's); ``L̃`` uses ``max(L, 0) + 1e-8`` so that a zero loss cannot divide by zero.
- No torchjd oracle (torchjd has no GradNorm): the tests compare with an independent autograd version.
- Not scale equivariant: w learns from ``||g_t||`` through Adam, whose eps makes the step depend on the
  gradients' scale (slightly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._loss_weights import adam_step, broadcast_weights, step_losses, task_norms
from recmtl.aggregators._math import compute_dtype, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option

EPSILON = 1e-8  # floor of the losses in the ratio L / L(0)


def gradnorm_weight_grad(
    weights: Tensor, norms: Tensor, losses: Tensor, initial: Tensor, active: Tensor, alpha: float
) -> Tensor:
    """``∂/∂w_t Σ_k |G_k − Ḡ r_k^α|`` [T] (target held constant) over the ``active`` tasks, 0 elsewhere.

    ``weights`` w, ``norms`` ||g_t||, ``losses`` L_t, ``initial`` L_t(0): float64 [T].
    """
    n_active = active.sum().clamp(min=1).to(weights.dtype)
    g = torch.where(active, weights.abs() * norms, 0.0)  # G_t
    ratio = torch.where(active, (losses.clamp(min=0.0) + EPSILON) / (initial.clamp(min=0.0) + EPSILON), 0.0)
    r = safe_div(ratio, ratio.sum() / n_active)
    target = g.sum() / n_active * r.pow(alpha)
    return torch.where(active, torch.sign(g - target) * torch.sign(weights) * norms, 0.0)


@dataclass(frozen=True)
class GradNorm(Aggregator):
    """GradNorm (see the module docstring)."""

    alpha: float = option(1.5, low=0.0, high=10.0, help="restoring force α towards equal training rates")
    lr: float = option(
        1e-3, low=0.0, high=10.0, help="Adam learning rate of the task weights (recmtl's model lr)"
    )

    name: ClassVar[str] = "gradnorm"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # global weights: same update
    summary: ClassVar[str] = (
        "learns loss weights that keep each task's weighted gradient norm in step with its training rate"
    )
    paper: ClassVar[str] = (
        "Chen et al., GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask "
        "Networks, ICML 2018"
    )

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        zeros = torch.zeros(n_tasks, dtype=torch.float64)
        return {
            "weights": torch.ones(n_tasks, dtype=torch.float64),
            "initial_losses": zeros,  # L(0), recorded at the task's first step
            "has_initial": zeros.clone(),
            "exp_avg": zeros.clone(),
            "exp_avg_sq": zeros.clone(),
            "steps": zeros.clone(),
        }

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        device = grads.present.device
        n_tasks = grads.n_tasks
        losses = step_losses(self.name, info, n_tasks, device)
        st = {k: v.to(device) for k, v in (state or self.init_state(n_tasks, 0)).items()}
        active = grads.present.any(0)  # [T] tasks present in this step
        initial = torch.where(st["has_initial"] > 0, st["initial_losses"], losses)

        w = st["weights"]
        coefficients = broadcast_weights(w, grads.present, compute_dtype(grads.values.dtype))
        grad = gradnorm_weight_grad(w, task_norms(grads), losses, initial, active, float(self.alpha))
        new_w, m, v, t = adam_step(
            w, grad, st["exp_avg"], st["exp_avg_sq"], st["steps"], active, lr=float(self.lr)
        )
        total = new_w.sum()
        new_w = torch.where(total > 0, new_w * (n_tasks / torch.where(total > 0, total, 1.0)), w)
        new_state = {
            "weights": new_w,
            "initial_losses": torch.where(active, initial, st["initial_losses"]),
            "has_initial": torch.where(active, 1.0, st["has_initial"]),
            "exp_avg": m,
            "exp_avg_sq": v,
            "steps": t,
        }
        return Weights(coefficients, new_state)
