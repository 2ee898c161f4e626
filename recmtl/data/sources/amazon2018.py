"""Amazon review data, 2018 release (Ni, Li & McAuley, EMNLP 2019).

Source: https://nijianmo.github.io/amazon/ (per-category files).

Interactions, from ``--raw`` (a folder, or the file itself), the first present of (``meta_*`` excluded):

- ``<Cat>.json.gz`` / ``<Cat>_5.json.gz`` (5-core): strict JSON, one review per line, ``{"overall": 5.0,
  "verified": true, "reviewTime": "09 1, 2016", "reviewerID": "A3CIUOJXQ5VDQ2", "asin": "B0000530HU",
  "unixReviewTime": 1472688000, ...}``; other keys are ignored. A review lacking ``reviewerID``, ``asin``
  or ``overall`` is dropped (counted as ``missing_field``); a missing ``unixReviewTime`` leaves ``ts`` null.
- ``<Cat>.csv`` ("ratings only"): no header, ``item,user,rating,timestamp`` -- item first, reversed
  against the 2014 ``ratings_<Cat>.csv``. [reading] The order is not guessed from the values: it is that
  default unless ``--columns`` gives another (e.g. ``user,item,rating,ts``).

Plain (not gzipped) copies are read too. Ids stay ``String`` (ASINs keep leading zeros); ratings are
explicit 1-5 stars. Review files are parsed by polars in bounded chunks, not row by row.

Metadata, from ``--meta`` or else ``meta_<Cat>.json.gz`` beside the interactions: strict JSON lines
``{"asin": ..., "also_buy": [...], "also_view": [...], "category": ["Electronics", "Computers &amp;
Accessories", "Cables"], "main_cat": "Computers", ...}``. The published files repeat some ``asin`` rows:
only the first row of each ``asin`` is kept.

- ``also_buy`` / ``also_view`` -> ``item_item`` with ``kind`` ``also_bought`` / ``also_viewed``, the names
  the 2014 release uses for the same lists, so recipes and tables compare across releases.
- ``category`` (one path, root first) -> ``item_category``: [reading] as in ``amazon2014``, the leaf named
  by its whole path joined with ``" > "``, after turning the ``&amp;`` the files carry into ``&``. An empty
  path gives no label. ``main_cat`` (a store name, sometimes an HTML logo tag) is not used.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources._common import (
    find_amazon_meta,
    parse_columns,
    parse_numbers,
    read_amazon_reviews,
    read_delimited,
    read_json_lines,
    require_fields,
    require_values,
)
from recmtl.errors import DataFormatError, RecmtlError

REVIEW_PATTERNS = ["*.json.gz", "*.json", "*.csv"]
META_SCHEMA: dict[str, pl.DataType] = {
    "asin": pl.String(),
    "also_buy": pl.List(pl.String()),
    "also_view": pl.List(pl.String()),
    "category": pl.List(pl.String()),
}
#: meta list field -> item_item kind (the 2014 names)
RELATED_KINDS = {"also_buy": "also_bought", "also_view": "also_viewed"}
CSV_COLUMNS = "item,user,rating,ts"
CATEGORY_SEP = " > "


def read(config: PrepareConfig) -> RawTables:
    """Read Amazon 2018 reviews or ratings from ``--raw`` and, when present, their metadata."""
    path = find_reviews(config.raw)
    interactions, dropped = read_interactions(path, config.columns or CSV_COLUMNS)
    meta = meta_path(config, path)
    item_category = item_item = None
    if meta is not None:
        item_category, item_item = read_meta(meta)
    return RawTables(
        interactions=interactions,
        item_category=item_category,
        item_item=item_item,
        explicit="rating" in interactions.columns,
        dropped=dropped,
    )


def find_reviews(raw: Path | None) -> Path:
    """``--raw`` itself if a file, else the one ``<Cat>[_5].json[.gz]`` or ``<Cat>.csv`` in the folder."""
    if raw is None:
        raise RecmtlError("--raw is required: the Amazon 2018 <Cat>.json.gz or <Cat>.csv file or its folder")
    raw = Path(raw)
    if raw.is_file():
        return raw
    if not raw.exists():
        raise RecmtlError(f"{raw}: raw folder not found")
    for pattern in REVIEW_PATTERNS:
        hits = [p for p in sorted(raw.glob(pattern)) if not p.name.startswith("meta_")]
        if len(hits) > 1:
            names = ", ".join(h.name for h in hits)
            raise RecmtlError(f"{raw}: several files match {pattern!r} ({names}); pass the one to use")
        if hits:
            return hits[0]
    expected = "<Cat>.json.gz, <Cat>_5.json.gz or <Cat>.csv"
    raise RecmtlError(f"{raw}: no Amazon 2018 reviews found (expected {expected})")


def category_name(path: Path) -> str:
    """``<Cat>`` of ``<Cat>[_5].json[.gz]`` or ``<Cat>.csv``."""
    name = re.sub(r"(\.json)?(\.gz)?$|\.csv$", "", path.name)
    return re.sub(r"_5$", "", name)


def meta_path(config: PrepareConfig, interactions: Path) -> Path | None:
    """``--meta`` if given (must exist), else ``meta_<Cat>.json[.gz]`` beside the interactions, else None."""
    return find_amazon_meta(config.meta, interactions, category_name(interactions), "Amazon 2018 meta file")


def read_interactions(path: Path, columns: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """user, item (String), rating (Float32), ts (Int64) from a reviews JSON or a ratings CSV."""
    if path.name.endswith(".csv"):
        roles = parse_columns(columns)
        frame = read_delimited(path, sep=",", roles=roles, has_header=False)
        kept = [r for r in ("user", "item", "rating", "ts") if r in roles]
        require_values(frame, kept, path)
        numbers = {c: t for c, t in (("rating", pl.Float32()), ("ts", pl.Int64())) if c in roles}
        frame = parse_numbers(frame, numbers, path).select(kept)
        dropped: dict[str, int] = {}
    else:
        frame, dropped = read_amazon_reviews(path, "Amazon 2018 reviews (JSON lines)")
    if frame.height == 0:
        raise DataFormatError(f"{path}: no reviews found")
    return frame, dropped


def read_meta(path: Path) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """``(item_category, item_item)`` from a 2018 meta file, first row per ``asin``; None when empty."""
    meta = read_json_lines(path, META_SCHEMA, what="meta")
    require_fields(meta, ["asin"], path, "Amazon 2018 meta (JSON lines)")
    meta = meta.drop_nulls("asin").unique(subset="asin", keep="first", maintain_order=True)
    edges = pl.concat(
        [
            meta.select(pl.col("asin").alias("src"), pl.col(field).alias("dst"))
            .explode("dst")
            .drop_nulls("dst")
            .with_columns(kind=pl.lit(kind, dtype=pl.String))
            for field, kind in RELATED_KINDS.items()
        ]
    ).unique(maintain_order=True)
    parts = pl.col("category").list.eval(
        pl.element().str.replace_all("&amp;", "&", literal=True).str.strip_chars().filter(pl.element() != "")
    )
    item_category = meta.select(
        pl.col("asin").alias("item"), parts.list.join(CATEGORY_SEP).alias("category")
    ).filter(pl.col("category").is_not_null() & (pl.col("category") != ""))
    return (item_category if item_category.height else None, edges if edges.height else None)
