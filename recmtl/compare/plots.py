"""PNG figures of a comparison (matplotlib, Agg back end: no display needed).

Every figure is :data:`FIGSIZE` inches at :data:`DPI` (800 x 500 pixels), written atomically:

- ``valid_curve.png``: the validation focus metric (valid_ndcg@20) per epoch, mean over seeds (band: ±std);
- ``task_weights.png``: the mean per-task aggregation weight (weight_<task>) per epoch, one panel per task;
- ``activity.png``: the test focus metric by user-activity bucket (cold / mid / heavy), mean ± std over seeds;
- ``heatmap_<method>.png``: for a method whose groups vary exactly two of its options (a sensitivity
  grid), the test focus metric over the grid;
- ``buckets_aux_ratio.png`` (``--buckets aux-ratio``): the focus metric minus the baseline by
  auxiliary-to-main ratio bucket (:mod:`recmtl.compare.buckets`).
- ``main_weight_by_activity.png``: when runs have ``user_weights.parquet``, the main task's weight (each
  user's mean over the last epoch, averaged over the group's seeds) against the user's number of training
  interactions (log x), as the mean over log-spaced activity bins, one line per group.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the back end)
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recmtl.compare.groups import Group, grid_of  # noqa: E402
from recmtl.compare.table import BUCKETS, Comparison  # noqa: E402
from recmtl.data.store import atomic_file  # noqa: E402

FIGSIZE = (8.0, 5.0)
DPI = 100


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return path


def _per_epoch(group: Group, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(epochs, mean, std) of ``column`` over the group's runs (each epoch over the seeds that reached it)."""
    frames = [
        r.history.select("epoch", pl.col(column).cast(pl.Float64).alias("v"))
        for r in group.runs
        if r.history is not None and column in r.history.columns
    ]
    if not frames:
        return None
    stacked = pl.concat(frames).drop_nans().drop_nulls()
    if stacked.is_empty():
        return None
    agg = (
        stacked.group_by("epoch")
        .agg(pl.col("v").mean().alias("m"), pl.col("v").std().alias("s"))
        .sort("epoch")
    )
    return agg["epoch"].to_numpy(), agg["m"].to_numpy(), np.nan_to_num(agg["s"].to_numpy())


