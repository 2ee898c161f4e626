"""The shared pipeline after the reader, and the atomic prepared-directory store."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.io

from recmtl.config import PrepareConfig
from recmtl.data import pipeline, store
from recmtl.data.recipes import load_recipe
from recmtl.data.schema import RawTables
from recmtl.data.steps import SplitSpec
from recmtl.errors import ConfigError, RecmtlError


def _raw() -> RawTables:
    inter = pl.DataFrame(
        {
            "user": ["u1", "u1", "u1", "u2", "u2", "u3", "u1"],
            "item": ["a", "b", "c", "a", "b", "c", "a"],
            "rating": [5.0, 4.0, 2.0, 5.0, 5.0, 4.0, 3.0],
            "ts": [1, 2, 3, 4, 5, 6, 0],
        },
        schema_overrides={"rating": pl.Float32},
    )
    social = pl.DataFrame({"src": ["u1", "u2", "u1", "zz"], "dst": ["u2", "u1", "u1", "u1"]})
    cats = pl.DataFrame({"item": ["a", "b", "b", "q"], "category": ["x", "y", "x", "z"]})
    ii = pl.DataFrame({"src": ["a", "a", "q"], "dst": ["b", "a", "a"], "kind": ["also_viewed"] * 3})
    return RawTables(
        inter, social=social, item_category=cats, item_item=ii, explicit=True, dropped={"bad": 1}
    )


def test_process_applies_every_step_and_restricts_aux():
    tables, dropped = pipeline.process(_raw(), PrepareConfig(seed=0), SplitSpec.parse("random:0.8,0.1,0.1"))
    # explicit ratings -> default threshold 4 drops (u1,c,2.0) and the older (u1,a,3.0): no duplicates left
    assert dropped == {"bad": 1, "below_min_rating": 2, "duplicates": 0, "k_core": 0}
    assert tables["users"]["raw_id"].to_list() == ["u1", "u2", "u3"]
    assert tables["items"]["raw_id"].to_list() == ["a", "b", "c"]
    all_pairs = pl.concat([tables[s] for s in ("train", "valid", "test")]).sort("user_id", "item_id")
    assert all_pairs.select("user_id", "item_id").rows() == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)]
    # social: unknown user zz and the self-loop dropped, ids dense
    assert tables["social"].rows() == [(0, 1), (1, 0)]
    # categories: item q is not kept, so category z disappears from the vocab
    assert tables["categories"].rows() == [(0, "x"), (1, "y")]
    assert tables["item_category"].rows() == [(0, 0), (1, 0), (1, 1)]
    assert tables["item_item"].rows() == [(0, 1, "also_viewed")]


def test_symmetric_social_and_aux_selection():
    cfg = PrepareConfig(symmetric_social=True, aux=("social",), min_rating=0.0)
    raw = _raw()
    raw.social = pl.DataFrame({"src": ["u1"], "dst": ["u3"]})
    tables, _ = pipeline.process(raw, cfg, SplitSpec.parse("random"))
    assert tables["social"].rows() == [(0, 2), (2, 0)]
    assert "item_category" not in tables and "item_item" not in tables


def test_requested_aux_missing_from_source_is_an_error():
    raw = _raw()
    raw.social = None
    with pytest.raises(ConfigError, match="aux table 'social' requested but source"):
        pipeline.process(raw, PrepareConfig(aux=("social",)), SplitSpec.parse("random"))


def test_empty_after_filtering_is_one_line_error():
    with pytest.raises(RecmtlError, match="no interactions left after --k-core 50"):
        pipeline.process(_raw(), PrepareConfig(k_core=50), SplitSpec.parse("random"))
    with pytest.raises(RecmtlError, match="no interactions left after --min-rating 6"):
        pipeline.process(_raw(), PrepareConfig(min_rating=6.0), SplitSpec.parse("random"))


def _mat_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    rng = np.random.default_rng(0)
    users = rng.integers(1, 40, 600)
    items = rng.integers(1, 80, 600)
    rating = np.stack([users, items, items % 5 + 1, rng.integers(1, 6, 600), np.ones(600, int)], 1)
    scipy.io.savemat(folder / "rating.mat", {"rating": rating})
    scipy.io.savemat(folder / "trustnetwork.mat", {"trustnetwork": rng.integers(1, 40, (100, 2))})
    return folder


def test_prepare_writes_contract_and_verifies_hashes(tmp_path):
    out = tmp_path / "ds"
    manifest = pipeline.prepare(PrepareConfig(source="tang", raw=_mat_folder(tmp_path), min_rating=1.0), out)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert set(manifest["tables"]) == {
        "users",
        "items",
        "train",
        "valid",
        "test",
        "social",
        "item_category",
        "categories",
    }
    for name, digest in manifest["tables"].items():
        assert store.sha256_file(out / f"{name}.parquet") == digest
    assert manifest["options"]["source"] == "tang" and manifest["options"]["min_rating"] == 1.0
    ds = store.open_dataset(out)
    assert ds.n_users == manifest["counts"]["users"]
    assert len(ds.data_hash) == 64
    # tamper with a table: verification names it
    pl.DataFrame({"user_id": [0], "item_id": [0]}).write_parquet(out / "test.parquet")
    with pytest.raises(RecmtlError, match=r"test\.parquet: sha256 does not match"):
        store.open_dataset(out)
    assert store.open_dataset(out, verify=False).n_users == ds.n_users


def test_prepare_refuses_existing_output_unless_overwrite(tmp_path):
    raw = _mat_folder(tmp_path)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    cfg = PrepareConfig(source="tang", raw=raw, min_rating=1.0)
    with pytest.raises(RecmtlError, match="output directory exists"):
        pipeline.prepare(cfg, out)
    assert (out / "keep.txt").read_text() == "precious"
    # a directory recmtl did not write is never replaced, not even with --overwrite
    with pytest.raises(RecmtlError, match="not a recmtl prepare output"):
        pipeline.prepare(cfg, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "precious"
    # an earlier prepare output is
    (out / "keep.txt").unlink()
    pipeline.prepare(cfg, out, overwrite=True)
    (out / "marker").write_text("old output")
    with pytest.raises(RecmtlError, match="output directory exists"):
        pipeline.prepare(cfg, out)
    pipeline.prepare(cfg, out, overwrite=True)
    assert not (out / "marker").exists() and (out / "manifest.json").exists()


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_or_interrupted_write_leaves_nothing(tmp_path, monkeypatch, exc):
    raw = _mat_folder(tmp_path)
    out = tmp_path / "ds"
    calls = []

    def failing_write(frame, path, schema):
        calls.append(path)
        if len(calls) == 3:
            raise exc
        return real_write(frame, path, schema)

    real_write = store.write_table
    monkeypatch.setattr(pipeline, "write_table", failing_write)
    with pytest.raises(type(exc)):
        pipeline.prepare(PrepareConfig(source="tang", raw=raw, min_rating=1.0), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no out, no temporary sibling


def test_failed_overwrite_keeps_the_old_directory(tmp_path, monkeypatch):
    raw = _mat_folder(tmp_path)
    out = tmp_path / "ds"
    cfg = PrepareConfig(source="tang", raw=raw, min_rating=1.0)
    first = pipeline.prepare(cfg, out)
    monkeypatch.setattr(pipeline, "write_table", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        pipeline.prepare(cfg, out, overwrite=True)
    assert store.open_dataset(out).manifest == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "raw"]


def test_read_manifest_rejects_non_prepare_directories(tmp_path):
    with pytest.raises(RecmtlError, match="not a directory"):
        store.read_manifest(tmp_path / "missing")
    with pytest.raises(RecmtlError, match="no manifest.json"):
        store.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RecmtlError, match="not valid JSON"):
        store.read_manifest(tmp_path)


def test_recipe_with_unknown_source_or_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[prepare]\nsource = "movielens"\n')
    with pytest.raises(ConfigError, match="unknown source 'movielens'"):
        pipeline.prepare(load_recipe(bad).config(), tmp_path / "out")
    bad.write_text('[prepare]\nsorce = "tang"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'sorce'"):
        load_recipe(bad)
    bad.write_text('[prepare]\nk_core = "five"\n')
    with pytest.raises(ConfigError, match="k_core: expected an integer, got 'five'"):
        load_recipe(bad)
    bad.write_text("[prepare\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)


def test_all_recipes_load():
    from tests.conftest import ROOT

    names = sorted(p.stem for p in (ROOT / "datasets").glob("*.toml"))
    assert names == [
        "amazon-office", "amazon-videogames", "ciao", "epinions", "lastfm",
        "synthetic", "synthetic-noisy-social",
    ]  # fmt: skip
    for name in names:
        load_recipe(ROOT / "datasets" / f"{name}.toml").config()


@pytest.mark.parametrize("name", ["synthetic", "synthetic-noisy-social"])
def test_synthetic_recipe_gives_its_documented_counts(tmp_path, name):
    from tests.conftest import ROOT

    recipe = load_recipe(ROOT / "datasets" / f"{name}.toml")
    manifest = pipeline.prepare(recipe.config(), tmp_path / name)
    assert recipe.expected
    for key, expected in recipe.expected.items():
        assert manifest["counts"][key] == expected, key
