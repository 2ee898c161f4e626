"""amazon2014 reader: reviews / ratings, Python-literal meta, and every bad-input path.

Fixtures (tests/fixtures/amazon2014) are plain text; the published ``.json.gz`` files are made from them
here, deterministically, so the fixtures stay readable.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources import amazon2014
from recmtl.errors import DataFormatError, RecmtlError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "amazon2014"
CAT = "Toys_and_Games"


def gz(src: Path | bytes, dst: Path) -> Path:
    """Write ``src`` (a file or bytes) gzip-compressed to ``dst`` with a fixed header (mtime 0)."""
    data = src if isinstance(src, bytes) else src.read_bytes()
    with dst.open("wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as z:
        z.write(data)
    return dst


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A folder as published: reviews_<Cat>_5.json.gz and meta_<Cat>.json.gz."""
    folder = tmp_path / "amazon"
    folder.mkdir()
    gz(FIXTURES / f"reviews_{CAT}_5.json", folder / f"reviews_{CAT}_5.json.gz")
    gz(FIXTURES / f"meta_{CAT}.json", folder / f"meta_{CAT}.json.gz")
    return folder


def read(raw_path: Path, **kw: object) -> RawTables:
    return amazon2014.read(PrepareConfig(source="amazon2014", raw=raw_path, **kw))


REVIEWS = pl.DataFrame(
    {
        "user": [
            "A1VXOAVRGKGEAK",
            "A8R62G708TSCM",
            "A21KH420DK0ICA",
            "AR29QK6HPFYZ4",
            "A1VXOAVRGKGEAK",
            "A8R62G708TSCM",
            "A21KH420DK0ICA",
            "A3IXDNF6QNCTZF",
            "A3IXDNF6QNCTZF",
            "AR29QK6HPFYZ4",
        ],
        "item": [
            "0439893577",
            "0439893577",
            "0439893577",
            "0000031852",
            "0000031852",
            "B00004TZY8",
            "B00004TZY8",
            "B0000AQJ9H",
            "0439893577",
            "B002BZX8Z6",
        ],
        "rating": [5.0, 4.0, 5.0, 3.0, 2.0, 5.0, 1.0, 4.0, 5.0, 4.0],
        "ts": [
            1390953600,
            1395964800,
            1359331200,
            1403481600,
            1378080000,
            1294704000,
            1341878400,
            1367884800,
            1370044800,
            1404172800,
        ],
    },
    schema={"user": pl.String, "item": pl.String, "rating": pl.Float32, "ts": pl.Int64},
)

CATEGORIES = pl.DataFrame(
    [
        ("0000031852", "Clothing, Shoes & Jewelry > Girls"),
        ("0000031852", "Clothing, Shoes & Jewelry > Novelty, Costumes & More"),
        ("0439893577", "Toys & Games > Learning & Education > Magnetic Boards"),
        ("0439893577", "Toys & Games > Arts & Crafts"),
        ("B00004TZY8", "Toys & Games > Learning & Education > Accessories"),
        ("B0000AQJ9H", "Toys & Games > Arts & Crafts > Accessories"),
        ("B002BZX8Z6", "Toys & Games"),
        ("B00JHONN1S", "Clothing, Shoes & Jewelry > Girls"),
        ("B00JHONN1S", "Toys & Games > Dress Up & Pretend Play"),
    ],
    schema={"item": pl.String, "category": pl.String},
    orient="row",
)

EDGES = pl.DataFrame(
    [
        ("0000031852", "B00JHONN1S", "also_bought"),
        ("0000031852", "B002BZX8Z6", "also_bought"),
        ("0000031852", "B002BZX8Z6", "also_viewed"),
        ("0000031852", "B00JHONN1S", "also_viewed"),
        ("0000031852", "B002BZX8Z6", "bought_together"),
        ("0439893577", "0000031852", "also_bought"),
        ("0439893577", "B00004TZY8", "also_bought"),
        ("0439893577", "B0000AQJ9H", "buy_after_viewing"),
        ("B00004TZY8", "0439893577", "also_viewed"),
        ("B00004TZY8", "B0000AQJ9H", "bought_together"),
        ("B002BZX8Z6", "0000031852", "also_bought"),
    ],
    schema={"src": pl.String, "dst": pl.String, "kind": pl.String},
    orient="row",
)


# ---------------------------------------------------------------------------------------------- good input


def test_reviews_gz_give_the_exact_interactions(raw: Path) -> None:
    tables = read(raw)
    assert_frame_equal(tables.interactions, REVIEWS)
    assert tables.explicit is True
    assert tables.given_split is False
    assert tables.dropped == {}
    assert tables.social is None


