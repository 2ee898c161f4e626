"""Helpers shared by the readers: locating files and reading delimited text with clear errors."""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from pathlib import Path
from typing import IO

import polars as pl

from recmtl.errors import ConfigError, DataFormatError, RecmtlError


def require_file(path: Path | None, what: str) -> Path:
    """Return ``path`` if it is an existing file, else raise a one-line error naming ``what``."""
    if path is None:
        raise RecmtlError(f"no {what} given")
    path = Path(path)
    if not path.exists():
        raise RecmtlError(f"{path}: {what} not found")
    if not path.is_file():
        raise RecmtlError(f"{path}: expected the {what} to be a file, found a directory")
    return path


def find_file(folder: Path | None, candidates: list[str], what: str, *, required: bool = True) -> Path | None:
    """The first of ``candidates`` (glob patterns) present in ``folder``.

    ``folder`` may also be a file, which is then returned as is. Raises a one-line error naming the folder
    and the expected names when nothing matches and ``required``.
    """
    if folder is None:
        raise RecmtlError(f"--raw is required: the folder holding the {what}")
    folder = Path(folder)
    if folder.is_file():
        return folder
    if not folder.exists():
        raise RecmtlError(f"{folder}: raw folder not found")
    for pattern in candidates:
        hits = sorted(folder.glob(pattern))
        if len(hits) > 1:
            names = ", ".join(h.name for h in hits)
            raise RecmtlError(f"{folder}: several files match {pattern!r} ({names}); pass the one to use")
        if hits:
            return hits[0]
    if required:
        raise RecmtlError(f"{folder}: no {what} found (expected {' or '.join(candidates)})")
    return None


def check_field_counts(path: Path, sep: str, expected: int | tuple[int, ...], *, skip_header: bool) -> None:
    """Raise DataFormatError naming the first line of ``path`` whose field count is not ``expected``.

    Works on whole lines (no quoting), vectorised with polars, so it costs one extra read of the file.
    """
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    try:
        lines = pl.read_csv(
            path,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            new_columns=["line"],
            infer_schema=False,
            encoding="utf8-lossy",
        )
    except pl.exceptions.NoDataError:
        raise DataFormatError(f"{path}: file is empty") from None
    counts = lines.with_row_index("lineno", offset=1).with_columns(
        fields=pl.col("line").str.count_matches(sep, literal=True) + 1
    )
    if skip_header:
        counts = counts.slice(1)
    counts = counts.filter(pl.col("line").str.strip_chars() != "")
    bad = counts.filter(~pl.col("fields").is_in(list(allowed))).head(1)
    if bad.height:
        lineno, fields = bad["lineno"][0], bad["fields"][0]
        want = " or ".join(str(a) for a in allowed)
        raise DataFormatError(
            f"{path}, line {lineno}: expected {want} columns separated by {sep!r}, found {fields}"
        )


def cast_ids(frame: pl.DataFrame, columns: list[str], path: Path, *, line_offset: int) -> pl.DataFrame:
    """Cast string id ``columns`` to Int64, naming the first non-numeric value and its line on failure.

    ``line_offset`` is the file line number of the frame's first row (2 with a header, 1 without).
    """
    casts = {c: pl.col(c).str.strip_chars().cast(pl.Int64, strict=False) for c in columns}
    out = frame.with_columns(**casts)
    for c in columns:
        bad = frame.with_row_index("i").filter(out[c].is_null() & frame[c].is_not_null()).head(1)
        if bad.height:
            raise DataFormatError(
                f"{path}, line {bad['i'][0] + line_offset}: column {c!r} must be a whole number, "
                f"found {bad[c][0]!r}"
            )
    return out


# --------------------------------------------------------------------------------------------------
# Helpers shared by the amazon2014, amazon2018, recbole and csv readers.

#: An id that round-trips through Int64 unchanged: no sign on zero, no leading zeros, at most 18 digits.
#: Ids such as ASINs ("0972683275") keep their leading zeros by staying strings.
CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"

