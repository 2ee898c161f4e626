"""Comparable-sample analysis (`recmtl compare --buckets aux-ratio`): the focus metric's change over the
baseline by how much auxiliary signal a user has relative to main-task signal.

A user's auxiliary-to-main ratio is ``#friends / #training interactions``: the out-degree of the user in
the dataset's social table (the edges the ``social`` task samples anchored on the user) over the user's
training interactions (``n_train`` of ``per_user.parquet``, at least 1). Buckets:

- ``none``: ratio 0, no social edge (the auxiliary task never anchors on the user);
- ``low`` / ``mid`` / ``high``: terciles of the positive ratios of the evaluated users (the baseline's
  first run): low <= q1/3 < mid <= q2/3 < high.

For every compared group but the baseline and every bucket: per seed shared with the baseline, the mean
over the bucket's users of the per-user difference (group − baseline, users joined on user_id); then the
mean and sample std of those per-seed means over seeds. With the single-task baseline this is "what the
auxiliary tasks and the encoder bought, for users with little or much auxiliary signal".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recmtl.compare.groups import Group
from recmtl.compare.load import social_degrees
from recmtl.compare.stats import mean_std
from recmtl.compare.table import Comparison
from recmtl.data.store import atomic_write_text
from recmtl.errors import RecmtlError

#: ``--buckets`` kinds.
BUCKET_KINDS = ("aux-ratio",)
AUX_RATIO_BUCKETS = ("none", "low", "mid", "high")

SCHEMA = {
    "group": pl.String,
    "bucket": pl.String,
    "ratio": pl.String,  # the bucket's ratio range, e.g. "(0.05, 0.2]"
    "n_users": pl.Int64,
    "metric": pl.String,
    "n_seeds": pl.Int64,
    "mean": pl.Float64,  # the group's metric in the bucket (mean over seeds)
    "baseline_mean": pl.Float64,
    "diff_mean": pl.Float64,  # mean over seeds of the mean per-user difference (group - baseline)
    "diff_std": pl.Float64,
}


def aux_ratio(friends: np.ndarray, n_train: np.ndarray) -> np.ndarray:
    """[N] #friends / max(#training interactions, 1) of N users (``friends``, ``n_train`` [N])."""
    n = np.maximum(np.asarray(n_train, dtype=np.float64), 1.0)
    return np.asarray(friends, dtype=np.float64) / n


def aux_ratio_thresholds(ratio: np.ndarray) -> tuple[float, float]:
    """Tercile cut points (q1/3, q2/3; linear interpolation) of the positive ratios; (0, 0) if none."""
    positive = np.asarray(ratio, dtype=np.float64)
    positive = positive[positive > 0]
    if positive.size == 0:
        return 0.0, 0.0
    q1, q2 = np.quantile(positive, [1 / 3, 2 / 3])
    return float(q1), float(q2)


