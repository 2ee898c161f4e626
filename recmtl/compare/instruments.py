"""What the training instruments recorded, per group (METHODS.md §4.5; metrics.parquet, one row per epoch):

- ``meet_fraction``: the fraction of a step's touched rows where at least two tasks meet, averaged over
  the run's epochs (it depends on the sampling and the tasks, hardly on the epoch);
- ``main_weight_{mean,q25,q50,q75}@{cold,mid,heavy}_users``: the mean and quartiles, over the users of
  each activity group, of a user's mean main-task weight over the epoch (PMTRec: its softmax weight w_0;
  :mod:`recmtl.train.instruments`), at the run's selected epoch (the last epoch marked ``best``: the
  model that was evaluated).

Each value is the mean over the group's runs that recorded it (runs written before the instruments existed
have no such columns and are left out; ``runs`` says how many counted). Groups with no instrumented run get
no row.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from recmtl.compare.groups import Group
from recmtl.train.instruments import USER_GROUPS, instrument_columns

#: The activity groups the trainer reports (cold_users, mid_users, heavy_users).
ACTIVITY = tuple(USER_GROUPS.values())
#: The per-group columns, in report order (the trainer's instrument columns).
COLUMNS = tuple(instrument_columns(USER_GROUPS))
SCHEMA = {"group": pl.String, "runs": pl.Int64} | dict.fromkeys(COLUMNS, pl.Float64)


def run_instruments(history: pl.DataFrame | None) -> dict[str, float] | None:
    """:data:`COLUMNS` of one run's metrics.parquet (NaN where a column or value is missing), or None when
    the run recorded no instruments."""
    if history is None or "meet_fraction" not in history.columns or history.height == 0:
        return None
    out = {"meet_fraction": _nanmean(history["meet_fraction"].to_list())}
    selected = history.filter(pl.col("best")).tail(1) if "best" in history.columns else history.tail(1)
    if selected.height == 0:
        selected = history.tail(1)
    for column in COLUMNS[1:]:
        value = selected[column][0] if column in selected.columns else None
        out[column] = math.nan if value is None else float(value)
    return out


def instruments_table(groups: list[Group]) -> pl.DataFrame:
    """One row per group with at least one instrumented run: ``group``, ``runs`` and :data:`COLUMNS`."""
    rows: list[dict[str, Any]] = []
    for group in groups:
        recorded = [r for r in (run_instruments(run.history) for run in group.runs) if r is not None]
        if not recorded:
            continue
        row: dict[str, Any] = {"group": group.label, "runs": len(recorded)}
        row |= {c: _nanmean([r[c] for r in recorded]) for c in COLUMNS}
        rows.append(row)
    return pl.DataFrame(rows, schema=SCHEMA)


def _nanmean(values: list[float | None]) -> float:
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else math.nan
