"""`recmtl prepare` / `recmtl info` through Typer's CliRunner: exit codes and one-line errors."""

import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from cli.main import app
from tests.cli.conftest import assert_one_line_error

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def tang_folder(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rating = np.stack(
        [
            rng.integers(1, 30, 400),
            rng.integers(1, 50, 400),
            rng.integers(1, 5, 400),
            rng.integers(1, 6, 400),
        ],
        1,
    )
    scipy.io.savemat(folder / "rating.mat", {"rating": rating})
    scipy.io.savemat(folder / "trustnetwork.mat", {"trustnetwork": rng.integers(1, 30, (60, 2))})
    return folder


def test_prepare_and_info_roundtrip(tang_folder, tmp_path):
    out = tmp_path / "ds"
    result = run(
        "prepare", "--source", "tang", "--raw", tang_folder, "--out", out, "--min-rating", 1, "--k-core", 2
    )
    assert result.exit_code == 0, result.output
    assert "users" in result.stdout and "wrote" in result.stdout
    info = run("info", out)
    assert info.exit_code == 0 and "social out-degree" in info.stdout


def test_missing_raw_folder(tmp_path):
    result = run("prepare", "--source", "tang", "--raw", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert_one_line_error(result, "nowhere", "raw folder not found")
    assert not (tmp_path / "o").exists()


def test_unknown_source(tmp_path):
    assert_one_line_error(
        run("prepare", "--source", "movielens", "--out", tmp_path / "o"), "unknown source 'movielens'"
    )


def test_recipe_naming_unknown_source(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[prepare]\nsource = "netflix"\n')
    assert_one_line_error(
        run("prepare", "--recipe", recipe, "--out", tmp_path / "o"), "unknown source 'netflix'"
    )


def test_existing_output_refused_without_overwrite(tang_folder, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    result = run("prepare", "--source", "tang", "--raw", tang_folder, "--out", out)
    assert_one_line_error(result, str(out), "--overwrite")


def test_file_of_another_format(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "rating.mat").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert_one_line_error(
        run("prepare", "--source", "tang", "--raw", folder, "--out", tmp_path / "o"), "rating.mat"
    )
    assert not (tmp_path / "o").exists()


def test_empty_after_filtering(tang_folder, tmp_path):
    result = run(
        "prepare", "--source", "tang", "--raw", tang_folder, "--out", tmp_path / "o", "--k-core", 1000
    )
    assert_one_line_error(result, "no interactions left after --k-core 1000")
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_bad_split_option(tmp_path):
    assert_one_line_error(run("prepare", "--split", "random:1,2", "--out", tmp_path / "o"), "--split")


def test_info_on_a_non_prepare_directory(tmp_path):
    assert_one_line_error(run("info", tmp_path), "no manifest.json")


def test_help_explains_the_steps():
    result = run("prepare", "--help")
    assert result.exit_code == 0
    assert "k-core" in result.stdout and "--recipe" in result.stdout
