"""Rich renderings of library results (tables); no logic beyond formatting."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def dataset_summary(manifest: dict[str, Any]) -> Table:
    """Counts and key statistics of a prepared dataset's manifest."""
    table = Table(title=f"dataset {manifest.get('name', '')} (source: {manifest.get('source', '?')})")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, count in manifest["counts"].items():
        table.add_row(name, _fmt(count))
    stats = manifest.get("stats", {})
    if "density" in stats:
        table.add_row("density", f"{stats['density']:.3e}")
    for key, label in [
        ("interactions_per_user", "interactions per user"),
        ("interactions_per_item", "interactions per item"),
        ("social_out_degree", "social out-degree"),
        ("categories_per_item", "categories per item"),
    ]:
        if key in stats and "median" in stats[key]:
            q = stats[key]
            table.add_row(
                label,
                f"min {_fmt(q['min'])} · median {_fmt(q['median'])} · p90 {_fmt(q['p90'])} · "
                f"max {_fmt(q['max'])} · mean {q['mean']:.2f}",
            )
    if "item_item_per_kind" in stats:
        kinds = ", ".join(f"{k} {_fmt(v)}" for k, v in stats["item_item_per_kind"].items())
        table.add_row("item-item edges", kinds)
    dropped = {k: v for k, v in manifest.get("dropped", {}).items() if v}
    if dropped:
        table.add_row("dropped rows", ", ".join(f"{k} {_fmt(v)}" for k, v in dropped.items()))
    return table


def metrics_table(metrics: dict[str, float], ks: tuple[int, ...], title: str = "") -> Table:
    """Metric x K table of mean values ("ndcg@20" -> 0.1234)."""
    names = list(dict.fromkeys(key.split("@")[0] for key in metrics))
    table = Table(title=title)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics.get(f'{name}@{k}', float('nan')):.4f}" for k in ks))
    return table
