"""Dynamic weight average (``dwa``): each task weighted by how slowly its epoch loss has been falling.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (§3.3). With ``L_k(e)`` the
average loss of task k over the steps of epoch e, at every step of epoch e

    w_k(e−1) = L_k(e−1) / L_k(e−2),   λ_k(e) = K · exp(w_k(e−1) / τ) / Σ_i exp(w_i(e−1) / τ),

τ = ``temperature`` (the paper's 2), K the number of tasks (so Σ_k λ_k = K), and λ_k = 1 during the first
two epochs (before two epoch averages exist). The coefficients are ``λ[t]`` on every present (row, task),
0 where absent: global weights, the same for every row, so per-row and global mode run the same update
(both are "paper").

State (per task [T], float64): the current epoch's loss sum and step count, the two previous epoch
averages and how many exist (0-2), and the epoch they belong to. ``weigh`` accumulates ``info.losses``; when
``info.epoch`` advances it first rolls the history (the finished epoch's average becomes the newest, as
torchjd's ``DWA.step()`` at the end of each epoch; epochs without a step leave no average, as there).
The weights of a step are computed before its losses are added (as torchjd).

Conventions: the softmax and K run over the tasks present in the step (on any row); an absent task neither
adds to its epoch sum nor counts a step. The rate is ``L(e−1) / L(e−2)`` of the losses as given: like
torchjd, the losses only need a consistent non-zero sign (a zero older average gives rate 0). Oracle:
torchjd's ``DWA`` scalarization, called on the same losses with ``.step()`` at each epoch end, has the
gradient ``λ`` with respect to the losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from recmtl.aggregators._loss_weights import broadcast_weights, step_losses
from recmtl.aggregators._math import compute_dtype, masked_softmax, safe_div
from recmtl.aggregators.base import Aggregator, State, StepInfo, TaskGrads, Weights, option


def dwa_weights(newer: Tensor, older: Tensor, active: Tensor, temperature: float) -> Tensor:
    """``λ = K softmax((newer / older) / τ)`` over the ``active`` [T] tasks (K of them), 0 elsewhere.

    ``newer``, ``older`` [T]: the last two epoch averages (float64; the rate of a zero ``older`` is 0).
    """
    rates = safe_div(newer, older)
    return active.sum().to(rates.dtype) * masked_softmax(rates / temperature, active)


@dataclass(frozen=True)
class DWA(Aggregator):
    """Dynamic weight average (see the module docstring)."""

    temperature: float = option(
        2.0, low=0.0, high=1e3, low_open=True, help="softmax temperature τ of the loss-descent rates"
    )

    name: ClassVar[str] = "dwa"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})
    paper_modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})  # global weights: same update
    summary: ClassVar[str] = (
        "loss weights from each task's ratio of its last two epoch-average losses, softmax at temperature 2"
    )
    paper: ClassVar[str] = "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019"

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        zeros = torch.zeros(n_tasks, dtype=torch.float64)
        return {
            "loss_sum": zeros,
            "steps": zeros.clone(),
            "newer": zeros.clone(),  # average of the last finished epoch
            "older": zeros.clone(),  # average of the epoch before
            "n_averages": zeros.clone(),  # how many of newer / older exist (0, 1, 2)
            "epoch": torch.full((), -1.0, dtype=torch.float64),  # the epoch loss_sum / steps belong to
        }

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        device = grads.present.device
        losses = step_losses(self.name, info, grads.n_tasks, device)
        st = {k: v.to(device) for k, v in (state or self.init_state(grads.n_tasks, 0)).items()}
        active = grads.present.any(0)  # [T] tasks present in this step

        # a new epoch: the finished epoch's average becomes the newest (tasks that had a step in it)
        roll = (st["epoch"] < info.epoch) & (st["steps"] > 0)
        average = safe_div(st["loss_sum"], st["steps"])
        older = torch.where(roll, st["newer"], st["older"])
        newer = torch.where(roll, average, st["newer"])
        n_averages = torch.where(roll, (st["n_averages"] + 1.0).clamp(max=2.0), st["n_averages"])
        loss_sum = torch.where(roll, 0.0, st["loss_sum"])
        steps = torch.where(roll, 0.0, st["steps"])

        ready = ((n_averages >= 2) | ~active).all()  # every present task has two averages
        w = torch.where(ready, dwa_weights(newer, older, active, float(self.temperature)), active.double())
        coefficients = broadcast_weights(w, grads.present, compute_dtype(grads.values.dtype))

        new_state = {
            "loss_sum": loss_sum + torch.where(active, losses, 0.0),
            "steps": steps + active.double(),
            "newer": newer,
            "older": older,
            "n_averages": n_averages,
            "epoch": st["epoch"].clamp(min=float(info.epoch)),
        }
        return Weights(coefficients, new_state)