#: Role names accepted by ``--columns`` and their aliases; ``_`` (or an empty name) skips a column.
COLUMN_ALIASES = {
    "user": "user",
    "item": "item",
    "rating": "rating",
    "ts": "ts",
    "timestamp": "ts",
    "time": "ts",
}

GZIP_MAGIC = b"\x1f\x8b"

#: A "line" longer than this (bytes) means the file is not JSON lines at all.
MAX_JSON_LINE = 1 << 28


def first_line(message: object) -> str:
    """The first line of an exception message (polars adds multi-line context stacks)."""
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


def parse_columns(spec: str) -> list[str]:
    """Parse ``--columns`` ("user,item,rating,ts"): role names in file order, ``_`` for a skipped column.

    Raises ConfigError for an unknown or repeated role, or when ``user`` or ``item`` is missing.
    """
    roles: list[str] = []
    for raw in spec.split(","):
        name = raw.strip().lower()
        if name in ("", "_", "-", "skip"):
            roles.append("_")
            continue
        if name not in COLUMN_ALIASES:
            raise ConfigError(
                f"--columns {spec!r}: unknown column {raw.strip()!r} (known: user, item, rating, ts; _ skips)"
            )
        role = COLUMN_ALIASES[name]
        if role in roles:
            raise ConfigError(f"--columns {spec!r}: {role!r} given twice")
        roles.append(role)
    missing = [r for r in ("user", "item") if r not in roles]
    if missing:
        raise ConfigError(f"--columns {spec!r}: needs a {missing[0]!r} column")
    return roles


def head_lines(path: Path, n: int = 2, *, limit: int = 1 << 20) -> list[str]:
    """The first ``n`` non-blank lines of the text file ``path`` (read from its first ``limit`` bytes).

    Raises a one-line DataFormatError naming the file when it is empty, gzip-compressed, binary or not
    UTF-8, so a file of another format never reaches the parser.
    """
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(limit)
    except OSError as exc:
        raise RecmtlError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(GZIP_MAGIC):
        raise DataFormatError(
            f"{path}: file is gzip-compressed, expected delimited text (decompress it first)"
        )
    if b"\x00" in head:
        raise DataFormatError(f"{path}: binary file, expected delimited text")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(head, final=len(head) < limit)
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        raise DataFormatError(f"{path}, line {line}: not UTF-8 text, expected delimited text") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataFormatError(f"{path}: file is empty")
    return lines[:n]


def read_delimited(
    path: Path, *, sep: str, roles: list[str], has_header: bool, quote_char: str | None = None
) -> pl.DataFrame:
    """Read a delimited text file into String columns named by ``roles`` plus ``_line`` (its line number).

    Every line's field count is checked first. Values are stripped, empty values become null, blank lines
    are dropped; columns whose role is ``_`` are dropped. ``_line`` lets callers name the line of a bad
    value; drop it once the values are validated.
    """
    check_field_counts(path, sep, len(roles), skip_header=has_header)
    names = [role if role != "_" else f"_skip{i}" for i, role in enumerate(roles)]
    try:
        frame = pl.read_csv(
            path,
            separator=sep,
            has_header=has_header,
            new_columns=names,
            infer_schema=False,
            quote_char=quote_char,
            encoding="utf8",
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataFormatError(f"{path}: cannot read as {sep!r}-separated text ({first_line(exc)})") from None
    kept = [n for n, role in zip(names, roles, strict=True) if role != "_"]
    stripped = {c: pl.col(c).str.strip_chars() for c in kept}
    frame = (
        frame.with_row_index("_line", offset=2 if has_header else 1)
        .select("_line", *kept)
        .with_columns(**stripped)
        .with_columns(**{c: pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)) for c in kept})
    )
    return frame.filter(pl.any_horizontal(pl.col(kept).is_not_null()))


def require_values(frame: pl.DataFrame, columns: list[str], path: Path) -> None:
    """Raise DataFormatError naming the first line (``_line``) where one of ``columns`` is empty."""
    for c in columns:
        bad = frame.filter(pl.col(c).is_null()).head(1)
        if bad.height:
            raise DataFormatError(f"{path}, line {bad['_line'][0]}: column {c!r} is empty")


