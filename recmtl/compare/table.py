"""The comparison of grouped runs: mean ± std over seeds of every metric at every K, relative improvement
over a baseline group, paired tests against it with Holm's correction, the best value per metric, and the
breakdown by user activity.

Tests against the baseline, for every metric and every other group (runs paired by seed):

- ``seed S``: per-user paired t-test and Wilcoxon signed-rank test between the group's run of seed S and
  the baseline's (users joined on user_id);
- ``pooled``: the same two tests on the per-user differences of every shared seed pooled together
  (users x seeds pairs) — the p-values the tables show;
- ``seeds``: the paired t-test across seeds on the per-seed means (needs at least 2 shared seeds).

Holm's correction runs over the compared groups, separately for each metric, scope and test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recmtl.compare.groups import Group, group_runs
from recmtl.compare.instruments import instruments_table
from recmtl.compare.load import Run, train_counts
from recmtl.compare.stats import (
    activity_bucket,
    activity_thresholds,
    holm,
    mean_std,
    paired_tests,
    relative_improvement,
)
from recmtl.errors import RecmtlError

BUCKETS = ("cold", "mid", "heavy")

SUMMARY_SCHEMA = {
    "group": pl.String,
    "method": pl.String,
    "n_seeds": pl.Int64,
    "metric": pl.String,
    "mean": pl.Float64,
    "std": pl.Float64,
    "rel_impr_pct": pl.Float64,
    "best": pl.Boolean,
    "p_ttest": pl.Float64,
    "p_ttest_holm": pl.Float64,
    "p_wilcoxon": pl.Float64,
    "p_wilcoxon_holm": pl.Float64,
    "p_seeds": pl.Float64,
    "p_seeds_holm": pl.Float64,
}
TESTS_SCHEMA = {
    "group": pl.String,
    "metric": pl.String,
    "scope": pl.String,
    "test": pl.String,
    "n": pl.Int64,
    "mean_diff": pl.Float64,
    "statistic": pl.Float64,
    "p": pl.Float64,
    "p_holm": pl.Float64,
}


@dataclass(frozen=True)
class Comparison:
    """Everything the reports and plots of one comparison show."""

    groups: list[Group]
    metrics: list[str]  # "recall@10", ... in metrics.json order, those every run has
    focus: str  # the metric the terminal table, the best-marks of the summary and the plots focus on
    baseline: str | None  # the baseline group's label
    dataset: str
    split: str
    summary: pl.DataFrame  # one row per (group, metric): SUMMARY_SCHEMA
    tests: pl.DataFrame  # one row per (group, metric, scope, test): TESTS_SCHEMA
    activity: pl.DataFrame  # group, bucket, metric, mean, std, n_users (focus metric by activity bucket)
    activity_from: str  # "train" (all users' training counts) or "evaluated" (the evaluated users' only)
    instruments: pl.DataFrame  # one row per instrumented group (recmtl.compare.instruments.SCHEMA)

    def cell(self, group: str, metric: str) -> dict[str, Any]:
        """The summary row of ``group`` x ``metric`` as a dict."""
        rows = self.summary.filter((pl.col("group") == group) & (pl.col("metric") == metric))
        return rows.row(0, named=True)


def resolve_baseline(groups: list[Group], name: str | None) -> Group | None:
    """The group ``name`` names: a group label, else a method with exactly one group; None for None."""
    if name is None:
        return None
    labels = [g.label for g in groups]
    exact = [g for g in groups if g.label == name]
    if exact:
        return exact[0]
    by_method = [g for g in groups if g.method == name]
    if len(by_method) == 1:
        return by_method[0]
    if by_method:
        raise RecmtlError(
            f"--baseline {name}: {len(by_method)} groups use method {name} "
            f"({'; '.join(g.label for g in by_method)}): give one of these labels"
        )
    raise RecmtlError(f"--baseline {name}: no such group or method (groups: {'; '.join(labels)})")


def _metric_order(runs: list[Run]) -> list[str]:
    names = list(runs[0].metrics)
    return [m for m in names if all(m in r.metrics and m in r.per_user.columns for r in runs)]


def _pairs(group: Group, baseline: Group, metric: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (group's per-user values, baseline's), users joined on user_id, for every shared seed."""
    base = baseline.by_seed()
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for seed, run in group.by_seed().items():
        if seed not in base:
            continue
        joined = run.per_user.select("user_id", pl.col(metric).alias("a")).join(
            base[seed].per_user.select("user_id", pl.col(metric).alias("b")), on="user_id", how="inner"
        )
        out[seed] = (joined["a"].to_numpy(), joined["b"].to_numpy())
    return out


