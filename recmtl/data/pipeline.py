"""The shared prepare pipeline: RawTables -> prepared directory (DATA.md §2).

Written once for every source: positive threshold -> de-duplicate -> iterative k-core -> dense re-index
-> split -> auxiliary tables restricted to kept ids -> stats + manifest -> atomic write.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

import recmtl
from recmtl.config import PrepareConfig, to_jsonable
from recmtl.data import steps
from recmtl.data.schema import (
    AUX_TABLES,
    SCHEMA_VERSION,
    SPLITS,
    TABLE_SCHEMAS,
    RawTables,
    split_schema,
)
from recmtl.data.sources import get_reader
from recmtl.data.store import MANIFEST, atomic_directory, atomic_write_text, check_output, write_table
from recmtl.errors import ConfigError, RecmtlError

Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def prepare(config: PrepareConfig, out: Path, *, overwrite: bool = False, progress: Progress = _noop) -> dict:
    """Read ``config.source``, process it and write the prepared directory ``out``; return the manifest.

    ``progress`` is called with a short description before each stage (the CLI shows it).
    """
    out = Path(out)
    check_output(out, overwrite=overwrite)  # fail before the (possibly long) read
    split_spec = steps.SplitSpec.parse(config.split)
    _check_aux_names(config.aux)
    progress(f"reading {config.source}")
    raw = get_reader(config.source)(config)
    if split_spec.kind == "given" and not raw.given_split:
        raise ConfigError(
            "--split given needs pre-split input (csv source with --train/--valid/--test files)"
        )
    if raw.given_split and split_spec.kind != "given":
        split_spec = steps.SplitSpec("given")
    tables, counts_dropped = process(raw, config, split_spec, progress)
    progress("writing tables")
    return write_prepared(tables, counts_dropped, config, out, overwrite=overwrite)


def _check_aux_names(aux: tuple[str, ...] | None) -> None:
    for name in aux or ():
        if name not in AUX_TABLES:
            raise ConfigError(f"aux table {name!r} unknown (known: {', '.join(AUX_TABLES)})")


def process(
    raw: RawTables, config: PrepareConfig, split_spec: steps.SplitSpec, progress: Progress = _noop
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Run the shared steps on reader output; return the tables to write and the dropped-row counts."""
    dropped = dict(raw.dropped)
    inter = raw.interactions
    min_rating = config.min_rating
    if min_rating is None and raw.explicit and not raw.given_split:
        min_rating = 4.0
    progress("filtering")
    if isinstance(inter, pl.LazyFrame):
        inter = inter.collect(engine="streaming")
    n_read = inter.height
    if n_read == 0:
        raise RecmtlError(f"source {config.source!r} yielded no interactions")
    if not raw.given_split:
        inter = steps.require_rows(steps.apply_threshold(inter, min_rating), f"--min-rating {min_rating}")
        dropped["below_min_rating"] = n_read - inter.height
        n = inter.height
        inter = steps.dedupe_latest(inter)
        dropped["duplicates"] = n - inter.height
        n = inter.height
        k_items = config.k_core if config.k_core_items is None else config.k_core_items
        inter = steps.require_rows(steps.k_core(inter, config.k_core, k_items), f"--k-core {config.k_core}")
        dropped["k_core"] = n - inter.height
    elif config.min_rating is not None:
        inter = steps.require_rows(steps.apply_threshold(inter, min_rating), f"--min-rating {min_rating}")
        dropped["below_min_rating"] = n_read - inter.height

    progress("re-indexing")
    users = steps.id_map(inter["user"], "user_id")
    items = steps.id_map(inter["item"], "item_id")
    inter = steps.apply_map(steps.apply_map(inter, "user", users, "user_id"), "item", items, "item_id")

    progress("splitting")
    if raw.given_split:
        inter = inter.sort(["user_id", "item_id"])
    else:
        inter = steps.split_per_user(inter, split_spec, config.seed)
    extra = [c for c in ("rating", "ts") if c in inter.columns]
    tables: dict[str, pl.DataFrame] = {
        "users": users.select(pl.col("user_id"), pl.col("raw").cast(pl.String).alias("raw_id")),
        "items": items.select(pl.col("item_id"), pl.col("raw").cast(pl.String).alias("raw_id")),
    }
    for name in SPLITS:
        tables[name] = inter.filter(pl.col("split") == name).select("user_id", "item_id", *extra)
    if tables["train"].height == 0:
        raise RecmtlError("the split left no training interactions")

    progress("auxiliary tables")
    wanted = set(config.aux) if config.aux is not None else set(AUX_TABLES)
    available = {
        "social": raw.social is not None,
        "category": raw.item_category is not None,
        "item_item": raw.item_item is not None,
    }
    for name in sorted(wanted):
        if not available[name] and config.aux is not None:
            raise ConfigError(f"aux table {name!r} requested but source {config.source!r} provides none")
    if "social" in wanted and raw.social is not None:
        tables["social"] = _social(raw.social, users, config.symmetric_social)
    if "category" in wanted and raw.item_category is not None:
        tables["item_category"], tables["categories"] = _categories(raw.item_category, items)
    if "item_item" in wanted and raw.item_item is not None:
        tables["item_item"] = _item_item(raw.item_item, items)
    return tables, dropped