def parse_numbers(frame: pl.DataFrame, dtypes: dict[str, pl.DataType], path: Path) -> pl.DataFrame:
    """Cast String ``columns`` to numbers: Float32 ratings (finite), Int64 timestamps.

    A timestamp written as a float (``978300760.0``) is truncated to whole seconds. The first value that
    is not a number raises DataFormatError naming the file, its line (``_line``), the column and the value.
    """
    casts: dict[str, pl.Expr] = {}
    for c, dtype in dtypes.items():
        as_float = pl.col(c).cast(pl.Float64, strict=False)
        finite = pl.when(as_float.is_finite()).then(as_float)
        if dtype == pl.Int64:
            casts[c] = pl.coalesce(
                pl.col(c).cast(pl.Int64, strict=False), finite.cast(pl.Int64, strict=False)
            )
        else:
            casts[c] = finite.cast(dtype)
    out = frame.with_columns(**casts)
    for c, dtype in dtypes.items():
        bad = frame.filter(out[c].is_null()).head(1)
        if bad.height:
            kind = "a whole number or a number of seconds" if dtype == pl.Int64 else "a finite number"
            raise DataFormatError(
                f"{path}, line {bad['_line'][0]}: column {c!r} must be {kind}, found {bad[c][0] or ''!r}"
            )
    return out


def all_canonical_ints(columns: list[pl.Series]) -> bool:
    """True when every non-null value of every String series is a :data:`CANONICAL_INT` integer."""
    return all(bool(s.drop_nulls().str.contains(CANONICAL_INT).all()) for s in columns)


