"""Tang (.mat) and Last.fm readers, on the real data in ../shared/data and on small bad inputs."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.io

from recmtl.config import PrepareConfig
from recmtl.data.pipeline import prepare
from recmtl.data.recipes import load_recipe
from recmtl.data.sources import lastfm, tang
from recmtl.data.store import open_dataset
from recmtl.errors import DataFormatError, RecmtlError
from tests.conftest import ROOT


def _prepare_recipe(name: str, raw: Path, out: Path) -> dict:
    recipe = load_recipe(ROOT / "datasets" / f"{name}.toml")
    manifest = prepare(recipe.config({"raw": raw}), out)
    for key, expected in recipe.expected.items():
        assert manifest["counts"][key] == expected, key
    assert recipe.expected, "the recipe documents its expected counts"
    return manifest


def test_ciao_recipe_counts_and_contract(ciao_raw, tmp_path):
    manifest = _prepare_recipe("ciao", ciao_raw, tmp_path / "ciao")
    assert manifest["dropped"]["rating_zero"] == 34
    assert manifest["counts"]["interactions"] == sum(
        manifest["counts"][s] for s in ("train", "valid", "test")
    )
    ds = open_dataset(tmp_path / "ciao")
    train = ds.table("train")
    assert train.schema == pl.Schema({"user_id": pl.Int32, "item_id": pl.Int32, "rating": pl.Float32})
    assert train["user_id"].max() < ds.n_users and train["item_id"].max() < ds.n_items
    # every user keeps at least one training interaction
    assert train["user_id"].n_unique() == ds.n_users
    social = ds.table("social")
    assert (social["src"] != social["dst"]).all()
    assert set(ds.manifest["tables"]) == {
        "users",
        "items",
        "train",
        "valid",
        "test",
        "social",
        "item_category",
        "categories",
    }


def test_lastfm_recipe_counts(lastfm_raw, tmp_path):
    manifest = _prepare_recipe("lastfm", lastfm_raw, tmp_path / "lastfm")
    ds = open_dataset(tmp_path / "lastfm")
    names = ds.table("categories")["name"].to_list()
    assert "rock" in names  # tag values, decoded from latin-1
    # friendships are listed in both directions in the raw file and kept as given
    social = ds.table("social")
    assert social.join(social.rename({"src": "dst", "dst": "src"}), on=["src", "dst"]).height == social.height
    assert manifest["stats"]["social_out_degree"]["users_with_links"] > 1800


def _write_mat(path: Path, **arrays):
    scipy.io.savemat(path, arrays)
    return path


def test_tang_reader_modal_category_zero_ratings_and_timestamp(tmp_path):
    rating = np.array(
        [[1, 10, 2, 5, 1, 100], [2, 10, 2, 4, 1, 50], [3, 10, 7, 3, 1, 70], [1, 11, 4, 0, 1, 60]],
        dtype=np.uint16,
    )
    _write_mat(tmp_path / "rating_with_timestamp.mat", rating_with_timestamp=rating)
    _write_mat(tmp_path / "trust.mat", trust=np.array([[1, 2], [2, 3]], dtype=np.int32))
    raw = tang.read(PrepareConfig(source="tang", raw=tmp_path))
    assert raw.dropped == {"rating_zero": 1}
    assert raw.interactions.columns == ["user", "item", "rating", "ts"]
    assert raw.interactions["ts"].to_list() == [100, 50, 70]
    assert raw.item_category.rows() == [(10, 2)]  # modal category of item 10; item 11 only had rating 0
    assert raw.social.rows() == [(1, 2), (2, 3)]


def test_tang_four_column_copy(tmp_path):
    _write_mat(tmp_path / "rating.mat", rating=np.array([[1, 1, 1, 4], [2, 1, 1, 5]]))
    raw = tang.read(PrepareConfig(source="tang", raw=tmp_path))
    assert raw.interactions.columns == ["user", "item", "rating"] and raw.social is None


def test_tang_missing_folder_and_file(tmp_path):
    with pytest.raises(RecmtlError, match="raw folder not found"):
        tang.read(PrepareConfig(source="tang", raw=tmp_path / "nope"))
    with pytest.raises(RecmtlError, match=r"no rating \.mat file found"):
        tang.read(PrepareConfig(source="tang", raw=tmp_path))


def test_tang_wrong_key(tmp_path):
    _write_mat(tmp_path / "rating.mat", rating=np.ones((3, 5)))
    with pytest.raises(DataFormatError, match=r"rating\.mat: no key 'ratings' \(keys: rating\)"):
        tang.read(PrepareConfig(source="tang", raw=tmp_path, mat_key="ratings"))


def test_tang_too_few_columns(tmp_path):
    _write_mat(tmp_path / "rating.mat", rating=np.ones((3, 2)))
    with pytest.raises(DataFormatError, match="2 columns, expected at least 4"):
        tang.read(PrepareConfig(source="tang", raw=tmp_path))


def test_tang_truncated_and_foreign_files(tmp_path):
    rng = np.random.default_rng(0)
    _write_mat(tmp_path / "rating.mat", rating=rng.integers(1, 100, (200, 4)))
    data = (tmp_path / "rating.mat").read_bytes()
    (tmp_path / "rating.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="rating.mat: not a readable MATLAB"):
        tang.read(PrepareConfig(source="tang", raw=tmp_path))
    (tmp_path / "rating.mat").write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(DataFormatError, match="rating.mat: not a readable MATLAB"):
        tang.read(PrepareConfig(source="tang", raw=tmp_path))


def _lastfm_folder(tmp_path: Path, plays: str) -> Path:
    (tmp_path / "user_artists.dat").write_text(plays)
    return tmp_path


def test_lastfm_wrong_column_count_names_line(tmp_path):
    folder = _lastfm_folder(tmp_path, "userID\tartistID\tweight\n2\t51\t13883\n2\t52\n")
    with pytest.raises(DataFormatError, match=r"user_artists\.dat, line 3: expected 3 columns"):
        lastfm.read(PrepareConfig(source="lastfm-hetrec", raw=folder))


def test_lastfm_non_numeric_id_names_line_and_value(tmp_path):
    folder = _lastfm_folder(tmp_path, "userID\tartistID\tweight\n2\t51\t13883\nbob\t52\t3\n")
    with pytest.raises(
        DataFormatError,
        match=r"user_artists\.dat, line 3: column 'userID' must be a whole number, found 'bob'",
    ):
        lastfm.read(PrepareConfig(source="lastfm-hetrec", raw=folder))


def test_lastfm_wrong_header(tmp_path):
    folder = _lastfm_folder(tmp_path, "user\tartist\tplays\n2\t51\t13883\n")
    with pytest.raises(DataFormatError, match="line 1: expected the header columns userID artistID weight"):
        lastfm.read(PrepareConfig(source="lastfm-hetrec", raw=folder))


def test_lastfm_top_k_tags(tmp_path):
    folder = _lastfm_folder(tmp_path, "userID\tartistID\tweight\n2\t51\t10\n3\t51\t5\n")
    (folder / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t51\t7\t1\t1\t2009\n3\t51\t7\t1\t1\t2009\n3\t51\t9\t1\t1\t2009\n"
    )
    (folder / "tags.dat").write_bytes("tagID\ttagValue\n7\tm\xfcsica\n9\tjazz\n".encode("latin-1"))
    raw = lastfm.read(PrepareConfig(source="lastfm-hetrec", raw=folder))
    assert raw.item_category.rows() == [(51, "m\u00fcsica")]
    raw2 = lastfm.read(PrepareConfig(source="lastfm-hetrec", raw=folder, category_top_k=2))
    assert sorted(raw2.item_category.rows()) == [(51, "jazz"), (51, "m\u00fcsica")]
    assert not raw.explicit and raw.interactions["rating"].to_list() == [10.0, 5.0]