def test_meta_categories_are_path_qualified_leaves_multi_label(raw: Path) -> None:
    item_category = read(raw).item_category
    assert_frame_equal(item_category, CATEGORIES)
    # two leaves both named "Accessories" under different parents stay distinct labels
    accessories = item_category.filter(pl.col("category").str.ends_with("Accessories"))
    assert accessories["category"].n_unique() == 2


def test_meta_related_lists_become_item_item_with_their_key_as_kind(raw: Path) -> None:
    item_item = read(raw).item_item
    assert_frame_equal(item_item, EDGES)
    assert set(item_item["kind"]) == {"also_bought", "also_viewed", "bought_together", "buy_after_viewing"}


def test_plain_copies_in_the_fixture_folder_read_the_same(raw: Path) -> None:
    plain = read(FIXTURES)  # reviews_*.json (not gz) and meta_*.json; the ratings csv is a later choice
    assert_frame_equal(plain.interactions, REVIEWS)
    assert_frame_equal(plain.item_category, CATEGORIES)
    assert_frame_equal(plain.item_item, EDGES)


def test_a_file_given_as_raw_is_read_and_its_meta_found_by_category(raw: Path) -> None:
    tables = read(raw / f"reviews_{CAT}_5.json.gz")
    assert_frame_equal(tables.interactions, REVIEWS)
    assert_frame_equal(tables.item_category, CATEGORIES)


def test_ratings_csv_has_user_item_rating_timestamp_without_header() -> None:
    tables = read(FIXTURES / f"ratings_{CAT}.csv")
    expected = pl.DataFrame(
        {
            "user": [
                "A1VXOAVRGKGEAK",
                "A8R62G708TSCM",
                "AR29QK6HPFYZ4",
                "A8R62G708TSCM",
                "A3IXDNF6QNCTZF",
                "A2CX7LUOHB2NDG",
            ],
            "item": ["0439893577", "0439893577", "0000031852", "B00004TZY8", "B0000AQJ9H", "0000031852"],
            "rating": [5.0, 4.0, 3.0, 5.0, 4.0, 1.0],
            "ts": [1390953600, 1395964800, 1403481600, 1294704000, 1367884800, 1399334400],
        },
        schema={"user": pl.String, "item": pl.String, "rating": pl.Float32, "ts": pl.Int64},
    )
    assert_frame_equal(tables.interactions, expected)
    assert_frame_equal(tables.item_category, CATEGORIES)  # meta_Toys_and_Games.json beside it


def test_meta_option_points_anywhere_and_without_meta_there_are_no_aux_tables(tmp_path: Path) -> None:
    folder = tmp_path / "only_reviews"
    folder.mkdir()
    gz(FIXTURES / f"reviews_{CAT}_5.json", folder / f"reviews_{CAT}_5.json.gz")
    bare = read(folder)
    assert bare.item_category is None and bare.item_item is None
    meta = gz(FIXTURES / f"meta_{CAT}.json", tmp_path / "elsewhere.json.gz")
    assert_frame_equal(read(folder, meta=meta).item_item, EDGES)


def test_reviews_lacking_an_id_or_rating_are_dropped_and_counted(tmp_path: Path) -> None:
    lines = (
        b'{"reviewerID": "A1", "asin": "0001", "overall": 5.0, "unixReviewTime": 100}\n'
        b'{"reviewerID": "A2", "asin": "0002", "unixReviewTime": 200}\n'
        b'{"asin": "0003", "overall": 4.0, "unixReviewTime": 300}\n'
        b'{"reviewerID": "A3", "asin": "0004", "overall": 3.0}\n'
    )
    tables = read(gz(lines, tmp_path / "reviews_X.json.gz"))
    assert tables.dropped == {"missing_field": 2}
    assert tables.interactions.rows() == [("A1", "0001", 5.0, 100), ("A3", "0004", 3.0, None)]


def test_meta_is_streamed_in_batches(raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amazon2014, "META_BATCH", 2)  # flush every two lines: same tables
    tables = read(raw)
    assert_frame_equal(tables.item_category, CATEGORIES)
    assert_frame_equal(tables.item_item, EDGES)


# ----------------------------------------------------------------------------------------------- bad input


def _meta_with(tmp_path: Path, bad_line: bytes, at: int = 3) -> Path:
    folder = tmp_path / "bad_meta"
    folder.mkdir()
    shutil.copy(FIXTURES / f"reviews_{CAT}_5.json", folder / f"reviews_{CAT}_5.json")
    lines = (FIXTURES / f"meta_{CAT}.json").read_bytes().splitlines(keepends=True)
    lines.insert(at - 1, bad_line + b"\n")
    gz(b"".join(lines), folder / f"meta_{CAT}.json.gz")
    return folder


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"{'asin': 'B01', 'title': 'Girls' Tutu'}", "not a Python-literal dict"),
        (b'{"asin": "B01", "related": null}', "only literals are allowed"),  # strict JSON is not a literal
        (b"__import__('os').system('echo hacked')", "only literals are allowed"),  # never evaluated
        (b"['B01', 'B02']", "expected a dict with an 'asin' string"),
        (b"{'asin': 'B01', 'categories': 'Toys'}", "'categories' must be a list"),
        (b"{'asin': 'B01', 'related': {'also_bought': 'B02'}}", "'also_bought' must be a list of strings"),
    ],
)
def test_a_malformed_meta_line_names_file_and_line(tmp_path: Path, bad_line: bytes, reason: str) -> None:
    folder = _meta_with(tmp_path, bad_line, at=3)
    with pytest.raises(DataFormatError) as err:
        read(folder)
    message = str(err.value)
    assert f"meta_{CAT}.json.gz, line 3:" in message
    assert reason in message
    assert "\n" not in message