def ids_as(frame: pl.DataFrame, columns: list[str], numeric: bool) -> pl.DataFrame:
    """Cast String id ``columns`` to Int64 when ``numeric`` (checked by :func:`all_canonical_ints`)."""
    if not numeric:
        return frame
    return frame.with_columns(pl.col(c).cast(pl.Int64) for c in columns)


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, transparently decompressing gzip (detected by its magic bytes)."""
    try:
        with Path(path).open("rb") as fh:
            magic = fh.read(2)
        return gzip.open(path, "rb") if magic == GZIP_MAGIC else Path(path).open("rb")
    except OSError as exc:
        raise RecmtlError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _ndjson_error(lines: list[bytes], schema: dict[str, pl.DataType]) -> str | None:
    """The polars error message for these JSON lines, or None when they parse."""
    try:
        pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        return first_line(exc)
    return None


def _first_bad_json_line(lines: list[bytes], schema: dict[str, pl.DataType], message: str) -> tuple[int, str]:
    """Bisect ``lines`` (which fail to parse as a whole) down to the first failing line: (index, message)."""
    lo, hi = 0, len(lines)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _ndjson_error(lines[lo:mid], schema) is not None:
            hi = mid
        else:
            lo = mid
    return lo, _ndjson_error(lines[lo:hi], schema) or message


def read_json_lines(
    path: Path, schema: dict[str, pl.DataType], *, what: str, chunk_bytes: int = 64 << 20
) -> pl.DataFrame:
    """Read a JSON-lines file (plain or gzip) into the columns of ``schema``; other keys are ignored.

    The file is streamed in chunks of about ``chunk_bytes`` (whole lines), each parsed by
    ``polars.read_ndjson``, so memory stays bounded by the result. A line that is not a JSON object of
    the expected types raises DataFormatError naming the file and the line (found by bisecting the
    failing chunk); a compressed stream that is corrupt names the file.
    """
    frames: list[pl.DataFrame] = []
    line_no = 1  # file line number of the first line of the next chunk
    rest = b""
    with open_binary(path) as fh:
        while True:
            try:
                block = fh.read(chunk_bytes)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataFormatError(
                    f"{path}: corrupt or truncated compressed file ({first_line(exc)})"
                ) from None
            data = rest + block
            if not data:
                break
            cut = len(data) if not block else data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > MAX_JSON_LINE:
                    raise DataFormatError(
                        f"{path}, line {line_no}: line too long, expected {what} JSON lines"
                    )
                rest = data
                continue
            part, rest = data[:cut], data[cut:]
            frames.append(_parse_json_chunk(part, schema, path, line_no, what))
            line_no += part.count(b"\n")
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical")


def _parse_json_chunk(
    part: bytes, schema: dict[str, pl.DataType], path: Path, line_no: int, what: str
) -> pl.DataFrame:
    """Parse one chunk of whole JSON lines, naming the first bad line (``line_no`` = its first line)."""
    try:
        return pl.read_ndjson(io.BytesIO(part), schema=schema)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        index, message = _first_bad_json_line(part.split(b"\n"), schema, first_line(exc))
        where = f"{path}, line {line_no + index}"
        raise DataFormatError(f"{where}: not a valid {what} JSON line ({message})") from None


def require_fields(frame: pl.DataFrame, fields: list[str], path: Path, what: str) -> None:
    """Raise DataFormatError when the (non-empty) ``frame`` lacks one of ``fields`` on every row."""
    for f in fields:
        if frame.height and frame[f].null_count() == frame.height:
            raise DataFormatError(f"{path}: no {f!r} field on any line, expected {what}")


#: The fields of an Amazon review JSON line (2014 and 2018 editions) that recmtl reads.
AMAZON_REVIEW_SCHEMA: dict[str, pl.DataType] = {
    "reviewerID": pl.String(),
    "asin": pl.String(),
    "overall": pl.Float32(),
    "unixReviewTime": pl.Int64(),
}


def read_amazon_reviews(path: Path, label: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """user, item, rating, ts from Amazon review JSON lines (``label`` names the format in errors).

    Reviews missing reviewerID, asin or overall are dropped and counted as ``missing_field``.
    """
    reviews = read_json_lines(path, AMAZON_REVIEW_SCHEMA, what="review")
    require_fields(reviews, ["reviewerID", "asin", "overall"], path, label)
    frame = reviews.select(
        pl.col("reviewerID").alias("user"),
        pl.col("asin").alias("item"),
        pl.col("overall").alias("rating"),
        pl.col("unixReviewTime").alias("ts"),
    )
    complete = frame.drop_nulls(["user", "item", "rating"])
    dropped = {"missing_field": frame.height - complete.height} if complete.height < frame.height else {}
    return complete, dropped


Frame = pl.DataFrame | None


def unify_ids(
    interactions: pl.DataFrame, social: Frame, item_category: Frame, item_item: Frame
) -> tuple[pl.DataFrame, Frame, Frame, Frame]:
    """Int64 user ids (interactions, social) when all are plain integers, else String; items likewise
    (interactions, item_category, item_item); category labels likewise on their own."""
    users = [interactions["user"]] + ([social["src"], social["dst"]] if social is not None else [])
    items = [interactions["item"]]
    items += [item_category["item"]] if item_category is not None else []
    items += [item_item["src"], item_item["dst"]] if item_item is not None else []
    numeric_users, numeric_items = all_canonical_ints(users), all_canonical_ints(items)
    interactions = ids_as(ids_as(interactions, ["user"], numeric_users), ["item"], numeric_items)
    if social is not None:
        social = ids_as(social, ["src", "dst"], numeric_users)
    if item_category is not None:
        item_category = ids_as(item_category, ["item"], numeric_items)
        item_category = ids_as(item_category, ["category"], all_canonical_ints([item_category["category"]]))
    if item_item is not None:
        item_item = ids_as(item_item, ["src", "dst"], numeric_items)
    return interactions, social, item_category, item_item


def find_amazon_meta(meta: Path | None, interactions: Path, category: str, what: str) -> Path | None:
    """``--meta`` if given (must exist), else ``meta_<category>.json[.gz]`` beside the interactions file,
    else None. ``what`` names the file in errors (e.g. "Amazon 2014 meta file")."""
    if meta is not None:
        return require_file(meta, what)
    for name in (f"meta_{category}.json.gz", f"meta_{category}.json"):
        candidate = interactions.parent / name
        if candidate.is_file():
            return candidate
    return None