def plot_validation(c: Comparison, path: Path) -> Path | None:
    """Validation ``c.focus`` per epoch per group; None when no run logged it."""
    column = f"valid_{c.focus}"
    fig, ax = plt.subplots(figsize=FIGSIZE)
    drawn = 0
    for group in c.groups:
        curve = _per_epoch(group, column)
        if curve is None:
            continue
        epochs, mean, std = curve
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=group.label)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2, color=line.get_color())
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(column)
    ax.set_title(f"{c.dataset}: validation {c.focus} (mean over seeds, band ±std)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _tasks(c: Comparison) -> list[str]:
    names: list[str] = []
    for g in c.groups:
        for r in g.runs:
            if r.history is not None:
                names += [
                    k[len("weight_") :] for k in r.history.columns if k.startswith("weight_") and "@" not in k
                ]
    return list(dict.fromkeys(names))


def plot_weights(c: Comparison, path: Path) -> Path | None:
    """Mean per-task aggregation weight per epoch per group, one panel per task; None when none logged."""
    tasks = _tasks(c)
    if not tasks:
        return None
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=FIGSIZE, squeeze=False, sharex=True)
    drawn = 0
    for ax, task in zip(axes.flat, tasks, strict=False):
        for group in c.groups:
            curve = _per_epoch(group, f"weight_{task}")
            if curve is None:
                continue
            epochs, mean, _ = curve
            ax.plot(epochs, mean, marker="o", markersize=3, label=group.label)
            drawn += 1
        ax.set_title(f"weight_{task}", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    if not drawn:
        plt.close(fig)
        return None
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        axes.flat[0].legend(handles, labels, fontsize="x-small")
    fig.suptitle(f"{c.dataset}: mean per-task aggregation weight (mean over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_activity(c: Comparison, path: Path) -> Path:
    """Test ``c.focus`` by user-activity bucket, grouped bars (one per group), mean ± std over seeds."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    n = len(c.groups)
    width = 0.8 / max(n, 1)
    x = np.arange(len(BUCKETS))
    for i, group in enumerate(c.groups):
        rows = c.activity.filter(pl.col("group") == group.label)
        by = {r["bucket"]: r for r in rows.iter_rows(named=True)}
        mean = [by[b]["mean"] if b in by else math.nan for b in BUCKETS]
        std = [by[b]["std"] if b in by else 0.0 for b in BUCKETS]
        ax.bar(x - 0.4 + width * (i + 0.5), mean, width, yerr=std, capsize=3, label=group.label)
    counts = c.activity.filter(pl.col("group") == c.groups[0].label)["n_users"].to_list()
    ax.set_xticks(x, [f"{b} ({u} users)" for b, u in zip(BUCKETS, counts, strict=False)])
    ax.set_ylabel(f"test {c.focus}")
    ax.set_title(f"{c.dataset}: {c.split} {c.focus} by user activity (training interactions, terciles)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


#: Log-spaced activity bins per decade in ``main_weight_by_activity.png``.
BINS_PER_DECADE = 4


def _user_main_weights(group: Group) -> pl.DataFrame | None:
    """user_id, n_train, main_weight (mean over the group's seeds) for the users with a weight; None if no
    run of the group has user_weights.parquet."""
    frames = [
        r.user_weights.select("user_id", "n_train", pl.col("main_weight").cast(pl.Float64))
        for r in group.runs
        if r.user_weights is not None
    ]
    if not frames:
        return None
    users = (
        pl.concat(frames)
        .drop_nans("main_weight")
        .drop_nulls()
        .filter(pl.col("n_train") > 0)
        .group_by("user_id")
        .agg(pl.col("n_train").first(), pl.col("main_weight").mean())
    )
    return None if users.is_empty() else users


def binned_by_activity(users: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(x, mean main weight) over log-spaced bins of n_train (:data:`BINS_PER_DECADE` per decade); x is the
    geometric mean of the bin's users' n_train; empty bins are left out."""
    n = users["n_train"].to_numpy().astype(np.float64)
    w = users["main_weight"].to_numpy()
    bins = np.floor(np.log10(n) * BINS_PER_DECADE).astype(np.int64)
    xs, ys = [], []
    for b in np.unique(bins):
        inside = bins == b
        xs.append(float(np.exp(np.log(n[inside]).mean())))
        ys.append(float(w[inside].mean()))
    return np.array(xs), np.array(ys)


def plot_main_weight_by_activity(c: Comparison, path: Path) -> Path | None:
    """Main-task weight vs training interactions (log x), one line per group with user weights; None
    when no run has user_weights.parquet."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    drawn = 0
    for group in c.groups:
        users = _user_main_weights(group)
        if users is None:
            continue
        x, y = binned_by_activity(users)
        ax.plot(x, y, marker="o", markersize=3, label=f"{group.label} ({users.height} users)")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("user's training interactions (log scale)")
    ax.set_ylabel("main-task weight (user mean, last epoch)")
    ax.set_title(f"{c.dataset}: main-task weight by user activity (bin means, mean over seeds)")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)


def plot_heatmap(c: Comparison, method: str, a: str, b: str, groups: list[Group], path: Path) -> Path:
    """Test ``c.focus`` (mean over seeds) over the grid of ``method``'s options ``a`` (rows) x ``b``."""
    rows = sorted({g.options[f"method.{a}"] for g in groups}, key=_order)
    cols = sorted({g.options[f"method.{b}"] for g in groups}, key=_order)
    grid = np.full((len(rows), len(cols)), np.nan)
    for g in groups:
        i, j = rows.index(g.options[f"method.{a}"]), cols.index(g.options[f"method.{b}"])
        grid[i, j] = c.cell(g.label, c.focus)["mean"]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), [str(v) for v in cols])
    ax.set_yticks(range(len(rows)), [str(v) for v in rows])
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    finite = grid[np.isfinite(grid)]
    middle = float(finite.mean()) if finite.size else 0.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                color = "black" if grid[i, j] > middle else "white"
                ax.text(j, i, f"{grid[i, j]:.4f}", ha="center", va="center", color=color, fontsize="small")
    fig.colorbar(image, ax=ax, label=f"{c.split} {c.focus}")
    ax.set_title(f"{c.dataset}: {method} sensitivity, {c.split} {c.focus} (mean over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def _order(value: object) -> tuple[int, float, str]:
    return (0, float(value), "") if isinstance(value, int | float) else (1, 0.0, str(value))


def write_plots(c: Comparison, out: Path) -> list[Path]:
    """Every figure that applies to ``c``, written into ``out``; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_validation(c, out / "valid_curve.png"),
        plot_weights(c, out / "task_weights.png"),
        plot_activity(c, out / "activity.png"),
        plot_main_weight_by_activity(c, out / "main_weight_by_activity.png"),
    ]
    for method, (a, b, groups) in grid_of(c.groups).items():
        written.append(plot_heatmap(c, method, a, b, groups, out / f"heatmap_{method}.png"))
    return [p for p in written if p is not None]


def plot_aux_ratio(table: pl.DataFrame, c: Comparison, path: Path) -> Path:
    """The focus metric minus the baseline by auxiliary-to-main ratio bucket: grouped bars (one per
    compared group), mean ± std over seeds (``table``: :func:`recmtl.compare.buckets.aux_ratio_table`)."""
    buckets = table.unique("bucket", maintain_order=True)
    labels = table.unique("group", maintain_order=True)["group"].to_list()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(buckets.height)
    for i, label in enumerate(labels):
        rows = table.filter(pl.col("group") == label)
        mean = rows["diff_mean"].fill_null(math.nan).to_numpy()
        std = np.nan_to_num(rows["diff_std"].fill_null(math.nan).to_numpy())
        ax.bar(x - 0.4 + width * (i + 0.5), mean, width, yerr=std, capsize=3, label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ticks = [f"{r['bucket']} {r['ratio']}\n{r['n_users']} users" for r in buckets.iter_rows(named=True)]
    ax.set_xticks(x, ticks, fontsize="small")
    ax.set_xlabel("#friends / #training interactions")
    ax.set_ylabel(f"{c.split} {c.focus} − {c.baseline}")
    title = f"{c.dataset}: {c.split} {c.focus} minus {c.baseline}"
    title += "\nby auxiliary-to-main ratio (mean ± std over seeds)"
    ax.set_title(title, fontsize="medium")
    if labels:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)