def test_garbage_named_like_a_gzip_meta_file_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "garbage"
    folder.mkdir()
    gz(FIXTURES / f"reviews_{CAT}_5.json", folder / f"reviews_{CAT}_5.json.gz")
    (folder / f"meta_{CAT}.json.gz").write_bytes(b"\x1f\x8b\x08\x00garbage after a gzip magic" * 3)
    with pytest.raises(DataFormatError, match=rf"meta_{CAT}\.json\.gz.*corrupt or truncated"):
        read(folder)
    (folder / f"meta_{CAT}.json.gz").write_bytes(bytes(range(256)))  # not gzip at all: binary
    with pytest.raises(DataFormatError, match=rf"meta_{CAT}\.json\.gz, line 1: binary data"):
        read(folder)


def test_a_truncated_gzip_meta_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    folder.mkdir()
    gz(FIXTURES / f"reviews_{CAT}_5.json", folder / f"reviews_{CAT}_5.json.gz")
    whole = gz(FIXTURES / f"meta_{CAT}.json", tmp_path / "whole.gz").read_bytes()
    (folder / f"meta_{CAT}.json.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFormatError, match=rf"meta_{CAT}\.json\.gz.*corrupt or truncated compressed file"):
        read(folder)


def test_reviews_that_are_not_json_lines_name_file_and_line(tmp_path: Path) -> None:
    lines = FIXTURES.joinpath(f"reviews_{CAT}_5.json").read_bytes().splitlines(keepends=True)
    lines.insert(4, b"reviewerID,asin,overall\n")
    path = gz(b"".join(lines), tmp_path / "reviews_X.json.gz")
    with pytest.raises(DataFormatError, match=r"reviews_X\.json\.gz, line 5: not a valid review JSON line"):
        read(path)
    path.write_bytes(bytes(range(256)) * 4)  # binary garbage passed as the reviews file
    with pytest.raises(DataFormatError, match=r"reviews_X\.json\.gz, line 1: not a valid review JSON line"):
        read(path)


def test_a_json_file_of_another_kind_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "reviews_Y.json"
    path.write_text('{"user": "A1", "item": "B1"}\n{"user": "A2", "item": "B2"}\n')
    with pytest.raises(DataFormatError, match=r"reviews_Y\.json: no 'reviewerID' field on any line"):
        read(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "A1,0001,5.0,100\nA2,0002,4.0\n",
            r"ratings_X\.csv, line 2: expected 4 columns separated by ',', found 3",
        ),
        (
            "A1,0001,5.0,100\nA2,0002,4.0,200\nA3,0003,great,300\n",
            r"ratings_X\.csv, line 3: column 'rating' must be a finite number, found 'great'",
        ),
        ("A1,0001,5.0,yesterday\n", r"ratings_X\.csv, line 1: column 'ts' must be .*found 'yesterday'"),
        ("A1,,5.0,100\n", r"ratings_X\.csv, line 1: column 'item' is empty"),
    ],
)
def test_a_bad_ratings_csv_names_file_line_and_value(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "ratings_X.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=expected):
        read(path)


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(RecmtlError, match=r"nowhere: raw folder not found"):
        read(tmp_path / "nowhere")
    with pytest.raises(
        RecmtlError, match=r"no Amazon 2014 reviews_<Cat>\.json\.gz or ratings_<Cat>\.csv found"
    ):
        read(tmp_path)
    (tmp_path / "reviews_X.json").write_text('{"reviewerID": "A", "asin": "B", "overall": 5.0}\n')
    with pytest.raises(RecmtlError, match=r"meta_gone\.json\.gz: Amazon 2014 meta file not found"):
        read(tmp_path, meta=tmp_path / "meta_gone.json.gz")


def test_two_candidate_review_files_must_be_disambiguated(raw: Path) -> None:
    gz(FIXTURES / f"reviews_{CAT}_5.json", raw / f"reviews_{CAT}.json.gz")
    with pytest.raises(RecmtlError, match=r"several files match .*reviews_Toys_and_Games\.json\.gz"):
        read(raw)
