"""Pure polars steps of the prepare pipeline (DATA.md §2), each a function frame -> frame.

Order: threshold -> de-duplicate -> iterative k-core -> dense re-index -> split. Every step is
deterministic; the split draws its randomness from the seed it is given, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recmtl.errors import ConfigError, RecmtlError


def apply_threshold(frame: pl.DataFrame, min_rating: float | None) -> pl.DataFrame:
    """Keep rows with ``rating >= min_rating`` (all rows when ``min_rating`` is None)."""
    if min_rating is None:
        return frame
    if "rating" not in frame.columns:
        raise ConfigError(f"--min-rating {min_rating} given but the source has no rating column")
    return frame.filter(pl.col("rating") >= min_rating)


def dedupe_latest(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (user, item), keeping the latest by ``ts`` (ties and no ts: the last occurrence).

    Sort-based: rows sorted by (user, item, ts, original position), then the last row of each (user, item)
    run is kept. Output is ordered by (user, item). Unlike ``unique(maintain_order=True)`` this needs no
    hash table over all rows (on 10M rows: ~4x faster and ~1.4 GB less peak memory).
    """
    keys = ["user", "item", "ts", "_order"] if "ts" in frame.columns else ["user", "item", "_order"]
    ordered = frame.with_row_index("_order").sort(keys)
    last = (pl.col("user") != pl.col("user").shift(-1)) | (pl.col("item") != pl.col("item").shift(-1))
    return ordered.filter(last.fill_null(True)).drop("_order")


def k_core(frame: pl.DataFrame, k_users: int, k_items: int) -> pl.DataFrame:
    """Iteratively drop users with < ``k_users`` and items with < ``k_items`` interactions until stable."""
    if k_users <= 1 and k_items <= 1:
        return frame
    while True:
        before = frame.height
        if k_users > 1:
            frame = frame.filter(pl.len().over("user") >= k_users)
        if k_items > 1:
            frame = frame.filter(pl.len().over("item") >= k_items)
        if frame.height == before:
            return frame


def id_map(raw_ids: pl.Series, name: str) -> pl.DataFrame:
    """Dense ids 0..n-1 for the sorted unique ``raw_ids``: a frame (raw, ``name`` Int32)."""
    unique = raw_ids.unique().sort()
    return pl.DataFrame({"raw": unique, name: pl.int_range(0, unique.len(), dtype=pl.Int32, eager=True)})


def apply_map(frame: pl.DataFrame, column: str, mapping: pl.DataFrame, new: str) -> pl.DataFrame:
    """Replace raw ``column`` by its dense id named ``new`` (may equal ``column``).

    ``mapping`` is an :func:`id_map` frame; rows whose id is not in it are dropped, row order is kept.
    """
    m = mapping.select(pl.col("raw").alias(column), pl.col(mapping.columns[1]).alias("_dense"))
    joined = frame.join(m, on=column, how="inner", maintain_order="left")
    return joined.drop(column).rename({"_dense": new})


@dataclass(frozen=True)
class SplitSpec:
    """A parsed ``--split`` value: ``random:0.8,0.1,0.1`` | ``temporal:0.8,0.1,0.1`` | ``loo`` | ``given``."""

    kind: str
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        kind, _, rest = text.partition(":")
        kind = kind.strip()
        if kind in ("loo", "given"):
            if rest:
                raise ConfigError(f"--split {text!r}: {kind} takes no ratios")
            return cls(kind)
        if kind not in ("random", "temporal"):
            raise ConfigError(f"--split {text!r}: expected random:TR,VA,TE, temporal:TR,VA,TE, loo or given")
        if not rest:
            return cls(kind)
        try:
            ratios = tuple(float(x) for x in rest.split(","))
        except ValueError:
            raise ConfigError(f"--split {text!r}: ratios must be numbers like 0.8,0.1,0.1") from None
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
            raise ConfigError(f"--split {text!r}: expected three non-negative ratios summing to 1, train > 0")
        return cls(kind, ratios)  # type: ignore[arg-type]


def split_per_user(frame: pl.DataFrame, spec: SplitSpec, seed: int) -> pl.DataFrame:
    """Add a ``split`` column (train/valid/test) to re-indexed interactions.

    Per user with n interactions ordered randomly (``random``, seeded) or by time (``temporal``, ``loo``;
    ties broken by item id), rank j (0-based) goes to train when j < b1, valid when j < b2, else test, with
    b1 = max(1, round_half_up(r_train·n)) and b2 = max(b1, round_half_up((r_train + r_valid)·n)). ``loo``
    puts the last interaction in test and the one before in valid for users with at least 3 interactions
    (users with fewer keep everything in train). Every user keeps at least one training interaction.
    """
    if spec.kind == "given":
        raise ConfigError(
            "--split given needs a source with pre-split files (csv with train/valid/test files)"
        )
    frame = frame.sort(["user_id", "item_id"])
    if spec.kind == "random":
        rng = np.random.Generator(np.random.PCG64(seed))
        frame = frame.with_columns(_key=pl.Series(rng.random(frame.height)))
    else:
        if "ts" not in frame.columns:
            raise ConfigError(f"--split {spec.kind} needs timestamps, and this source has no ts column")
        frame = frame.with_columns(_key=pl.col("ts").cast(pl.Float64))
    frame = frame.sort(["user_id", "_key", "item_id"]).with_columns(
        _rank=pl.int_range(pl.len()).over("user_id"), _n=pl.len().over("user_id")
    )
    n = pl.col("_n").cast(pl.Float64)
    if spec.kind == "loo":
        big = pl.col("_n") >= 3
        split = (
            pl.when(big & (pl.col("_rank") == pl.col("_n") - 1))
            .then(pl.lit("test"))
            .when(big & (pl.col("_rank") == pl.col("_n") - 2))
            .then(pl.lit("valid"))
            .otherwise(pl.lit("train"))
        )
    else:
        r_train, r_valid, _ = spec.ratios
        b1 = pl.max_horizontal((r_train * n + 0.5).floor(), pl.lit(1.0))
        b2 = pl.max_horizontal(((r_train + r_valid) * n + 0.5).floor(), b1)
        split = (
            pl.when(pl.col("_rank") < b1)
            .then(pl.lit("train"))
            .when(pl.col("_rank") < b2)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("test"))
        )
    return frame.with_columns(split=split).drop("_key", "_rank", "_n").sort(["user_id", "item_id"])


def modal_value(frame: pl.DataFrame, key: str, value: str, top_k: int = 1) -> pl.DataFrame:
    """The ``top_k`` most frequent ``value`` per ``key`` (ties: smallest value first), as long rows."""
    counts = frame.group_by([key, value]).agg(pl.len().alias("_count"))
    ranked = counts.sort([key, "_count", value], descending=[False, True, False]).with_columns(
        _r=pl.int_range(pl.len()).over(key)
    )
    return ranked.filter(pl.col("_r") < top_k).select(key, value)


def require_rows(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    """Raise a one-line error when a filtering step left ``frame`` empty."""
    if frame.height == 0:
        raise RecmtlError(f"no interactions left after {what}: loosen the filters (--min-rating, --k-core)")
    return frame
