"""`recmtl train --encoder stem` and its options through Typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from recmtl.runs import load_tensors
from tests.cli.conftest import QUICK, assert_one_line_error
from tests.train.conftest import prepare_tiny

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("cli-data") / "tiny", aux=("social",))


def test_train_and_evaluate_with_stem_flags(data, tmp_path):
    result = run("train", data, "--runs-dir", tmp_path, "--name", "r", *QUICK, "--aux", "social",
                 "--epochs", 1, "--encoder", "stem", "--stem-asymmetric", "--method", "ew")  # fmt: skip
    assert result.exit_code == 0, (result.output, result.stderr)
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert config["encoder"] == "stem" and config["stem_asymmetric"] is True
    assert config["stem_no_stopgrad"] is False and config["stem_no_shared"] is False
    tensors, _ = load_tensors(tmp_path / "r" / "best.safetensors")
    assert tensors["private.gate.social.user.W"].shape == (2, 16)  # asymmetric: own + shared
    evaluated = run("evaluate", tmp_path / "r", "--device", "cpu", "--json")
    assert evaluated.exit_code == 0, (evaluated.output, evaluated.stderr)
    assert json.loads(evaluated.stdout)["metrics"]["ndcg@20"] > 0


def test_stem_options_from_a_config_file_and_the_flags_over_it(data, tmp_path):
    (tmp_path / "run.toml").write_text('encoder = "stem"\nstem_no_shared = true\naux = ["social"]\n')
    result = run("train", data, "--runs-dir", tmp_path, "--name", "r", *QUICK, "--epochs", 1,
                 "--config", tmp_path / "run.toml", "--stem-no-stopgrad")  # fmt: skip
    assert result.exit_code == 0, (result.output, result.stderr)
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (config["stem_no_shared"], config["stem_no_stopgrad"], config["stem_asymmetric"]) == (
        True,
        True,
        False,
    )


def test_stem_flag_without_stem_is_one_line(data, tmp_path):
    result = run("train", data, "--runs-dir", tmp_path, *QUICK, "--stem-no-shared")
    assert_one_line_error(result, "--stem-no-shared needs --encoder stem")


def test_help_lists_the_encoder_options():
    result = run("train", "--help")
    for flag in ("--encoder", "--stem-asymmetric", "--stem-no-stopgrad", "--stem-no-shared", "--stem-dim"):
        assert flag in result.output
