"""amazon2018 reader: JSON-lines reviews, reversed ratings CSV, de-duplicated JSON meta, bad inputs.

Also covers the chunked JSON-lines reader of ``_common`` that the Amazon readers share. Fixtures
(tests/fixtures/amazon2018) are plain text, gzip-compressed here.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources import amazon2018
from recmtl.data.sources._common import AMAZON_REVIEW_SCHEMA, read_json_lines
from recmtl.errors import ConfigError, DataFormatError, RecmtlError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "amazon2018"
CAT = "Video_Games"


def gz(src: Path | bytes, dst: Path) -> Path:
    """Write ``src`` (a file or bytes) gzip-compressed to ``dst`` with a fixed header (mtime 0)."""
    data = src if isinstance(src, bytes) else src.read_bytes()
    with dst.open("wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as z:
        z.write(data)
    return dst


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A folder as published: <Cat>_5.json.gz and meta_<Cat>.json.gz."""
    folder = tmp_path / "amazon"
    folder.mkdir()
    gz(FIXTURES / f"{CAT}_5.json", folder / f"{CAT}_5.json.gz")
    gz(FIXTURES / f"meta_{CAT}.json", folder / f"meta_{CAT}.json.gz")
    return folder


def read(raw_path: Path, **kw: object) -> RawTables:
    return amazon2018.read(PrepareConfig(source="amazon2018", raw=raw_path, **kw))


SCHEMA = {"user": pl.String, "item": pl.String, "rating": pl.Float32, "ts": pl.Int64}
REVIEWS = pl.DataFrame(
    {
        "user": [
            "A1HP7NVNPFMA4N",
            "A1JGAP0185YJI6",
            "A1YJWEXHQBWK2B",
            "A2204E1TH211HT",
            "A1HP7NVNPFMA4N",
            "A3F5OUZ0LLXZ3C",
            "A1JGAP0185YJI6",
            "A3F5OUZ0LLXZ3C",
        ],
        "item": [
            "0700026657",
            "0700026657",
            "0700026657",
            "0700099867",
            "0700099867",
            "B00004SVKC",
            "B00004SVKC",
            "B01GW3H3U8",
        ],
        "rating": [5.0, 4.0, 3.0, 2.0, 5.0, 1.0, 4.0, 5.0],
        "ts": [
            1445040000,
            1437955200,
            1424649600,
            1252368000,
            1402704000,
            1357084800,
            1354233600,
            1488672000,
        ],
    },
    schema=SCHEMA,
)
RATINGS = pl.DataFrame(
    {
        "user": ["A1HP7NVNPFMA4N", "A1JGAP0185YJI6", "A2204E1TH211HT", "A3F5OUZ0LLXZ3C", "A3F5OUZ0LLXZ3C"],
        "item": ["0700026657", "0700026657", "0700099867", "B00004SVKC", "B01GW3H3U8"],
        "rating": [5.0, 4.0, 2.0, 1.0, 5.0],
        "ts": [1445040000, 1437955200, 1252368000, 1357084800, 1488672000],
    },
    schema=SCHEMA,
)
# First row of each asin only: the second B00004SVKC row (also_buy 0700026657, no also_view 0700026657)
# and the repeated 0700026657 row add nothing.
EDGES = pl.DataFrame(
    [
        ("0700026657", "B00FM5IY38", "also_bought"),
        ("0700026657", "B00004SVKC", "also_bought"),
        ("B00004SVKC", "B01GW3H3U8", "also_bought"),
        ("0700026657", "B01GW3H3U8", "also_viewed"),
        ("B00004SVKC", "0700026657", "also_viewed"),
        ("B00004SVKC", "B00FM5IY38", "also_viewed"),
        ("B01GW3H3U8", "B00004SVKC", "also_viewed"),
    ],
    schema={"src": pl.String, "dst": pl.String, "kind": pl.String},
    orient="row",
)
CATEGORIES = pl.DataFrame(
    [
        ("0700026657", "Video Games > PC > Games"),
        ("B00004SVKC", "Video Games > Retro Gaming & Microconsoles > Nintendo 64 > Accessories"),
        ("B01GW3H3U8", "Video Games > PC > Accessories > Gaming Mice"),
    ],
    schema={"item": pl.String, "category": pl.String},
    orient="row",
)


# ---------------------------------------------------------------------------------------------- good input


