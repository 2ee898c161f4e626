"""What the loss-weighting methods (rlw, uw, dwa, gradnorm, famo, dbmtl) share: the step's losses, one
global weight per task broadcast to the present (row, task) pairs, each task's gradient norm over all its
rows, and the Adam step with which uw, gradnorm and famo learn their weights. Pure functions over tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from recmtl.aggregators.base import StepInfo, TaskGrads

#: torch.optim.Adam's defaults, used by every loss-weighting method that learns its weights
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def step_losses(owner: str, info: StepInfo, n_tasks: int, device: torch.device) -> Tensor:
    """The step's task losses ``info.losses`` as float64 [T] on ``device``; ValueError when absent or of the
    wrong shape (a loss-weighting method cannot run without them)."""
    if info.losses is None:
        raise ValueError(f"{owner}: needs the step's task losses (StepInfo.losses), got None")
    if tuple(info.losses.shape) != (n_tasks,):
        raise ValueError(
            f"{owner}: StepInfo.losses must be [T] = [{n_tasks}], got {tuple(info.losses.shape)}"
        )
    return info.losses.detach().to(device=device, dtype=torch.float64)


def broadcast_weights(w: Tensor, present: Tensor, dtype: torch.dtype) -> Tensor:
    """Global task weights ``w`` [T] as coefficients [R', T] in ``dtype``: ``w[t]`` on every present
    (row, task), exactly 0 elsewhere; weights beyond ``dtype``'s range clamped to its largest finite value."""
    finite = torch.finfo(dtype).max
    return torch.where(present, w.clamp(min=-finite, max=finite).to(dtype), 0.0)


def adam_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    steps: Tensor,
    mask: Tensor,
    *,
    lr: float,
    weight_decay: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step of torch.optim.Adam (L2 ``weight_decay`` added to the gradient, betas :data:`ADAM_BETAS`,
    eps :data:`ADAM_EPS`, no amsgrad) on the coordinates where ``mask`` [T] is True; the others keep their
    parameter, moments and step count. All tensors [T], float64; ``steps`` counts each coordinate's steps
    (per coordinate, so an absent task does not age the bias correction of the others). Returns the new
    ``(param, exp_avg, exp_avg_sq, steps)``."""
    beta1, beta2 = ADAM_BETAS
    grad = grad + weight_decay * param if weight_decay else grad
    m = beta1 * exp_avg + (1.0 - beta1) * grad
    v = beta2 * exp_avg_sq + (1.0 - beta2) * grad * grad
    t = steps + 1.0
    bias1 = 1.0 - torch.pow(beta1, t)
    bias2 = 1.0 - torch.pow(beta2, t)
    denom = v.sqrt() / bias2.sqrt() + ADAM_EPS
    new = param - (lr / bias1) * m / denom
    return (
        torch.where(mask, new, param),
        torch.where(mask, m, exp_avg),
        torch.where(mask, v, exp_avg_sq),
        torch.where(mask, t, steps),
    )


def task_norms(grads: TaskGrads) -> Tensor:
    """Each task's gradient norm over all its rows, float64 [T]: ``sqrt(Σ_r ||g_rt||²)`` (global mode: the
    norm of the flattened vector, the same number). Accumulated in float64 from the dense view, which
    :meth:`TaskGrads.norms` builds anyway: float32 squares would overflow at 1e20 and vanish at 1e-23."""
    per_row = torch.linalg.vector_norm(grads.dense, dim=-1, dtype=torch.float64)  # [R', T], 0 if absent
    return torch.linalg.vector_norm(per_row, dim=0)
