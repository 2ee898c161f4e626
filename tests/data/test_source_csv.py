"""csv reader: layout detection (separator, columns, header), edge files, given splits, id dtypes, errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources import csv as csv_source
from recmtl.errors import ConfigError, DataFormatError, RecmtlError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "csv"


def read(**kw: object) -> RawTables:
    return csv_source.read(PrepareConfig(source="csv", **kw))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- good input


def test_movielens_style_file_with_header_and_all_edge_files() -> None:
    tables = read(
        raw=FIXTURES / "ml-ratings.csv",
        social_file=FIXTURES / "trust.txt",
        category_file=FIXTURES / "genres.csv",
        item_item_file=FIXTURES / "similar.csv",
    )
    expected = pl.DataFrame(
        {
            "user": [1, 1, 1, 2, 2, 3, 3, 4],
            "item": [1, 3, 6, 333, 1, 31, 1, 6],
            "rating": [4.0, 4.0, 4.0, 4.0, 3.0, 0.5, 2.5, 5.0],
            "ts": [
                964982703,
                964981247,
                964982224,
                1445715029,
                1445714835,
                1306463578,
                1306464522,
                986935199,
            ],
        },
        schema={"user": pl.Int64, "item": pl.Int64, "rating": pl.Float32, "ts": pl.Int64},
    )
    assert_frame_equal(tables.interactions, expected)
    assert tables.explicit is True and tables.given_split is False
    assert_frame_equal(tables.social, pl.DataFrame({"src": [1, 2, 3, 4], "dst": [2, 1, 1, 3]}))
    assert_frame_equal(
        tables.item_category,
        pl.DataFrame(
            {
                "item": [1, 1, 3, 6, 333, 31],
                "category": ["Adventure", "Animation", "Comedy", "Action", "Comedy", "Drama"],
            }
        ),
    )
    assert_frame_equal(
        tables.item_item,
        pl.DataFrame(
            {"src": [1, 3, 6], "dst": [3, 1, 333], "kind": ["also_viewed", "also_viewed", "bought_together"]}
        ),
    )


def test_string_ids_without_header_and_default_co_rated_kind() -> None:
    tables = read(
        raw=FIXTURES / "implicit.tsv",
        social_file=FIXTURES / "friends.tsv",
        item_item_file=FIXTURES / "co_rated.tsv",
    )
    assert tables.interactions.schema == pl.Schema({"user": pl.String, "item": pl.String})
    assert tables.interactions.rows() == [
        ("alice", "B000123"),
        ("bob", "B000123"),
        ("alice", "0972683275"),
        ("carol", "B00X"),
    ]  # the first line is data: no row lost to header detection
    assert tables.explicit is False
    assert tables.social.rows() == [("alice", "bob"), ("bob", "carol")]
    assert tables.item_item.rows() == [
        ("B000123", "0972683275", "co_rated"),
        ("0972683275", "B00X", "co_rated"),
    ]


def test_given_split_files_resolved_under_the_raw_folder() -> None:
    tables = read(
        raw=FIXTURES / "split", train_file="train.csv", valid_file="valid.csv", test_file="test.csv"
    )
    assert tables.given_split is True
    expected = pl.DataFrame(
        {
            "user": [10, 10, 11, 12, 10, 11, 11, 12],
            "item": [100, 101, 100, 102, 102, 101, 102, 100],
            "rating": [5.0, 3.0, 4.0, 1.0, 4.0, 2.0, 5.0, 3.0],
            "split": ["train"] * 4 + ["valid"] * 2 + ["test"] * 2,
        },
        schema={"user": pl.Int64, "item": pl.Int64, "rating": pl.Float32, "split": pl.String},
    )
    assert_frame_equal(tables.interactions, expected)


def test_given_split_without_valid_file_and_absolute_paths() -> None:
    tables = read(train_file=FIXTURES / "split" / "train.csv", test_file=FIXTURES / "split" / "test.csv")
    assert tables.interactions["split"].to_list() == ["train"] * 4 + ["test"] * 2


def test_ids_share_one_dtype_across_files(tmp_path: Path) -> None:
    inter = write(tmp_path / "r.csv", "1,10\n2,11\n")
    social = write(tmp_path / "s.csv", "1,guest\n")
    cats = write(tmp_path / "c.csv", "10,007\n11,7\n")
    tables = read(raw=inter, social_file=social, category_file=cats)
    assert tables.interactions["user"].to_list() == ["1", "2"]  # a non-numeric social id: all strings
    assert tables.social["src"].dtype == pl.String
    assert tables.interactions["item"].dtype == pl.Int64
    assert tables.item_category["item"].dtype == pl.Int64
    assert tables.item_category["category"].to_list() == ["007", "7"]  # "007" is not an integer id


def test_leading_zeros_keep_item_ids_strings(tmp_path: Path) -> None:
    tables = read(raw=write(tmp_path / "r.csv", "1,0972683275\n2,10\n"))
    assert tables.interactions["item"].to_list() == ["0972683275", "10"]
    assert tables.interactions["user"].dtype == pl.Int64


@pytest.mark.parametrize(
    ("text", "sep", "rows"),
    [
        ("1;2;4.5\n3;4;1\n", None, [(1, 2, 4.5), (3, 4, 1.0)]),
        ("1 2 4.5\n3 4 1\n", None, [(1, 2, 4.5), (3, 4, 1.0)]),
        ("1\t2\t4.5\n3\t4\t1\n", None, [(1, 2, 4.5), (3, 4, 1.0)]),
        ("1|2|4.5\n3|4|1\n", "|", [(1, 2, 4.5), (3, 4, 1.0)]),
        ("1\t2\t4.5\n", "tab", [(1, 2, 4.5)]),
        ('"1","2","4.5"\r\n"3","4","1"\r\n', None, [(1, 2, 4.5), (3, 4, 1.0)]),
    ],
)
def test_separator_sniffed_or_given(tmp_path: Path, text: str, sep: str | None, rows: list[tuple]) -> None:
    assert read(raw=write(tmp_path / "r.txt", text), sep=sep).interactions.rows() == rows


def test_columns_option_orders_and_skips(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "100,7,x,3\n200,8,y,4\n")
    tables = read(raw=path, columns="ts,user,_,item")
    assert tables.interactions.rows() == [(7, 3, 100), (8, 4, 200)]
    assert tables.interactions.columns == ["user", "item", "ts"]
    assert tables.explicit is False


def test_float_timestamps_are_truncated_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "1,2,5,978300760.9\n\n3,4,1,1e9\n")
    assert read(raw=path).interactions.rows() == [(1, 2, 5.0, 978300760), (3, 4, 1.0, 1000000000)]


@pytest.mark.parametrize(
    ("lines", "roles", "expected"),
    [
        (["user,item,rating", "1,2,3"], ["user", "item", "rating"], True),  # rating is not a number
        (["1,2,3", "4,5,6"], ["user", "item", "rating"], False),
        (["alice,B01,5", "bob,B02,4"], ["user", "item", "rating"], False),  # numeric rating: data
        (["u,i", "1,2"], ["user", "item"], True),  # ids numeric only from line 2
        (["1,2", "3,4"], ["user", "item"], False),
        (["alice,bob", "bob,carol"], ["user", "item"], False),  # string ids: data
        (["userId,movieId", "alice,B01"], ["user", "item"], True),  # names of columns
        (["src,dst", "alice,bob"], ["src", "dst"], True),
        (["item,category", "B01,Toys"], ["item", "category"], True),
        (["B01,Toys", "B02,Games"], ["item", "category"], False),
    ],
)
def test_header_auto_rule(lines: list[str], roles: list[str], expected: bool) -> None:
    assert csv_source.has_header("auto", lines, ",", roles) is expected


def test_header_option_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "user,item\nalice,bob\n")
    assert read(raw=path).interactions.rows() == [("alice", "bob")]
    assert read(raw=path, header="no").interactions.rows() == [("user", "item"), ("alice", "bob")]
    numeric = write(tmp_path / "n.csv", "1,2\n3,4\n")
    assert read(raw=numeric, header="yes").interactions.rows() == [(3, 4)]


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,5\n1,3\n", r"r\.csv, line 2: expected 3 columns separated by ',', found 2"),
        (
            "user,item,rating\n1,2,5\n1,3,x\n",
            r"r\.csv, line 3: column 'rating' must be a finite number, found 'x'",
        ),
        ("1,2,5,100\n1,3,4,noon\n", r"r\.csv, line 2: column 'ts' must be .*found 'noon'"),
        ("1,2,5,100\n1,3,4,\n", r"r\.csv, line 2: column 'ts' is empty"),
        ("1,2\n\n,3\n", r"r\.csv, line 3: column 'user' is empty"),
        ("1,2,5,6,7\n", r"r\.csv, line 1: found 5 columns; pass --columns"),
        ("12\n13\n", r"r\.csv, line 1: cannot tell the separator"),
        ("user,item,rating\n", r"r\.csv: no interactions found"),
        ("", r"r\.csv: file is empty"),
        ("1,2\n\xff\xfe,3\n", r"r\.csv.*not UTF-8"),
    ],
)
def test_a_bad_interactions_file_names_file_line_and_value(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(DataFormatError, match=expected):
        read(raw=path)


def test_binary_and_compressed_files_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "")
    path.write_bytes(bytes(range(256)))
    with pytest.raises(DataFormatError, match=r"r\.csv: binary file, expected delimited text"):
        read(raw=path)
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"x" * 20)
    with pytest.raises(DataFormatError, match=r"r\.csv: file is gzip-compressed"):
        read(raw=path)


def test_bad_edge_files_name_file_and_line(tmp_path: Path) -> None:
    inter = write(tmp_path / "r.csv", "1,2\n3,4\n")
    social = write(tmp_path / "s.csv", "1,3\n3\n")
    with pytest.raises(
        DataFormatError, match=r"s\.csv, line 2: expected 2 columns separated by ',', found 1"
    ):
        read(raw=inter, social_file=social)
    single = write(tmp_path / "one.csv", "1\n")
    with pytest.raises(DataFormatError, match=r"one\.csv, line 1: cannot tell the separator"):
        read(raw=inter, category_file=single)
    pairs = write(tmp_path / "ii.csv", "2,4,also_viewed\n4,,also_viewed\n")
    with pytest.raises(DataFormatError, match=r"ii\.csv, line 2: column 'dst' is empty"):
        read(raw=inter, item_item_file=pairs)


def test_split_files_must_share_their_columns(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "1,2,5\n")
    test = write(tmp_path / "test.csv", "1,3\n")
    with pytest.raises(
        DataFormatError, match=r"test\.csv, line 1: expected 3 columns separated by ',', found 2"
    ):
        read(train_file=train, test_file=test)


def test_missing_files_and_bad_options(tmp_path: Path) -> None:
    inter = write(tmp_path / "r.csv", "1,2\n")
    with pytest.raises(RecmtlError, match=r"gone\.csv: interactions file not found"):
        read(raw=tmp_path / "gone.csv")
    with pytest.raises(RecmtlError, match=r"must be the interactions file, found a folder"):
        read(raw=tmp_path)
    with pytest.raises(RecmtlError, match=r"--raw is required"):
        read()
    with pytest.raises(RecmtlError, match=r"trust\.csv: social file not found"):
        read(raw=inter, social_file=tmp_path / "trust.csv")
    with pytest.raises(RecmtlError, match=r"valid\.csv: valid file not found"):
        read(train_file=inter, valid_file=tmp_path / "valid.csv", test_file=inter)
    with pytest.raises(ConfigError, match=r"--test-file is required"):
        read(train_file=inter)
    with pytest.raises(ConfigError, match=r"either --raw FILE or --train-file"):
        read(raw=inter, train_file=inter, test_file=inter)
    with pytest.raises(ConfigError, match=r"--columns 'user,stars': unknown column 'stars'"):
        read(raw=inter, columns="user,stars")
    with pytest.raises(ConfigError, match=r"--header 'maybe'"):
        read(raw=inter, header="maybe")
    with pytest.raises(ConfigError, match=r"--sep '::'"):
        read(raw=inter, sep="::")
