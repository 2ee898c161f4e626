"""hetrec2011-lastfm-2k (GroupLens / Last.fm, HetRec 2011).

Tab-separated files with a header: ``user_artists.dat`` (userID, artistID, weight = play count),
``user_friends.dat`` (userID, friendID; both directions listed), ``user_taggedartists.dat`` (userID,
artistID, tagID, day, month, year), ``tags.dat`` (tagID, tagValue; latin-1). Items are artists; the play
count becomes ``rating`` so ``--min-rating`` can threshold plays (implicit feedback: by default any play is a
positive). An artist's categories are its ``--category-top-k`` most frequent tags over all users (ties: the
smallest tag id), named by their tag value.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recmtl.config import PrepareConfig
from recmtl.data import steps
from recmtl.data.schema import RawTables
from recmtl.data.sources._common import cast_ids, check_field_counts, find_file
from recmtl.errors import ConfigError, DataFormatError


def _read_tsv(path: Path, columns: list[str], *, encoding: str = "utf8") -> pl.DataFrame:
    """Read a header + tab-separated file, checking the header and every line's field count."""
    check_field_counts(path, "\t", len(columns), skip_header=True)
    frame = pl.read_csv(
        path,
        separator="\t",
        has_header=True,
        infer_schema=False,
        quote_char=None,
        encoding="utf8-lossy" if encoding == "utf8" else encoding,
    )
    if frame.columns != columns:
        want, found = " ".join(columns), " ".join(frame.columns)
        raise DataFormatError(f"{path}, line 1: expected the header columns {want}, found {found}")
    return frame


def read(config: PrepareConfig) -> RawTables:
    """Read the hetrec2011-lastfm-2k folder given by ``--raw``."""
    if config.category_top_k < 1:
        raise ConfigError(f"--category-top-k must be at least 1, got {config.category_top_k}")
    plays_path = find_file(config.raw, ["user_artists.dat"], "user_artists.dat")
    folder = plays_path.parent
    plays = _read_tsv(plays_path, ["userID", "artistID", "weight"])
    plays = cast_ids(plays, ["userID", "artistID", "weight"], plays_path, line_offset=2)
    interactions = plays.select(
        pl.col("userID").alias("user"),
        pl.col("artistID").alias("item"),
        pl.col("weight").cast(pl.Float32).alias("rating"),
    )
    social = None
    friends_path = find_file(folder, ["user_friends.dat"], "user_friends.dat", required=False)
    if friends_path is not None:
        friends = cast_ids(
            _read_tsv(friends_path, ["userID", "friendID"]),
            ["userID", "friendID"],
            friends_path,
            line_offset=2,
        )
        social = friends.select(pl.col("userID").alias("src"), pl.col("friendID").alias("dst"))
    item_category = None
    tagged_path = find_file(folder, ["user_taggedartists.dat"], "user_taggedartists.dat", required=False)
    if tagged_path is not None:
        cols = ["userID", "artistID", "tagID", "day", "month", "year"]
        tagged = cast_ids(
            _read_tsv(tagged_path, cols), ["userID", "artistID", "tagID"], tagged_path, line_offset=2
        )
        top = steps.modal_value(tagged, "artistID", "tagID", config.category_top_k)
        tags_path = find_file(folder, ["tags.dat"], "tags.dat", required=False)
        if tags_path is not None:
            tags = cast_ids(
                _read_tsv(tags_path, ["tagID", "tagValue"], encoding="latin1"),
                ["tagID"],
                tags_path,
                line_offset=2,
            )
            top = top.join(tags, on="tagID", how="left").with_columns(
                pl.coalesce(pl.col("tagValue"), pl.col("tagID").cast(pl.String)).alias("category")
            )
        else:
            top = top.with_columns(category=pl.col("tagID").cast(pl.String))
        item_category = top.select(pl.col("artistID").alias("item"), "category")
    return RawTables(interactions=interactions, social=social, item_category=item_category, explicit=False)
