"""Generic delimited text: interactions plus optional social, category and item-item edge files.

Interactions come from ``--raw`` (one file), or, for a published pre-split benchmark, from
``--train-file``, ``--test-file`` and optionally ``--valid-file`` kept as given: a String ``split``
column (train/valid/test) is added and ``given_split`` is set (use ``--split given``). Without a valid
file there are no valid rows. Relative file options are looked up under ``--raw`` when that is a folder.

Layout of every file:

- separator: ``--sep`` (one character; ``\\t``/``tab``, ``space``, ``comma``, ``semicolon`` accepted), else
  sniffed from the first line: the first of tab, ``,``, ``;``, space that occurs in it.
- columns of the interactions: ``--columns`` (roles ``user,item,rating,ts`` in file order, ``timestamp``
  accepted for ``ts``, ``_`` skips a column), else by count: 2 = user,item; 3 = +rating; 4 = +ts.
  All interactions files of a split must have the same columns.
- ``--header`` yes|no|auto. [reading] auto decides per file from its first two lines: a header when a
  number column (rating, ts) of line 1 is not a number; else, with no number columns, when line 1's id
  fields are not integers while line 2's are, or when line 1's fields all read like column names
  (``user``, ``item_id``, ``movieId``, ``src``, ``category``, ... -- a known name or ending in ``id``).
  String ids without a header are thus kept as data; ``--header yes`` settles any doubt.
- aux files: ``--social-file`` (src,dst[,ignored...]), ``--category-file`` (item,category[,ignored...]),
  ``--item-item-file`` (src,dst[,kind[,ignored...]]; kind defaults to ``co_rated``).

Values are stripped; ``"`` quotes a field, but a separator inside quotes is not supported (every line
must have the same number of separators). Ratings must be finite numbers and timestamps whole numbers (or
float seconds, truncated); any other value is an error naming the file, line and value, never a silent
drop. Ids are Int64 when every user id (interactions, social) -- respectively every item id
(interactions, categories, item-item) -- is a plain integer (no leading zeros), else String for all of
them; category labels likewise.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources._common import (
    head_lines,
    parse_columns,
    parse_numbers,
    read_delimited,
    require_file,
    require_values,
    unify_ids,
)
from recmtl.errors import ConfigError, DataFormatError, RecmtlError

SEPARATORS = ("\t", ",", ";", " ")
SEP_NAMES = {"\\t": "\t", "tab": "\t", "space": " ", "comma": ",", "semicolon": ";"}
HEADER_OPTIONS = ("auto", "yes", "no")
NUMBER_ROLES = {"rating": pl.Float32(), "ts": pl.Int64()}
ID_ROLES = ("user", "item", "src", "dst")
#: header words (lower case, only letters and digits kept) that mark a first line as a header
HEADER_WORDS = frozenset(
    "user users item items rating ratings score ts timestamp time date src dst source target from to "
    "truster trustee friend category categories cat genre genres tag label kind type relation weight".split()
)
DEFAULT_KIND = "co_rated"


def read(config: PrepareConfig) -> RawTables:
    """Read the interactions (one file or given train/valid/test files) and the optional edge files."""
    sep = normalise_sep(config.sep)
    if config.header not in HEADER_OPTIONS:
        raise ConfigError(f"--header {config.header!r}: expected one of {', '.join(HEADER_OPTIONS)}")
    files = interaction_files(config)
    folder = Path(config.raw) if config.raw is not None and Path(config.raw).is_dir() else None
    interactions = read_interactions(files, config, sep)
    social = _aux(config.social_file, folder, "social file", sep, config, ["src", "dst"])
    item_category = _aux(config.category_file, folder, "category file", sep, config, ["item", "category"])
    item_item = _aux(config.item_item_file, folder, "item-item file", sep, config, ["src", "dst", "kind"])
    if item_item is not None:
        kind = pl.col("kind") if "kind" in item_item.columns else pl.lit(None, dtype=pl.String)
        item_item = item_item.select("src", "dst", kind.fill_null(DEFAULT_KIND).alias("kind"))
    interactions, social, item_category, item_item = unify_ids(interactions, social, item_category, item_item)
    return RawTables(
        interactions=interactions,
        social=social,
        item_category=item_category,
        item_item=item_item,
        explicit="rating" in interactions.columns,
        given_split="split" in interactions.columns,
    )


def normalise_sep(sep: str | None) -> str | None:
    """``--sep`` as one character (names such as ``tab`` or ``\\t`` accepted), or None to sniff."""
    if sep is None:
        return None
    sep = SEP_NAMES.get(sep.lower(), sep)
    if len(sep) != 1 or sep in ('"', "\n", "\r"):
        raise ConfigError(f"--sep {sep!r}: expected one character such as , ; tab or space")
    return sep


def _resolve(path: Path | None, folder: Path | None) -> Path | None:
    """``path``, or ``folder / path`` when ``path`` is relative, missing, and present under ``folder``."""
    if path is None or folder is None:
        return path
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (folder / path).exists():
        return folder / path
    return path


def interaction_files(config: PrepareConfig) -> dict[str | None, Path]:
    """``{None: --raw}`` or ``{"train": ..., ["valid": ...,] "test": ...}`` for the given split files."""
    split_files = {"train": config.train_file, "valid": config.valid_file, "test": config.test_file}
    if all(p is None for p in split_files.values()):
        if config.raw is None:
            raise RecmtlError("--raw is required: the delimited interactions file (or give --train-file ...)")
        if Path(config.raw).is_dir():
            raise RecmtlError(f"{config.raw}: --raw must be the interactions file, found a folder")
        return {None: require_file(config.raw, "interactions file")}
    folder = None
    if config.raw is not None:
        if Path(config.raw).is_file():
            raise ConfigError("give either --raw FILE or --train-file/--valid-file/--test-file, not both")
        folder = Path(config.raw)
    for name in ("train", "test"):
        if split_files[name] is None:
            raise ConfigError(f"--{name}-file is required with a given split (--valid-file is optional)")
    return {
        name: require_file(_resolve(path, folder), f"{name} file")
        for name, path in split_files.items()
        if path is not None
    }


def sniff_sep(line: str, path: Path) -> str:
    """The first of tab , ; space present in ``line``."""
    for sep in SEPARATORS:
        if sep in line:
            return sep
    raise DataFormatError(f"{path}, line 1: cannot tell the separator (no tab , ; or space); pass --sep")


def default_roles(count: int, path: Path) -> list[str]:
    """Interaction roles by column count: user,item[,rating[,ts]]."""
    if not 2 <= count <= 4:
        raise DataFormatError(
            f"{path}, line 1: found {count} columns; pass --columns to name them (e.g. user,item,rating,ts,_)"
        )
    return ["user", "item", "rating", "ts"][:count]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    """Digits only (leading zeros allowed: for header detection an ASIN-like ``0972683275`` is numeric)."""
    return re.fullmatch(r"-?[0-9]+", text.strip()) is not None


def _looks_like_name(text: str) -> bool:
    word = re.sub(r"[^a-z0-9]", "", text.strip().strip('"').lower())
    return word in HEADER_WORDS or (word.endswith("id") and not word.isdigit())


def has_header(option: str, lines: list[str], sep: str, roles: list[str]) -> bool:
    """``--header`` yes/no, or the auto rule of the module docstring on the first two lines."""
    if option != "auto":
        return option == "yes"
    first = [f.strip().strip('"') for f in lines[0].split(sep)]
    numbers = [first[i] for i, r in enumerate(roles) if r in NUMBER_ROLES and i < len(first)]
    if numbers:
        return not all(_is_number(v) for v in numbers)
    ids = [i for i, r in enumerate(roles) if r in ID_ROLES and i < len(first)]
    if all(_is_int(first[i]) for i in ids):
        return False
    if len(lines) > 1:
        second = [f.strip().strip('"') for f in lines[1].split(sep)]
        if all(i < len(second) and _is_int(second[i]) for i in ids):
            return True
    return all(_looks_like_name(f) for f in first if f)


def read_file(
    path: Path, sep: str | None, header: str, roles: list[str] | None, *, min_roles: list[str] | None = None
) -> pl.DataFrame:
    """Read one delimited file into String columns named by ``roles`` (+ ``_line``).

    ``roles`` None: interaction roles by count. ``min_roles``: aux roles, the file holding at least the
    first ``len(min_roles) - 1`` of them; extra columns beyond ``min_roles`` are ignored.
    """
    lines = head_lines(path, 2)
    sep = sep or sniff_sep(lines[0], path)
    count = len(lines[0].split(sep))
    if min_roles is not None:
        need = 2
        if count < need:
            raise DataFormatError(
                f"{path}, line 1: expected at least {need} columns ({', '.join(min_roles[:need])}) "
                f"separated by {sep!r}, found {count}"
            )
        roles = min_roles[:count] + ["_"] * (count - len(min_roles))
    elif roles is None:
        roles = default_roles(count, path)
    return read_delimited(
        path, sep=sep, roles=roles, has_header=has_header(header, lines, sep, roles), quote_char='"'
    )


def read_interactions(files: dict[str | None, Path], config: PrepareConfig, sep: str | None) -> pl.DataFrame:
    """user, item (String), rating (Float32), ts (Int64) as present, and ``split`` for given splits."""
    roles = parse_columns(config.columns) if config.columns else None
    parts = []
    for split, path in files.items():
        frame = read_file(path, sep, config.header, roles)
        present = [c for c in ("user", "item", "rating", "ts") if c in frame.columns]
        if roles is None:
            roles = [c for c in frame.columns if c != "_line"]
        require_values(frame, present, path)
        frame = parse_numbers(frame, {c: t for c, t in NUMBER_ROLES.items() if c in present}, path)
        frame = frame.select(present)
        if split is not None:
            frame = frame.with_columns(split=pl.lit(split, dtype=pl.String))
        parts.append(frame)
    interactions = pl.concat(parts)
    if interactions.height == 0:
        raise DataFormatError(f"{', '.join(str(p) for p in files.values())}: no interactions found")
    return interactions


def _aux(
    path: Path | None,
    folder: Path | None,
    what: str,
    sep: str | None,
    config: PrepareConfig,
    roles: list[str],
) -> pl.DataFrame | None:
    """An optional edge file read with ``roles`` (String columns), or None when not given."""
    if path is None:
        return None
    path = require_file(_resolve(path, folder), what)
    frame = read_file(path, sep, config.header, None, min_roles=roles)
    required = roles[:2]
    require_values(frame, required, path)
    return frame.select([r for r in roles if r in frame.columns])