def _tests(groups: list[Group], baseline: Group, metrics: list[str]) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    for group in groups:
        if group is baseline:
            continue
        for metric in metrics:
            pairs = _pairs(group, baseline, metric)
            scopes = [(f"seed {s}", a, b) for s, (a, b) in sorted(pairs.items())]
            if pairs:
                pooled_a = np.concatenate([a for a, _ in pairs.values()])
                pooled_b = np.concatenate([b for _, b in pairs.values()])
                scopes.append(("pooled", pooled_a, pooled_b))
            for scope, a, b in scopes:
                r = paired_tests(a, b)
                for test, statistic, p in (("ttest", r.t_stat, r.t_p), ("wilcoxon", r.w_stat, r.w_p)):
                    rows.append(
                        dict(
                            group=group.label,
                            metric=metric,
                            scope=scope,
                            test=test,
                            n=r.n,
                            mean_diff=r.mean_diff,
                            statistic=statistic,
                            p=p,
                        )
                    )
            base = baseline.by_seed()
            seeds = sorted(s for s in group.by_seed() if s in base)
            a = np.array([group.by_seed()[s].metrics[metric] for s in seeds])
            b = np.array([base[s].metrics[metric] for s in seeds])
            r = paired_tests(a, b)
            rows.append(dict(group=group.label, metric=metric, scope="seeds", test="ttest", n=r.n,
                             mean_diff=r.mean_diff, statistic=r.t_stat, p=r.t_p))  # fmt: skip
    frame = pl.DataFrame(rows, schema={k: v for k, v in TESTS_SCHEMA.items() if k != "p_holm"})
    if frame.is_empty():
        return frame.with_columns(pl.lit(None, pl.Float64).alias("p_holm"))
    # Holm over the compared groups, per (metric, scope, test)
    frame = frame.with_row_index("_i")
    adjusted = np.full(frame.height, np.nan)
    for part in frame.partition_by("metric", "scope", "test"):
        adjusted[part["_i"].to_numpy()] = holm(part["p"].to_numpy())
    return frame.drop("_i").with_columns(pl.Series("p_holm", adjusted))


def _summary(
    groups: list[Group], baseline: Group | None, metrics: list[str], tests: pl.DataFrame
) -> pl.DataFrame:
    def p_of(group: str, metric: str, scope: str, test: str) -> tuple[float, float]:
        if tests.is_empty():
            return math.nan, math.nan
        hit = tests.filter(
            (pl.col("group") == group)
            & (pl.col("metric") == metric)
            & (pl.col("scope") == scope)
            & (pl.col("test") == test)
        )
        return (hit["p"][0], hit["p_holm"][0]) if hit.height else (math.nan, math.nan)

    rows: list[dict[str, Any]] = []
    means: dict[tuple[str, str], float] = {}
    for group in groups:
        for metric in metrics:
            means[group.label, metric] = mean_std([r.metrics[metric] for r in group.runs])[0]
    for group in groups:
        for metric in metrics:
            mean, std = mean_std([r.metrics[metric] for r in group.runs])
            rel = math.nan if baseline is None else relative_improvement(mean, means[baseline.label, metric])
            t, t_holm = p_of(group.label, metric, "pooled", "ttest")
            w, w_holm = p_of(group.label, metric, "pooled", "wilcoxon")
            s, s_holm = p_of(group.label, metric, "seeds", "ttest")
            best = max(means[g.label, metric] for g in groups)
            rows.append(
                dict(
                    group=group.label,
                    method=group.method,
                    n_seeds=len(group.runs),
                    metric=metric,
                    mean=mean,
                    std=std,
                    rel_impr_pct=rel,
                    best=bool(mean == best),
                    p_ttest=t,
                    p_ttest_holm=t_holm,
                    p_wilcoxon=w,
                    p_wilcoxon_holm=w_holm,
                    p_seeds=s,
                    p_seeds_holm=s_holm,
                )  # fmt: skip
            )
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def _activity(groups: list[Group], metric: str, thresholds: tuple[float, float]) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    for group in groups:
        per_seed: dict[int, list[float]] = {b: [] for b in range(len(BUCKETS))}
        n_users = [0] * len(BUCKETS)
        for run in group.runs:
            bucket = activity_bucket(run.per_user["n_train"].to_numpy(), thresholds)
            values = run.per_user[metric].to_numpy()
            for b in range(len(BUCKETS)):
                mask = bucket == b
                n_users[b] = int(mask.sum())
                per_seed[b].append(float(values[mask].mean()) if mask.any() else math.nan)
        for b, name in enumerate(BUCKETS):
            mean, std = mean_std(per_seed[b])
            rows.append(
                dict(group=group.label, bucket=name, metric=metric, mean=mean, std=std, n_users=n_users[b])
            )
    schema = {"group": pl.String, "bucket": pl.String, "metric": pl.String, "mean": pl.Float64,
              "std": pl.Float64, "n_users": pl.Int64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def compare(runs: list[Run], *, baseline: str | None = None, focus: str = "ndcg@20") -> Comparison:
    """The comparison of ``runs`` (already checked comparable, :func:`~recmtl.compare.load.load_runs`)
    against the group ``baseline`` names (a label or a method; None: no improvements, no tests)."""
    if not runs:
        raise RecmtlError("no runs to compare")
    groups = group_runs(runs)
    metrics = _metric_order(runs)
    if focus not in metrics:
        raise RecmtlError(f"--metric {focus}: not evaluated in every run (evaluated: {', '.join(metrics)})")
    base = resolve_baseline(groups, baseline)
    tests = _tests(groups, base, metrics) if base is not None else pl.DataFrame(schema=TESTS_SCHEMA)
    summary = _summary(groups, base, metrics, tests)
    counts = train_counts(runs[0].data.get("path") or runs[0].config.get("data") or "")
    activity_from = "train"
    if counts is None:
        counts, activity_from = runs[0].per_user["n_train"].to_numpy(), "evaluated"
    activity = _activity(groups, focus, activity_thresholds(counts))
    return Comparison(
        groups=groups,
        metrics=metrics,
        focus=focus,
        baseline=base.label if base is not None else None,
        dataset=str(runs[0].data.get("name") or "?"),
        split=runs[0].split,
        summary=summary,
        tests=tests,
        activity=activity,
        activity_from=activity_from,
        instruments=instruments_table(groups),
    )
