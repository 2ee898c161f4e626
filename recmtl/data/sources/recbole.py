"""RecBole atomic files (Zhao et al., CIKM 2021; https://recbole.io/docs/user_guide/data/atomic_files.html).

``--raw`` is the folder holding ``<name>.inter`` (or that file itself). Every atomic file is tab-separated
text whose first line names each column ``field:type``, type one of ``token``, ``token_seq``, ``float``,
``float_seq`` (``*_seq`` values are space-separated)::

    user_id:token	item_id:token	rating:float	timestamp:float
    196	242	3	881250949

- ``<name>.inter`` -> interactions. User and item fields are RecBole's defaults ``user_id`` / ``item_id``;
  [reading] without them, the first ``token`` field whose name starts with ``user`` is the user and the
  first other ``token`` field the item (e.g. ``artist_id``). ``rating`` -> ``rating`` (Float32) and
  ``timestamp`` -> ``ts`` (Int64, float seconds truncated) when present; other fields are ignored.
  Pre-split benchmarks (RecBole's ``benchmark_filename``) ``<name>.train.inter``, ``<name>.valid.inter``
  (optional) and ``<name>.test.inter`` are read as a given split (a ``split`` column, ``given_split``).
- ``<name>.item`` (optional) -> item_category: [reading] the categories are the field named
  ``categories``, ``category``, ``genre``, ``genres`` or ``class`` (first present; ml-100k uses ``class``),
  else the only ``token_seq`` field; a ``token_seq`` value gives one label per token. No such field: no
  categories.
- ``<name>.net`` (optional) -> social: ``source_id`` -> ``target_id`` (else the first two token fields).

Ids are Int64 when every user id (``.inter``, ``.net``) -- respectively every item id (``.inter``,
``.item``) -- is a plain integer, else String for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import polars as pl

from recmtl.config import PrepareConfig
from recmtl.data.schema import SPLITS, RawTables
from recmtl.data.sources._common import (
    head_lines,
    parse_numbers,
    read_delimited,
    require_values,
    unify_ids,
)
from recmtl.errors import DataFormatError, RecmtlError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
CATEGORY_FIELDS = ("categories", "category", "genre", "genres", "class")
_SPLIT_SUFFIX = re.compile(r"\.(train|valid|test)\.inter$")


def read(config: PrepareConfig) -> RawTables:
    """Read the RecBole atomic files of ``--raw``."""
    folder, name, inter_files = find_inter(config.raw)
    parts = []
    for split, path in inter_files.items():
        frame = read_inter(path)
        parts.append(frame.with_columns(split=pl.lit(split, dtype=pl.String)) if split else frame)
    columns = parts[0].columns
    for path, part in zip(inter_files.values(), parts, strict=True):
        if part.columns != columns:
            raise DataFormatError(f"{path}: columns {part.columns} differ from {columns} of the other splits")
    interactions = pl.concat(parts)
    social = _optional(folder / f"{name}.net", read_net)
    item_category = _optional(folder / f"{name}.item", read_item_categories)
    interactions, social, item_category, _ = unify_ids(interactions, social, item_category, None)
    return RawTables(
        interactions=interactions,
        social=social,
        item_category=item_category,
        explicit="rating" in interactions.columns,
        given_split=None not in inter_files,
    )


def find_inter(raw: Path | None) -> tuple[Path, str, dict[str | None, Path]]:
    """``(folder, name, {split or None: .inter path})`` for ``--raw`` (a folder or an ``.inter`` file)."""
    if raw is None:
        raise RecmtlError("--raw is required: the folder holding the RecBole <name>.inter file")
    raw = Path(raw)
    if raw.is_file():
        return raw.parent, re.sub(r"\.inter$", "", raw.name), {None: raw}
    if not raw.exists():
        raise RecmtlError(f"{raw}: raw folder not found")
    inter = sorted(raw.glob("*.inter"))
    whole = [p for p in inter if not _SPLIT_SUFFIX.search(p.name)]
    if len(whole) > 1:
        names = ", ".join(p.name for p in whole)
        raise RecmtlError(f"{raw}: several .inter files ({names}); pass the one to use")
    if whole:
        return raw, whole[0].name[: -len(".inter")], {None: whole[0]}
    names = sorted({_SPLIT_SUFFIX.sub("", p.name) for p in inter})
    if len(names) != 1:
        found = f"several benchmarks ({', '.join(names)})" if names else "no <name>.inter file"
        raise RecmtlError(f"{raw}: {found}; expected one <name>.inter or <name>.train/.valid/.test.inter")
    name = names[0]
    files = {s: raw / f"{name}.{s}.inter" for s in SPLITS if (raw / f"{name}.{s}.inter").is_file()}
    for s in ("train", "test"):
        if s not in files:
            raise RecmtlError(f"{raw / f'{name}.{s}.inter'}: RecBole {s} file not found")
    return raw, name, dict(files)


def _optional(path: Path, reader: Callable[[Path], pl.DataFrame | None]) -> pl.DataFrame | None:
    """``reader(path)`` when ``path`` exists, else None."""
    return reader(path) if path.is_file() else None


def read_header(path: Path) -> dict[str, str]:
    """``{field: type}`` from an atomic file's ``field:type`` header line, in column order."""
    header = head_lines(path, 1)[0]
    fields: dict[str, str] = {}
    for column in header.split("\t"):
        name, _, kind = column.strip().rpartition(":")
        if not re.fullmatch(r"[^\s:,;]+", name) or kind not in FIELD_TYPES:
            raise DataFormatError(
                f"{path}, line 1: header column {column.strip()!r} is not field:type with type "
                f"{', '.join(FIELD_TYPES)} (tab-separated)"
            )
        if name in fields:
            raise DataFormatError(f"{path}, line 1: field {name!r} appears twice")
        fields[name] = kind
    return fields