def test_reviews_gz_give_the_exact_interactions(raw: Path) -> None:
    tables = read(raw)
    assert_frame_equal(tables.interactions, REVIEWS)
    assert tables.explicit is True and tables.given_split is False
    assert tables.dropped == {}


def test_meta_is_deduplicated_by_asin_keeping_the_first_row(raw: Path) -> None:
    tables = read(raw)
    assert_frame_equal(tables.item_item, EDGES)
    assert ("B00004SVKC", "0700026657", "also_bought") not in tables.item_item.rows()  # only in the 2nd row
    assert tables.item_category["item"].is_unique().all()


def test_meta_kinds_use_the_2014_names(raw: Path) -> None:
    assert set(read(raw).item_item["kind"]) == {"also_bought", "also_viewed"}


def test_meta_category_path_gives_its_leaf_with_html_entities_decoded(raw: Path) -> None:
    item_category = read(raw).item_category
    assert_frame_equal(item_category, CATEGORIES)
    assert not item_category["category"].str.contains("&amp;").any()
    assert "0700099867" not in item_category["item"]  # empty category list; main_cat (an <img> tag) unused


def test_plain_copies_read_the_same() -> None:
    tables = read(FIXTURES / f"{CAT}_5.json")
    assert_frame_equal(tables.interactions, REVIEWS)
    assert_frame_equal(tables.item_item, EDGES)  # meta_Video_Games.json found by category name


def test_ratings_csv_is_item_user_rating_timestamp_by_default() -> None:
    tables = read(FIXTURES / f"{CAT}.csv")
    assert_frame_equal(tables.interactions, RATINGS)
    assert_frame_equal(tables.item_category, CATEGORIES)


def test_columns_option_reorders_a_user_first_csv(tmp_path: Path) -> None:
    path = tmp_path / "Books.csv"
    path.write_text("AUSER1,0001,5.0,100\nAUSER2,0002,3.0,200\n")
    tables = read(path, columns="user,item,rating,ts")
    assert tables.interactions.rows() == [("AUSER1", "0001", 5.0, 100), ("AUSER2", "0002", 3.0, 200)]
    default = read(path)  # the default order swaps the two id columns
    assert default.interactions["user"].to_list() == ["0001", "0002"]


def test_csv_with_columns_lacking_a_rating_is_not_explicit(tmp_path: Path) -> None:
    path = tmp_path / "Books.csv"
    path.write_text("0001,AUSER1,5.0,100\n")
    tables = read(path, columns="item,user,_,ts")
    assert tables.interactions.columns == ["user", "item", "ts"]
    assert tables.explicit is False


def test_reviews_lacking_an_id_or_rating_are_dropped_and_counted(tmp_path: Path) -> None:
    lines = (
        b'{"overall": 5.0, "reviewerID": "A1", "asin": "0001", "unixReviewTime": 100}\n'
        b'{"overall": 4.0, "asin": "0002", "unixReviewTime": 200}\n'
    )
    tables = read(gz(lines, tmp_path / "Books.json.gz"))
    assert tables.dropped == {"missing_field": 1}
    assert tables.interactions.rows() == [("A1", "0001", 5.0, 100)]


def test_only_meta_in_a_folder_is_not_taken_for_reviews(tmp_path: Path) -> None:
    gz(FIXTURES / f"meta_{CAT}.json", tmp_path / f"meta_{CAT}.json.gz")
    with pytest.raises(RecmtlError, match=r"no Amazon 2018 reviews found"):
        read(tmp_path)


# ------------------------------------------------------------------------------- chunked JSON-lines reader


def test_chunked_json_reading_equals_one_chunk() -> None:
    path = FIXTURES / f"{CAT}_5.json"
    whole = read_json_lines(path, AMAZON_REVIEW_SCHEMA, what="review")
    for chunk in (1, 64, 300, 1000):
        assert_frame_equal(
            read_json_lines(path, AMAZON_REVIEW_SCHEMA, what="review", chunk_bytes=chunk), whole
        )
    assert whole.height == 8


