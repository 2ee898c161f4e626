"""Amazon product data, 2014 release (McAuley et al., SIGIR 2015; He & McAuley, WWW 2016).

Source: http://jmcauley.ucsd.edu/data/amazon/ (per-category files).

Interactions, from ``--raw`` (a folder, or the file itself), the first present of:

- ``reviews_<Cat>.json.gz`` / ``reviews_<Cat>_5.json.gz`` (5-core): strict JSON, one review per line,
  ``{"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "overall": 5.0, "unixReviewTime": 1355616000,
  ...}``; other keys are ignored. A review lacking ``reviewerID``, ``asin`` or ``overall`` is dropped
  (counted as ``missing_field``); a missing ``unixReviewTime`` leaves ``ts`` null.
- ``ratings_<Cat>.csv``: no header, ``user,item,rating,timestamp``; a bad value is an error naming the line.

Plain (not gzipped) copies are read too. Ids are ASIN / reviewer strings and stay ``String`` (ASINs such
as ``0000013714`` need their leading zeros). Ratings are explicit 1-5 stars.

Metadata, from ``--meta`` or else ``meta_<Cat>.json.gz`` beside the interactions file (same ``<Cat>``):
**one Python-literal dict per line, single-quoted, not JSON**, e.g. ``{'asin': '0000031852', 'title':
"Girls' Tutu", 'related': {'also_bought': [...]}, 'categories': [['Clothing, Shoes & Jewelry', 'Girls']]}``.
It is streamed line by line through ``ast.literal_eval`` (never ``eval``); a malformed line is an error
naming the file and the line.

- ``related`` -> ``item_item``: one ``(asin, other, kind)`` edge per ASIN listed under ``also_bought``,
  ``also_viewed``, ``bought_together`` or ``buy_after_viewing``, ``kind`` being that key.
- ``categories`` (a list of category paths, root first) -> ``item_category``. [reading] Each path labels
  the item with its leaf, the most specific category; the leaf is named by its whole path joined with
  ``" > "`` (``Video Games > PC > Accessories``) so that leaves sharing a name under different parents
  (``Accessories`` under PC and under Xbox 360) stay distinct. An item with several paths gets several
  labels (multi-label); repeated (item, category) rows are dropped.
"""

from __future__ import annotations

import ast
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources._common import (
    find_amazon_meta,
    find_file,
    first_line,
    open_binary,
    parse_numbers,
    read_amazon_reviews,
    read_delimited,
    require_values,
)
from recmtl.errors import DataFormatError

REVIEW_FILES = ["reviews_*.json.gz", "reviews_*.json", "ratings_*.csv"]
RELATED_KINDS = ("also_bought", "also_viewed", "bought_together", "buy_after_viewing")
CATEGORY_SEP = " > "
#: meta lines parsed per polars batch (bounds the Python lists held at once)
META_BATCH = 100_000


def read(config: PrepareConfig) -> RawTables:
    """Read Amazon 2014 reviews or ratings from ``--raw`` and, when present, their metadata."""
    path = find_file(config.raw, REVIEW_FILES, "Amazon 2014 reviews_<Cat>.json.gz or ratings_<Cat>.csv")
    assert path is not None
    interactions, dropped = read_interactions(path)
    meta = meta_path(config, path)
    item_category = item_item = None
    if meta is not None:
        item_category, item_item = read_meta(meta)
    return RawTables(
        interactions=interactions,
        item_category=item_category,
        item_item=item_item,
        explicit=True,
        dropped=dropped,
    )


def category_name(path: Path) -> str:
    """``<Cat>`` of ``reviews_<Cat>[_5].json[.gz]`` or ``ratings_<Cat>.csv``."""
    name = re.sub(r"(\.json)?(\.gz)?$|\.csv$", "", path.name)
    name = re.sub(r"^(reviews|ratings)_", "", name)
    return re.sub(r"_5$", "", name)


def meta_path(config: PrepareConfig, interactions: Path) -> Path | None:
    """``--meta`` if given (must exist), else ``meta_<Cat>.json[.gz]`` beside the interactions, else None."""
    return find_amazon_meta(config.meta, interactions, category_name(interactions), "Amazon 2014 meta file")


