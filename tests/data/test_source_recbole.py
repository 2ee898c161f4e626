"""recbole reader: .inter / .item / .net atomic files, benchmark splits, id dtypes and bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recmtl.config import PrepareConfig
from recmtl.data.schema import RawTables
from recmtl.data.sources import recbole
from recmtl.errors import DataFormatError, RecmtlError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "recbole"


def read(raw: Path) -> RawTables:
    return recbole.read(PrepareConfig(source="recbole", raw=raw))


def write(path: Path, *rows: str) -> Path:
    """A tab-separated atomic file from rows given with ``|`` for tab."""
    path.write_text("".join(row.replace("|", "\t") + "\n" for row in rows))
    return path


@pytest.fixture
def ml(tmp_path: Path) -> Path:
    """A writable copy of the ml-mini fixture folder."""
    return Path(shutil.copytree(FIXTURES / "ml-mini", tmp_path / "ml-mini"))


# ---------------------------------------------------------------------------------------------- good input


def test_ml_mini_interactions_are_exact_with_int_ids() -> None:
    tables = read(FIXTURES / "ml-mini")
    expected = pl.DataFrame(
        {
            "user": [196, 186, 22, 244, 166, 298, 115, 253, 305, 6],
            "item": [242, 302, 377, 51, 346, 474, 265, 465, 451, 86],
            "rating": [3.0, 3.0, 1.0, 2.0, 1.0, 4.0, 2.0, 5.0, 3.0, 3.0],
            "ts": [
                881250949,
                891717742,
                878887116,
                880606923,
                886397596,
                884182806,
                881171488,
                891628467,
                886324817,
                883603013,
            ],
        },
        schema={"user": pl.Int64, "item": pl.Int64, "rating": pl.Float32, "ts": pl.Int64},
    )
    assert_frame_equal(tables.interactions, expected)
    assert tables.explicit is True and tables.given_split is False and tables.item_item is None


def test_net_file_is_the_social_table() -> None:
    expected = pl.DataFrame(
        {"src": [196, 186, 22, 298], "dst": [186, 196, 244, 6]}, schema={"src": pl.Int64, "dst": pl.Int64}
    )
    assert_frame_equal(read(FIXTURES / "ml-mini").social, expected)


def test_item_file_class_token_seq_gives_one_label_per_token() -> None:
    item_category = read(FIXTURES / "ml-mini").item_category
    assert item_category.schema == pl.Schema({"item": pl.Int64, "category": pl.String})
    assert item_category.filter(pl.col("item") == 302)["category"].to_list() == [
        "Crime",
        "Film-Noir",
        "Mystery",
        "Thriller",
    ]
    assert item_category.height == 1 + 4 + 2 + 4 + 2 + 2 + 3  # tokens per line of ml-mini.item
    # movie_title is a token_seq too, but the class field wins: no title words as labels
    assert "Kolya" not in item_category["category"] and "Confidential" not in item_category["category"]


def test_the_inter_file_itself_can_be_given() -> None:
    by_folder, by_file = read(FIXTURES / "ml-mini"), read(FIXTURES / "ml-mini" / "ml-mini.inter")
    assert_frame_equal(by_file.interactions, by_folder.interactions)
    assert_frame_equal(by_file.social, by_folder.social)


def test_string_ids_are_kept_and_fields_are_found_by_name() -> None:
    tables = read(FIXTURES / "amazon-mini")  # header lists item_id before user_id; no timestamp
    expected = pl.DataFrame(
        {
            "user": ["A1VXOAVRGKGEAK", "A8R62G708TSCM", "AR29QK6HPFYZ4", "A8R62G708TSCM", "A21KH420DK0ICA"],
            "item": ["0439893577", "0439893577", "0000031852", "B00004TZY8", "B00004TZY8"],
            "rating": [5.0, 4.0, 3.0, 5.0, 1.0],
        },
        schema={"user": pl.String, "item": pl.String, "rating": pl.Float32},
    )
    assert_frame_equal(tables.interactions, expected)
    assert tables.social is None


def test_categories_token_seq_field_and_empty_values() -> None:
    expected = pl.DataFrame(
        [
            ("0439893577", "Toys"),
            ("0439893577", "Learning"),
            ("0439893577", "Boards"),
            ("0000031852", "Clothing"),
            ("0000031852", "Girls"),
            ("B00004TZY8", "Toys"),
        ],
        schema={"item": pl.String, "category": pl.String},
        orient="row",
    )
    assert_frame_equal(read(FIXTURES / "amazon-mini").item_category, expected)  # B002BZX8Z6: no labels


def test_benchmark_files_are_a_given_split_with_float_timestamps_truncated() -> None:
    tables = read(FIXTURES / "bench")
    assert tables.given_split is True and tables.explicit is False
    frame = tables.interactions
    assert frame.columns == ["user", "item", "ts", "split"]
    assert frame["split"].to_list() == ["train"] * 5 + ["valid"] * 2 + ["test"] * 2
    assert frame.filter(pl.col("split") == "test").rows() == [
        (1, 3408, 978300275, "test"),
        (3, 1210, 978297039, "test"),
    ]
    assert frame["ts"].dtype == pl.Int64


def test_benchmark_without_valid_file(tmp_path: Path) -> None:
    for split in ("train", "test"):
        shutil.copy(FIXTURES / "bench" / f"bench.{split}.inter", tmp_path)
    frame = read(tmp_path).interactions
    assert set(frame["split"]) == {"train", "test"}
    assert frame.height == 7


def test_one_non_numeric_user_id_in_net_makes_all_user_ids_strings(ml: Path) -> None:
    write(ml / "ml-mini.net", "source_id:token|target_id:token", "196|u_guest")
    tables = read(ml)
    assert tables.interactions["user"].dtype == pl.String
    assert tables.social.rows() == [("196", "u_guest")]
    assert tables.interactions["item"].dtype == pl.Int64  # item ids unaffected


def test_leading_zero_item_id_in_item_file_makes_item_ids_strings(ml: Path) -> None:
    write(ml / "ml-mini.item", "item_id:token|genre:token_seq", "0242|Comedy")
    tables = read(ml)
    assert tables.interactions["item"].dtype == pl.String
    assert tables.interactions["item"][0] == "242"
    assert tables.item_category.rows() == [("0242", "Comedy")]


def test_lastfm_style_fields_fall_back_to_token_fields(tmp_path: Path) -> None:
    write(tmp_path / "lastfm.inter", "user_id:token|artist_id:token|weight:float", "2|51|13883", "2|52|11690")
    write(tmp_path / "lastfm.item", "artist_id:token|name:token")
    tables = read(tmp_path)
    assert tables.interactions.rows() == [(2, 51), (2, 52)]
    assert tables.item_category is None  # .item without a category field
    assert tables.explicit is False


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (("user_id|item_id:token", "1|2"), r"x\.inter, line 1: header column 'user_id' is not field:type"),
        (("user_id:token|item_id:string", "1|2"), r"x\.inter, line 1: header column 'item_id:string'"),
        (
            ("user_id:token,item_id:token", "1,2"),
            r"x\.inter, line 1: header column 'user_id:token,item_id:token'",
        ),
        (("user_id:token|user_id:token", "1|2"), r"x\.inter, line 1: field 'user_id' appears twice"),
        (("uid:float|iid:float", "1|2"), r"x\.inter, line 1: no user_id field"),
        (
            ("user_id:token|item_id:token|rating:float", "1|2|3", "1|3"),
            r"x\.inter, line 3: expected 3 columns separated by '\\t', found 2",
        ),
        (
            ("user_id:token|item_id:token|rating:float", "1|2|3", "1|3|good"),
            r"x\.inter, line 3: column 'rating' must be a finite number, found 'good'",
        ),
        (
            ("user_id:token|item_id:token|timestamp:float", "1|2|3", "1|3|May 5"),
            r"x\.inter, line 3: column 'ts' must be .*found 'May 5'",
        ),
        (("user_id:token|item_id:token", "1|2", "|3"), r"x\.inter, line 3: column 'user' is empty"),
        (("user_id:token|item_id:token",), r"x\.inter: no interactions found"),
    ],
)
def test_a_bad_inter_file_names_file_and_line(tmp_path: Path, rows: tuple[str, ...], expected: str) -> None:
    write(tmp_path / "x.inter", *rows)
    with pytest.raises(DataFormatError, match=expected):
        read(tmp_path)


def test_a_bad_net_or_item_file_names_file_and_line(ml: Path) -> None:
    write(ml / "ml-mini.net", "source_id:token|target_id:token", "196|186|7")
    with pytest.raises(DataFormatError, match=r"ml-mini\.net, line 2: expected 2 columns"):
        read(ml)
    (ml / "ml-mini.net").unlink()
    write(ml / "ml-mini.item", "item_id:token|genre:token_seq", "242|Comedy", "|Drama")
    with pytest.raises(DataFormatError, match=r"ml-mini\.item, line 3: column 'item' is empty"):
        read(ml)


def test_binary_or_empty_files_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_bytes(bytes(range(256)))
    with pytest.raises(DataFormatError, match=r"x\.inter: binary file"):
        read(tmp_path)
    (tmp_path / "x.inter").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"x\.inter: file is empty"):
        read(tmp_path)


def test_missing_or_ambiguous_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(RecmtlError, match=r"nowhere: raw folder not found"):
        read(tmp_path / "nowhere")
    with pytest.raises(RecmtlError, match=r"no <name>\.inter file"):
        read(tmp_path)
    shutil.copy(FIXTURES / "bench" / "bench.train.inter", tmp_path)
    with pytest.raises(RecmtlError, match=r"bench\.test\.inter: RecBole test file not found"):
        read(tmp_path)
    write(tmp_path / "a.inter", "user_id:token|item_id:token", "1|2")
    write(tmp_path / "b.inter", "user_id:token|item_id:token", "1|2")
    with pytest.raises(RecmtlError, match=r"several \.inter files \(a\.inter, b\.inter\)"):
        read(tmp_path)