@pytest.mark.parametrize("chunk", [64, 400, 1 << 20])
def test_a_bad_json_line_is_named_whatever_the_chunk(tmp_path: Path, chunk: int) -> None:
    lines = (FIXTURES / f"{CAT}_5.json").read_bytes().splitlines(keepends=True)
    lines.insert(6, b'{"overall": "five", "reviewerID": "A9", "asin": "0009"}\n')  # becomes line 7
    path = gz(b"".join(lines), tmp_path / "Books.json.gz")
    with pytest.raises(DataFormatError) as err:
        read_json_lines(path, AMAZON_REVIEW_SCHEMA, what="review", chunk_bytes=chunk)
    assert "Books.json.gz, line 7: not a valid review JSON line" in str(err.value)
    assert "five" in str(err.value)


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b'{"overall": 5.0, "reviewerID": "A9", "asin": "0009"', "error parsing line"),  # cut short
        (b"{'overall': 5.0, 'reviewerID': 'A9', 'asin': '0009'}", "error parsing line"),  # Python literal
        (b'["A9", "0009", 5.0]', "expected to contain JSON object"),
        (
            b'{"overall": 5.0, "reviewerID": "A9", "asin": "0009", "unixReviewTime": "2015-10-17"}',
            "2015-10-17",
        ),
    ],
)
def test_a_bad_review_line_names_file_and_line(tmp_path: Path, bad_line: bytes, reason: str) -> None:
    lines = (FIXTURES / f"{CAT}_5.json").read_bytes().splitlines(keepends=True)
    lines.insert(2, bad_line + b"\n")
    path = gz(b"".join(lines), tmp_path / "Books_5.json.gz")
    with pytest.raises(DataFormatError) as err:
        read(path)
    message = str(err.value)
    assert "Books_5.json.gz, line 3: not a valid review JSON line" in message
    assert reason in message and "\n" not in message


def test_a_bad_meta_line_names_file_and_line(raw: Path) -> None:
    lines = (FIXTURES / f"meta_{CAT}.json").read_bytes().splitlines(keepends=True)
    lines.insert(1, b'{"asin": "B0BAD", "also_buy": "B0001"}\n')  # also_buy must be a list
    gz(b"".join(lines), raw / f"meta_{CAT}.json.gz")
    with pytest.raises(DataFormatError, match=rf"meta_{CAT}\.json\.gz, line 2: not a valid meta JSON line"):
        read(raw)


def test_a_meta_file_without_asin_is_rejected(raw: Path) -> None:
    gz(b'{"title": "x", "also_buy": []}\n', raw / f"meta_{CAT}.json.gz")
    with pytest.raises(DataFormatError, match=rf"meta_{CAT}\.json\.gz: no 'asin' field on any line"):
        read(raw)


def test_garbage_files_are_one_clear_error(raw: Path) -> None:
    (raw / f"{CAT}_5.json.gz").write_bytes(bytes(range(256)) * 8)  # not gzip, not text
    with pytest.raises(DataFormatError, match=rf"{CAT}_5\.json\.gz, line 1: not a valid review JSON line"):
        read(raw)
    (raw / f"{CAT}_5.json.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not deflate data" * 10)
    with pytest.raises(DataFormatError, match=rf"{CAT}_5\.json\.gz: corrupt or truncated compressed file"):
        read(raw)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("0001,A1,5.0,100\n0002,A2\n", r"Books\.csv, line 2: expected 4 columns separated by ',', found 2"),
        ("0001,A1,5.0,100\n0002,A2,4.0,soon\n", r"Books\.csv, line 2: column 'ts' must be .*found 'soon'"),
        ("0001,A1,nan,100\n", r"Books\.csv, line 1: column 'rating' must be a finite number, found 'nan'"),
    ],
)
def test_a_bad_ratings_csv_names_file_line_and_value(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "Books.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=expected):
        read(path)


def test_bad_options_and_missing_paths(tmp_path: Path) -> None:
    path = tmp_path / "Books.csv"
    path.write_text("0001,A1,5.0,100\n")
    with pytest.raises(ConfigError, match=r"--columns 'item,user,stars,ts': unknown column 'stars'"):
        read(path, columns="item,user,stars,ts")
    with pytest.raises(ConfigError, match=r"needs a 'user' column"):
        read(path, columns="item,_,rating,ts")
    with pytest.raises(RecmtlError, match=r"missing: raw folder not found"):
        read(tmp_path / "missing")
    with pytest.raises(RecmtlError, match=r"meta_x\.json\.gz: Amazon 2018 meta file not found"):
        read(path, meta=tmp_path / "meta_x.json.gz")


def test_two_candidate_review_files_must_be_disambiguated(raw: Path) -> None:
    gz(FIXTURES / f"{CAT}_5.json", raw / f"{CAT}.json.gz")
    with pytest.raises(
        RecmtlError, match=r"several files match '\*\.json\.gz' \(Video_Games\.json\.gz, Video_"
    ):
        read(raw)