def read_interactions(path: Path) -> tuple[pl.DataFrame, dict[str, int]]:
    """user, item (String), rating (Float32), ts (Int64) from a reviews JSON or a ratings CSV."""
    if path.name.endswith(".csv"):
        frame = read_delimited(path, sep=",", roles=["user", "item", "rating", "ts"], has_header=False)
        require_values(frame, ["user", "item", "rating", "ts"], path)
        frame = parse_numbers(frame, {"rating": pl.Float32(), "ts": pl.Int64()}, path).drop("_line")
        dropped: dict[str, int] = {}
    else:
        frame, dropped = read_amazon_reviews(path, "Amazon 2014 reviews (JSON lines)")
    if frame.height == 0:
        raise DataFormatError(f"{path}: no reviews found")
    return frame, dropped


def meta_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line number, dict)`` from a Python-literal meta file (gzip or plain), one line at a time."""
    line_no = 0
    try:
        with open_binary(path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                text = raw.decode("utf-8", errors="replace").strip()
                if text:
                    yield line_no, parse_meta_line(text, path, line_no)
    except (OSError, EOFError, zlib.error) as exc:
        where = f", after line {line_no}" if line_no else ""
        reason = first_line(exc)
        raise DataFormatError(f"{path}{where}: corrupt or truncated compressed file ({reason})") from None


def parse_meta_line(text: str, path: Path, line_no: int) -> dict[str, Any]:
    """One meta line as a dict with an ``asin`` string, via ``ast.literal_eval`` (never ``eval``)."""
    if "\x00" in text:
        raise DataFormatError(f"{path}, line {line_no}: binary data, not a Python-literal dict")
    try:
        record = ast.literal_eval(text)
    except SyntaxError as exc:
        raise DataFormatError(f"{path}, line {line_no}: not a Python-literal dict ({exc.msg})") from None
    except (ValueError, TypeError, MemoryError, RecursionError):
        raise DataFormatError(
            f"{path}, line {line_no}: not a Python-literal dict (holds a name such as null or true, or an "
            "expression; only literals are allowed)"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
        raise DataFormatError(f"{path}, line {line_no}: expected a dict with an 'asin' string")
    return record


def _strings(value: Any, path: Path, line_no: int, field: str) -> list[str]:
    """``value`` as a list of strings, or a DataFormatError naming the line and ``field``."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{path}, line {line_no}: {field!r} must be a list of strings")
    return list(value)


def record_categories(record: dict[str, Any], path: Path, line_no: int) -> list[str]:
    """The leaf of each category path of ``record``, named by its whole path (see the module docstring)."""
    paths = record.get("categories") or []
    if not isinstance(paths, list | tuple):
        raise DataFormatError(f"{path}, line {line_no}: 'categories' must be a list of category paths")
    leaves = []
    for cat_path in paths:
        parts = [p.strip() for p in _strings(cat_path, path, line_no, "categories") if p.strip()]
        if parts:
            leaves.append(CATEGORY_SEP.join(parts))
    return leaves


def record_related(record: dict[str, Any], path: Path, line_no: int) -> list[tuple[str, list[str]]]:
    """``(kind, asins)`` for each related list of ``record``."""
    related = record.get("related") or {}
    if not isinstance(related, dict):
        raise DataFormatError(f"{path}, line {line_no}: 'related' must be a dict of ASIN lists")
    return [(kind, _strings(related[kind], path, line_no, kind)) for kind in RELATED_KINDS if kind in related]


def read_meta(path: Path) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """``(item_category, item_item)`` from a 2014 meta file; None for a table with no rows."""
    cat_parts: list[pl.DataFrame] = []
    edge_parts: list[pl.DataFrame] = []
    cats: dict[str, list[str]] = {"item": [], "category": []}
    edges: dict[str, list[str]] = {"src": [], "dst": [], "kind": []}
    for line_no, record in meta_records(path):
        asin = record["asin"]
        for leaf in record_categories(record, path, line_no):
            cats["item"].append(asin)
            cats["category"].append(leaf)
        for kind, others in record_related(record, path, line_no):
            edges["src"] += [asin] * len(others)
            edges["dst"] += others
            edges["kind"] += [kind] * len(others)
        if line_no % META_BATCH == 0:
            cat_parts.append(_flush(cats))
            edge_parts.append(_flush(edges))
    cat_parts.append(_flush(cats))
    edge_parts.append(_flush(edges))
    item_category = pl.concat(cat_parts).unique(maintain_order=True)
    item_item = pl.concat(edge_parts).unique(maintain_order=True)
    return (item_category if item_category.height else None, item_item if item_item.height else None)


def _flush(columns: dict[str, list[str]]) -> pl.DataFrame:
    """A String frame of ``columns``; the lists are emptied for the next batch."""
    frame = pl.DataFrame(columns, schema={name: pl.String for name in columns})
    for values in columns.values():
        values.clear()
    return frame
