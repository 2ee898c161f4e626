"""The data contracts: what a reader yields (:class:`RawTables`) and what prepare writes (DATA.md §2).

A reader turns one raw format into :class:`RawTables`, a set of *normalised* polars frames keyed by raw
ids. Everything after the reader (threshold, de-duplication, k-core, re-indexing, split, auxiliary tables,
manifest, atomic write) is shared code that only ever sees these frames.

Raw id columns (``user``, ``item``, ``src``, ``dst``, ``category``) are either all ``Int64`` or all
``String`` within one dataset's user ids (interactions.user, social.src/dst) and within its item ids
(interactions.item, item_category.item, item_item.src/dst); the pipeline writes them as strings in
``users.parquet`` / ``items.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

SCHEMA_VERSION = 1

#: Columns of the normalised frames a reader returns. ``rating`` and ``ts`` are optional.
INTERACTION_COLUMNS = ("user", "item", "rating", "ts")
SOCIAL_COLUMNS = ("src", "dst")
ITEM_CATEGORY_COLUMNS = ("item", "category")
ITEM_ITEM_COLUMNS = ("src", "dst", "kind")

#: The split names, in order.
SPLITS = ("train", "valid", "test")

#: Auxiliary table groups a recipe can ask for (``aux``) and the files they produce.
AUX_TABLES = {
    "social": ("social",),
    "category": ("item_category", "categories"),
    "item_item": ("item_item",),
}


@dataclass
class RawTables:
    """What every reader returns.

    interactions: frame with ``user``, ``item`` and optionally ``rating`` (Float32) and ``ts`` (Int64).
        May be a LazyFrame for large inputs. Rows the reader could not use are already dropped and counted
        in ``dropped``.
    social: ``src``, ``dst`` user ids (directed edges as given), or None.
    item_category: ``item``, ``category`` (long format, multi-label allowed), or None.
    item_item: ``src``, ``dst``, ``kind`` (String: also_viewed, also_bought, bought_together, ...), or None.
    given_split: for pre-split benchmarks, a String column ``split`` in interactions holds
        train/valid/test and the pipeline keeps it (``--split given``).
    explicit: True when ``rating`` holds explicit ratings (then the default positive threshold is 4).
    dropped: reason -> number of raw rows the reader dropped (e.g. ``{"rating_zero": 12}``).
    """

    interactions: pl.DataFrame | pl.LazyFrame
    social: pl.DataFrame | None = None
    item_category: pl.DataFrame | None = None
    item_item: pl.DataFrame | None = None
    explicit: bool = False
    given_split: bool = False
    dropped: dict[str, int] = field(default_factory=dict)


# pyarrow schemas of the written tables (DATA.md §2). Optional columns are appended when present.
USERS_SCHEMA = pa.schema([("user_id", pa.int32()), ("raw_id", pa.string())])
ITEMS_SCHEMA = pa.schema([("item_id", pa.int32()), ("raw_id", pa.string())])
SPLIT_SCHEMA = pa.schema([("user_id", pa.int32()), ("item_id", pa.int32())])
SPLIT_OPTIONAL = {"rating": pa.float32(), "ts": pa.int64()}
SOCIAL_SCHEMA = pa.schema([("src", pa.int32()), ("dst", pa.int32())])
ITEM_CATEGORY_SCHEMA = pa.schema([("item_id", pa.int32()), ("category_id", pa.int32())])
CATEGORIES_SCHEMA = pa.schema([("category_id", pa.int32()), ("name", pa.string())])
ITEM_ITEM_SCHEMA = pa.schema([("src", pa.int32()), ("dst", pa.int32()), ("kind", pa.string())])

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "users": USERS_SCHEMA,
    "items": ITEMS_SCHEMA,
    "train": SPLIT_SCHEMA,
    "valid": SPLIT_SCHEMA,
    "test": SPLIT_SCHEMA,
    "social": SOCIAL_SCHEMA,
    "item_category": ITEM_CATEGORY_SCHEMA,
    "categories": CATEGORIES_SCHEMA,
    "item_item": ITEM_ITEM_SCHEMA,
}


def split_schema(columns: list[str]) -> pa.Schema:
    """Schema of a split table holding ``user_id``, ``item_id`` and the optional ``columns`` present."""
    fields = list(SPLIT_SCHEMA)
    fields += [pa.field(c, SPLIT_OPTIONAL[c]) for c in ("rating", "ts") if c in columns]
    return pa.schema(fields)
