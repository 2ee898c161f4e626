"""Per-epoch instruments of where tasks meet and how the main task is weighted (METHODS.md §4.5).

:class:`EpochInstruments` accumulates, step by step and without a host sync, what the epoch's record and
``user_weights.parquet`` report:

- ``meet_fraction``: the fraction of a step's touched rows (users and items, de-duplicated) where at least
  two tasks are present, averaged over the epoch's steps with equal weight per step (the unweighted mean
  of the per-step fractions; the last, smaller batch counts as one step like the others);
- the main task's weight per user: the logged weight of the main task (task 0; PMTRec: its softmax
  weight w_0, not the coefficient c_0; fixed-weight methods: their constant weight) summed over the steps
  where the main task is present on the user's row, and that count, in two ``[n_users]`` float64 vectors
  (16 bytes per user: one ``index_add`` per step over the touched rows, nothing per row kept). Their ratio
  is the user's mean main weight over the epoch (NaN for a user the main task never touched, or a method
  that logs no weights);
- per user-activity group (cold / mid / heavy users: the trainer's training-interaction terciles), the
  mean and the quartiles (q25, q50, q75) of those per-user means over the group's users: exact quantiles of
  one value per user, so no reservoir or histogram is needed. (``weight_rec@cold_users`` and the like
  weigh each (row, step) occurrence instead, so heavy users' many steps count more there.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl
import torch
from torch import Tensor

QUARTILES = (0.25, 0.5, 0.75)

#: Row groups for logging the mean aggregation weights: item rows, then users by training activity
#: (terciles of the per-user training interaction count: cold <= q1/3 < mid <= q2/3 < heavy).
ROW_GROUPS = ("items", "cold_users", "mid_users", "heavy_users")
USER_GROUPS = {g: name for g, name in enumerate(ROW_GROUPS) if name != "items"}  # the instruments' groups


class EpochInstruments:
    """One epoch's accumulators; :meth:`add` per step, then :meth:`record` and :meth:`user_frame`."""

    def __init__(
        self,
        n_users: int,
        row_groups: Tensor,
        group_names: Mapping[int, str],
        device: torch.device,
        main_task: int = 0,
    ) -> None:
        """``row_groups`` [N] the group id of every storage row (users first), ``group_names`` the user
        groups to report (id -> name, e.g. 1 -> "cold_users")."""
        self.n_users = n_users
        self.user_groups = row_groups[:n_users]  # [U] group id of every user
        self.group_names = dict(group_names)
        self.main_task = main_task
        self.meet_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.steps = 0
        self.weight_sum = torch.zeros(n_users, dtype=torch.float64, device=device)
        self.weight_count = torch.zeros(n_users, dtype=torch.float64, device=device)
        self.logged = False  # whether any step logged weights

    def add(self, rows: Tensor, present: Tensor, logged: Tensor | None) -> None:
        """One step: its touched storage ``rows`` [R] (users first), the presence ``present`` [R, T] and the
        logged weights ``logged`` [R or 1, T] (None: the method logs none)."""
        self.steps += 1
        if rows.numel():
            self.meet_sum += (present.sum(dim=1) >= 2).to(torch.float64).mean()
        if logged is None or self.n_users == 0:
            return
        self.logged = True
        main = present[:, self.main_task] & (rows < self.n_users)  # user rows the main task touched
        values = logged[:, self.main_task].to(torch.float64).expand(rows.shape)
        users = rows.clamp(max=self.n_users - 1)  # (item rows contribute 0)
        self.weight_sum.index_add_(0, users, torch.where(main, values, 0.0))
        self.weight_count.index_add_(0, users, main.to(torch.float64))

    def user_means(self) -> Tensor:
        """[U] float64: each user's mean main weight over the epoch (NaN: never touched / no weights)."""
        if not self.logged:
            return torch.full_like(self.weight_sum, math.nan)
        return torch.where(self.weight_count > 0, self.weight_sum / self.weight_count.clamp(min=1), math.nan)

    def record(self) -> dict[str, float]:
        """``meet_fraction`` and ``main_weight_{mean,q25,q50,q75}@{cold,mid,heavy}_users``."""
        out = {"meet_fraction": float(self.meet_sum) / self.steps if self.steps else math.nan}
        means = self.user_means()
        for gid, group in self.group_names.items():
            values = means[(self.user_groups == gid) & ~torch.isnan(means)]
            if values.numel():
                q = torch.quantile(values, torch.tensor(QUARTILES, dtype=values.dtype, device=values.device))
                stats = [float(values.mean()), *map(float, q.tolist())]
            else:
                stats = [math.nan] * 4
            for name, value in zip(("mean", "q25", "q50", "q75"), stats, strict=True):
                out[f"main_weight_{name}@{group}"] = value
        return out

    def user_frame(self, n_train: Tensor, epoch: int) -> pl.DataFrame:
        """user_weights.parquet: user_id, n_train (training interactions), main_weight (mean over the
        epoch), main_steps (steps where the main task touched the user), epoch."""
        return pl.DataFrame(
            {
                "user_id": pl.Series(range(self.n_users), dtype=pl.Int64),
                "n_train": pl.Series(n_train.cpu().numpy(), dtype=pl.Int64),
                "main_weight": pl.Series(self.user_means().cpu().numpy(), dtype=pl.Float64),
                "main_steps": pl.Series(self.weight_count.cpu().numpy(), dtype=pl.Float64).cast(pl.Int64),
                "epoch": pl.Series([epoch] * self.n_users, dtype=pl.Int64),
            }
        )


def instrument_columns(group_names: Mapping[int, str]) -> list[str]:
    """The columns :meth:`EpochInstruments.record` adds to every epoch's record."""
    names = ["meet_fraction"]
    for group in group_names.values():
        names += [f"main_weight_{s}@{group}" for s in ("mean", "q25", "q50", "q75")]
    return names