def read_atomic(path: Path, roles: dict[str, str]) -> pl.DataFrame:
    """Fields of ``roles`` (field -> role) of an atomic file: String columns named by role, + ``_line``."""
    fields = read_header(path)
    names = [roles.get(f, "_") for f in fields]
    return read_delimited(path, sep="\t", roles=names, has_header=True)


def _token_fields(fields: dict[str, str]) -> list[str]:
    return [f for f, kind in fields.items() if kind == "token"]


def read_inter(path: Path) -> pl.DataFrame:
    """user, item (String), rating (Float32) and ts (Int64) when present, from a ``.inter`` file."""
    fields = read_header(path)
    tokens = _token_fields(fields)
    user = "user_id" if "user_id" in fields else next((f for f in tokens if f.startswith("user")), None)
    if user is None:
        raise DataFormatError(f"{path}, line 1: no user_id field (nor a token field named user*)")
    item = "item_id" if "item_id" in fields else next((f for f in tokens if f != user), None)
    if item is None:
        raise DataFormatError(f"{path}, line 1: no item_id field (nor a second token field)")
    roles = {user: "user", item: "item"}
    roles.update({f: r for f, r in (("rating", "rating"), ("timestamp", "ts")) if f in fields})
    frame = read_atomic(path, roles)
    require_values(frame, list(roles.values()), path)
    numbers = {c: t for c, t in (("rating", pl.Float32()), ("ts", pl.Int64())) if c in frame.columns}
    frame = parse_numbers(frame, numbers, path)
    frame = frame.select([c for c in ("user", "item", "rating", "ts") if c in frame.columns])
    if frame.height == 0:
        raise DataFormatError(f"{path}: no interactions found")
    return frame


def read_net(path: Path) -> pl.DataFrame:
    """src, dst (String) from a ``.net`` file."""
    fields = read_header(path)
    tokens = _token_fields(fields)
    if "source_id" in fields and "target_id" in fields:
        src, dst = "source_id", "target_id"
    elif len(tokens) >= 2:
        src, dst = tokens[:2]
    else:
        raise DataFormatError(f"{path}, line 1: expected source_id:token and target_id:token fields")
    frame = read_atomic(path, {src: "src", dst: "dst"})
    require_values(frame, ["src", "dst"], path)
    return frame.select("src", "dst")


def read_item_categories(path: Path) -> pl.DataFrame | None:
    """item, category (String, one row per label) from a ``.item`` file; None without a category field."""
    fields = read_header(path)
    item = "item_id" if "item_id" in fields else next(iter(_token_fields(fields)), None)
    named = [f for f in CATEGORY_FIELDS if f in fields]
    seqs = [f for f, kind in fields.items() if kind == "token_seq"]
    category = named[0] if named else (seqs[0] if len(seqs) == 1 else None)
    if item is None or category is None or category == item:
        return None
    frame = read_atomic(path, {item: "item", category: "category"})
    require_values(frame, ["item"], path)
    if fields[category].endswith("_seq"):
        frame = frame.with_columns(pl.col("category").str.split(" ")).explode("category")
    frame = (
        frame.select("item", "category")
        .with_columns(pl.col("category").str.strip_chars())
        .filter(pl.col("category").is_not_null() & (pl.col("category") != ""))
        .unique(maintain_order=True)
    )
    return frame if frame.height else None