def aux_ratio_bucket(ratio: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """[N] index into AUX_RATIO_BUCKETS: 0 (none) for ratio 0, else 1 (low), 2 (mid) or 3 (high)."""
    r = np.asarray(ratio, dtype=np.float64)
    above = 1 + (r > thresholds[0]).astype(np.int64) + (r > thresholds[1]).astype(np.int64)
    return np.where(r > 0, above, 0)


def ratio_ranges(thresholds: tuple[float, float]) -> tuple[str, ...]:
    """The ratio range of each bucket, as text."""
    q1, q2 = thresholds
    return ("0", f"(0, {q1:.3g}]", f"({q1:.3g}, {q2:.3g}]", f"> {q2:.3g}")


def _ratios(frame: pl.DataFrame, friends: np.ndarray) -> np.ndarray:
    """[N] aux-to-main ratio of the users of a per-user ``frame`` (user_id, n_train)."""
    users = frame["user_id"].to_numpy().astype(np.int64)
    if users.size and users.max() >= friends.size:
        raise RecmtlError(
            f"--buckets aux-ratio: user id {int(users.max())} is beyond the dataset's {friends.size} users"
        )
    return aux_ratio(friends[users], frame["n_train"].to_numpy())


def aux_ratio_table(c: Comparison, friends: np.ndarray) -> tuple[pl.DataFrame, tuple[float, float]]:
    """The per-bucket change of ``c.focus`` over ``c.baseline`` for every other group (SCHEMA rows, groups
    in ``c`` order, buckets in AUX_RATIO_BUCKETS order; a bucket with no evaluated user, e.g. ``none`` on a
    dataset where every user has a friend, is left out) and the tercile thresholds used.

    ``friends`` [U]: social out-degree of every user of the dataset."""
    if c.baseline is None:
        raise RecmtlError("--buckets aux-ratio needs --baseline (the run to subtract, e.g. single)")
    baseline = next(g for g in c.groups if g.label == c.baseline)
    thresholds = aux_ratio_thresholds(_ratios(baseline.runs[0].per_user, friends))
    ranges = ratio_ranges(thresholds)
    rows: list[dict[str, Any]] = []
    metric = c.focus
    base_by_seed = baseline.by_seed()
    for group in c.groups:
        if group is baseline:
            continue
        rows += _group_rows(group, base_by_seed, metric, friends, thresholds, ranges)
    return pl.DataFrame(rows, schema=SCHEMA).filter(pl.col("n_users") > 0), thresholds


def _group_rows(
    group: Group,
    base_by_seed: dict[int, Any],
    metric: str,
    friends: np.ndarray,
    thresholds: tuple[float, float],
    ranges: tuple[str, ...],
) -> list[dict[str, Any]]:
    n_buckets = len(AUX_RATIO_BUCKETS)
    diffs: list[list[float]] = [[] for _ in range(n_buckets)]
    means: list[list[float]] = [[] for _ in range(n_buckets)]
    base_means: list[list[float]] = [[] for _ in range(n_buckets)]
    n_users = [0] * n_buckets
    for seed, run in group.by_seed().items():
        if seed not in base_by_seed:
            continue
        base = base_by_seed[seed].per_user.select("user_id", pl.col(metric).alias("b"))
        joined = run.per_user.select("user_id", "n_train", pl.col(metric).alias("a")).join(base, on="user_id")
        bucket = aux_ratio_bucket(_ratios(joined, friends), thresholds)
        a, b = joined["a"].to_numpy(), joined["b"].to_numpy()
        for k in range(n_buckets):
            mask = bucket == k
            n_users[k] = int(mask.sum())
            if mask.any():
                diffs[k].append(float((a[mask] - b[mask]).mean()))
                means[k].append(float(a[mask].mean()))
                base_means[k].append(float(b[mask].mean()))
    rows = []
    for k, name in enumerate(AUX_RATIO_BUCKETS):
        diff_mean, diff_std = mean_std(diffs[k])
        rows.append(
            dict(
                group=group.label,
                bucket=name,
                ratio=ranges[k],
                n_users=n_users[k],
                metric=metric,
                n_seeds=len(diffs[k]),
                mean=mean_std(means[k])[0],
                baseline_mean=mean_std(base_means[k])[0],
                diff_mean=diff_mean,
                diff_std=diff_std,
            )  # fmt: skip
        )
    return rows


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def to_markdown(table: pl.DataFrame, c: Comparison) -> str:
    """The per-bucket table: one row per group, one column per bucket (Δ mean ± std over seeds)."""
    metric = c.focus
    lines = [
        f"# {metric} minus {c.baseline} by auxiliary-to-main ratio ({c.dataset} · {c.split})",
        "",
        "Ratio = #friends (social out-degree) / #training interactions; `none`: no friend; low / mid / high: "
        "terciles of the positive ratios of the evaluated users. Cells: mean over seeds of the bucket's mean "
        f"per-user difference in {metric} (group − {c.baseline}) ± std over seeds.",
        "",
    ]
    buckets = table.unique("bucket", maintain_order=True)
    heads = [f"{r['bucket']} {r['ratio']} ({r['n_users']} users)" for r in buckets.iter_rows(named=True)]
    lines.append("| group | " + " | ".join(heads) + " |")
    lines.append("|---|" + "---:|" * len(heads))
    for label in table.unique("group", maintain_order=True)["group"]:
        cells = [
            f"{_fmt(r['diff_mean'], signed=True)} ± {_fmt(r['diff_std'])}"
            for r in table.filter(pl.col("group") == label).iter_rows(named=True)
        ]
        lines.append(f"| {label.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: pl.DataFrame) -> str:
    return table.fill_nan(None).write_csv(float_precision=6)


def friends_of(c: Comparison) -> np.ndarray:
    """[U] social out-degree of every user of the compared runs' dataset; a RecmtlError when the dataset
    (the path in the runs' config.json) or its social table cannot be read."""
    run = c.groups[0].runs[0]
    path = run.data.get("path") or run.config.get("data") or ""
    friends = social_degrees(Path(path))
    if friends is None:
        raise RecmtlError(
            f"--buckets aux-ratio: cannot read the social table of the runs' dataset {path} "
            "(it must be there, prepared with a social table)"
        )
    return friends


FILES = ("buckets_aux_ratio.md", "buckets_aux_ratio.csv")
PLOT = "buckets_aux_ratio.png"


def write_aux_ratio(table: pl.DataFrame, c: Comparison, out: Path, *, plots: bool = True) -> list[Path]:
    """Write FILES (and PLOT unless not ``plots``) into ``out``; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in zip(FILES, (to_markdown(table, c), to_csv(table)), strict=True):
        atomic_write_text(out / name, text)
        written.append(out / name)
    if plots:
        from recmtl.compare.plots import plot_aux_ratio  # (matplotlib: imported only when plotting)

        written.append(plot_aux_ratio(table, c, out / PLOT))
    return written