def _social(social: pl.DataFrame, users: pl.DataFrame, symmetric: bool) -> pl.DataFrame:
    edges = steps.apply_map(
        steps.apply_map(social.select("src", "dst"), "src", users, "src"), "dst", users, "dst"
    )
    edges = edges.filter(pl.col("src") != pl.col("dst"))
    if symmetric:
        edges = pl.concat([edges, edges.select(pl.col("dst").alias("src"), pl.col("src").alias("dst"))])
    return edges.select("src", "dst").unique().sort(["src", "dst"])


def _categories(item_category: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    labelled = steps.apply_map(item_category.select("item", "category"), "item", items, "item_id")
    vocab = steps.id_map(labelled["category"], "category_id")
    labelled = (
        steps.apply_map(labelled, "category", vocab, "category_id").unique().sort(["item_id", "category_id"])
    )
    names = vocab.select(pl.col("category_id"), pl.col("raw").cast(pl.String).alias("name"))
    return labelled, names


def _item_item(item_item: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    edges = steps.apply_map(item_item.select("src", "dst", "kind"), "src", items, "src")
    edges = steps.apply_map(edges, "dst", items, "dst").filter(pl.col("src") != pl.col("dst"))
    return edges.select("src", "dst", "kind").unique().sort(["kind", "src", "dst"])


def dataset_stats(tables: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """Summary statistics recorded in the manifest and shown by ``recmtl info``."""
    n_users, n_items = tables["users"].height, tables["items"].height
    inter = pl.concat([tables[s].select("user_id", "item_id") for s in SPLITS])
    per_user = inter.group_by("user_id").len()["len"]
    per_item = inter.group_by("item_id").len()["len"]
    stats: dict[str, Any] = {
        "density": inter.height / max(1, n_users * n_items),
        "interactions_per_user": _quantiles(per_user),
        "interactions_per_item": _quantiles(per_item),
    }
    if "social" in tables:
        degree = tables["social"].group_by("src").len()["len"]
        stats["social_out_degree"] = _quantiles(degree) | {
            "users_with_links": int(degree.len()),
            "mean_over_all_users": tables["social"].height / max(1, n_users),
        }
    if "item_category" in tables:
        per = tables["item_category"].group_by("item_id").len()["len"]
        stats["categories_per_item"] = _quantiles(per) | {"item_coverage": per.len() / max(1, n_items)}
    if "item_item" in tables:
        stats["item_item_per_kind"] = {
            k: int(v) for k, v in tables["item_item"].group_by("kind").len().sort("kind").iter_rows()
        }
    return stats


def _quantiles(values: pl.Series) -> dict[str, float]:
    if values.len() == 0:
        return {"count": 0}
    values = values.cast(pl.Float64)
    return {
        "min": float(values.min()),
        "p25": float(values.quantile(0.25, "nearest")),
        "median": float(values.quantile(0.5, "nearest")),
        "p75": float(values.quantile(0.75, "nearest")),
        "p90": float(values.quantile(0.9, "nearest")),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def write_prepared(
    tables: dict[str, pl.DataFrame],
    dropped: dict[str, int],
    config: PrepareConfig,
    out: Path,
    *,
    overwrite: bool,
) -> dict:
    """Write every table and the manifest into ``out`` atomically; return the manifest."""
    counts = {name: frame.height for name, frame in tables.items()}
    counts["interactions"] = sum(counts[s] for s in SPLITS)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": config.name or out.name,
        "source": config.source,
        "options": to_jsonable(config),
        "counts": counts,
        "dropped": dropped,
        "stats": dataset_stats(tables),
        "versions": {
            "recmtl": recmtl.__version__,
            "polars": pl.__version__,
            "python": platform.python_version(),
        },
        "tables": {},
    }
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for name, frame in tables.items():
            schema = split_schema(frame.columns) if name in SPLITS else TABLE_SCHEMAS[name]
            manifest["tables"][name] = write_table(frame, tmp / f"{name}.parquet", schema)
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest
