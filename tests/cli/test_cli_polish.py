"""Issue 7: runs that travel, default names, error wording, up-front option checks, help texts, make help."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tomllib

import pytest
import torch
from typer.testing import CliRunner

import tests.conftest
from cli.main import app
from recmtl.eval.metrics import METRICS
from recmtl.train.config import METRIC_NAMES
from recmtl.train.loop import fit
from tests.cli.conftest import QUICK
from tests.cli.conftest import assert_one_line_error as one_line_error
from tests.conftest import ROOT
from tests.train.conftest import assert_same_tensors, metrics_without_wall, prepare_tiny, quick_config

runner = CliRunner()


def assert_one_line_error(result, *fragments):
    """The shared check, stricter here: nothing at all on stdout before the error."""
    one_line_error(result, *fragments, empty_stdout=True)


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("polish-data") / "tiny")


# --------------------------------------------------------------------------------------------------
# 1. runs that travel


def test_run_records_absolute_data_path_and_evaluates_elsewhere(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    there.mkdir()
    prepare_tiny(here / "data" / "tiny")
    monkeypatch.chdir(here)
    result = run("train", "data/tiny", "--runs-dir", "runs", "--name", "r", "--epochs", 1, *QUICK)
    assert result.exit_code == 0, result.stderr
    run_dir = (here / "runs" / "r").resolve()
    saved = json.loads((run_dir / "config.json").read_text())
    absolute = str((here / "data" / "tiny").resolve())
    assert saved["config"]["data"] == absolute and saved["data"]["path"] == absolute

    monkeypatch.chdir(there)  # the relative path would now point nowhere
    result = run("evaluate", run_dir, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr

    moved = there / "moved"
    shutil.move(here / "data" / "tiny", moved)
    assert_one_line_error(
        run("evaluate", run_dir, "--device", "cpu"), absolute, f"{run_dir / 'config.json'}", "--data"
    )
    (run_dir / "metrics.json").unlink()
    result = run("evaluate", run_dir, "--device", "cpu", "--json", "--data", moved)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((run_dir / "metrics.json").read_text())

    other = prepare_tiny(there / "other", seed=1)  # a valid dataset, but not the run's
    result = run("evaluate", run_dir, "--device", "cpu", "--data", other)
    assert_one_line_error(result, f"--data {other}", "hash differs")


# --------------------------------------------------------------------------------------------------
# 2. prepare's default output directory

SMALL = (
    '[prepare]\nsource = "synthetic"\nmin_rating = 0.0\n{extra}\n'
    "[prepare.synthetic]\nusers = 80\nitems = 60\ninteractions = 1200\n"
)


def test_prepare_without_out_writes_data_recipe_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "small.toml").write_text(SMALL.format(extra=""))
    (tmp_path / "recipes" / "named.toml").write_text(SMALL.format(extra='name = "fancy"'))
    assert run("prepare", "--recipe", "recipes/small.toml", "--quiet").exit_code == 0
    assert json.loads((tmp_path / "data" / "small" / "manifest.json").read_text())["name"] == "small"
    assert run("prepare", "--recipe", "recipes/named.toml", "--quiet").exit_code == 0
    assert json.loads((tmp_path / "data" / "fancy" / "manifest.json").read_text())["name"] == "fancy"
    result = run("prepare", "--recipe", "recipes/small.toml", "--out", "elsewhere", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "elsewhere" / "manifest.json").read_text())["name"] == "elsewhere"
    sizes = ("--users", 80, "--items", 60, "--interactions", 1200, "--min-rating", 0)
    assert run("prepare", *sizes, "--quiet").exit_code == 0
    assert (tmp_path / "data" / "synthetic" / "manifest.json").is_file()


def test_makefile_passes_out_to_every_prepare():
    lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if "recmtl prepare" in line]
    assert lines and all("--out " in line for line in lines), lines


# --------------------------------------------------------------------------------------------------
# 3. real-data tests and their environment variable


def test_missing_real_dataset_skip_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(tests.conftest, "SHARED_DATA", tmp_path / "nowhere")
    with pytest.raises(pytest.skip.Exception, match="RECMTL_SHARED_DATA"):
        tests.conftest.shared_dataset("ciao")


def test_readme_documents_the_data_variables():
    readme = (ROOT / "README.md").read_text()
    assert "RECMTL_SHARED_DATA" in readme and "CIAO_RAW" in readme


# --------------------------------------------------------------------------------------------------
# 4, 5. error wording, options checked before any work


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (("--method", "nonsense"), ("error: --method nonsense: unknown method", "known: single, ew, pmtrec")),
        (("--mode", "rows"), ("--mode rows: expected row or global",)),
        (("--init", "zeros"), ("--init zeros: expected normal or xavier",)),
        (("--device", "tpu"), ("--device tpu: expected auto, cpu or cuda",)),
        (("--select-metric", "bogus@20"), ("--select-metric 'bogus@20'", "unknown metric 'bogus'", "ndcg")),
        (("--lr", "inf"), ("--lr inf", "finite")),
        (("--lr", "nan"), ("--lr nan",)),
        (("--init-std", "inf"), ("--init-std inf", "finite")),
        (("--aux", "social,social"), ("--aux", "listed twice")),
    ],
)
def test_bad_options_are_refused_before_any_work(data, tmp_path, flags, fragments):
    result = run("train", data, "--runs-dir", tmp_path / "runs", *QUICK, *flags)
    assert_one_line_error(result, *fragments)
    assert "out of range" not in result.stderr or flags[0] in ("--lr", "--init-std")
    assert not (tmp_path / "runs").exists()


def test_device_cuda_without_cuda(data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run("train", data, "--runs-dir", tmp_path / "runs", *QUICK, "--device", "cuda")
    assert_one_line_error(result, "--device cuda", "CUDA is not available")
    assert not (tmp_path / "runs").exists()


def test_select_metric_names_are_the_evaluated_metrics():
    assert METRIC_NAMES == METRICS


def test_recipe_with_a_bad_source_names_the_recipe(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[prepare]\nsource = "netflix"\n')
    result = run("prepare", "--recipe", recipe, "--out", tmp_path / "o")
    assert_one_line_error(result, f"{recipe}: unknown source 'netflix'", "known: synthetic")
    assert not (tmp_path / "o").exists()


def test_prepare_and_evaluate_errors_print_nothing_on_stdout(tmp_path):
    assert_one_line_error(
        run("prepare", "--source", "tang", "--raw", tmp_path / "no", "--out", tmp_path / "o")
    )
    assert_one_line_error(run("evaluate", tmp_path / "no-run"), "run directory not found")


# --------------------------------------------------------------------------------------------------
# 6. --resume with a larger --epochs extends the run


def test_resume_with_more_epochs_equals_the_longer_run(data, tmp_path):
    fit(quick_config(data, aux=("social",), epochs=3, name="r"), tmp_path / "full")
    fit(quick_config(data, aux=("social",), epochs=2, name="r"), tmp_path / "r")
    result = run("train", "--resume", tmp_path / "r", "--epochs", 3, "--quiet")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert metrics_without_wall(tmp_path / "r").equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(tmp_path / "r" / "last.safetensors", tmp_path / "full" / "last.safetensors")
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["epochs"] == 3  # recorded
    last = (tmp_path / "r" / "last.safetensors").read_bytes()
    result = run("train", "--resume", tmp_path / "r", "--epochs", 1, "--quiet")
    assert_one_line_error(result, "option --epochs is 1", "only a larger --epochs")
    result = run("train", "--resume", tmp_path / "r", "--epochs", 5, "--lr", 0.5, "--quiet")
    assert_one_line_error(result, "option --lr is 0.5")
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == last


# --------------------------------------------------------------------------------------------------
# 7. the default run name does not collide


def test_default_name_takes_the_first_free_suffix(data, tmp_path):
    (tmp_path / "tiny-ew-noaux-s0").mkdir()
    (tmp_path / "tiny-ew-noaux-s0-2").mkdir()
    result = run("train", data, "--runs-dir", tmp_path, *QUICK, "--epochs", 1, "--method", "ew")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "tiny-ew-noaux-s0-3" / "best.safetensors").is_file()
    assert not any(any((tmp_path / name).iterdir()) for name in ("tiny-ew-noaux-s0", "tiny-ew-noaux-s0-2"))
    help_text = run("train", "--help", env={"COLUMNS": "300"}).output
    assert re.search(r"--name .*-2, -3", help_text), help_text


# --------------------------------------------------------------------------------------------------
# 8. evaluate names the files it wrote; its heading does not wrap


@pytest.fixture(scope="module")
def long_run(data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("polish-runs")
    fit(quick_config(data, epochs=1), runs / "a-rather-long-run-name-so-that-the-heading-is-wide")
    return runs / "a-rather-long-run-name-so-that-the-heading-is-wide"


def test_evaluate_table_heading_and_written_files(long_run):
    result = run("evaluate", long_run, "--device", "cpu", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    heading = [line for line in lines if line.startswith(f"{long_run} · test · ")]
    assert len(heading) == 1 and heading[0].endswith(" users"), result.stdout
    assert lines[-1] == f"wrote {long_run / 'metrics.json'} and {long_run / 'per_user.parquet'}"


def test_evaluate_json_stdout_is_only_json(long_run):
    result = run("evaluate", long_run, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["split"] == "test" and "wrote" not in result.stdout


# --------------------------------------------------------------------------------------------------
# 9. make help, the licence


def test_make_help_lists_every_target():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    makefile = (ROOT / "Makefile").read_text()
    phony = [name for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for name in line.split()]
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True)
    default = subprocess.run(["make", "-s"], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = shown.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(phony)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each with its description
    assert default.stdout == shown.stdout


def test_pyproject_license_is_an_spdx_string():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


# --------------------------------------------------------------------------------------------------
# 10. help texts


def test_train_and_prepare_help_texts():
    train_help = run("train", "--help", env={"COLUMNS": "300"}).output
    assert re.search(r"DATA_DIR .*Required, unless --resume or a --config file", train_help), train_help
    prepare_help = run("prepare", "--help", env={"COLUMNS": "300"}).output
    aux = next(line for line in prepare_help.splitlines() if "--aux" in line)
    for table in ("social.parquet", "item_category.parquet", "item_item.parquet", "coview", "cobuy"):
        assert table in aux, (table, aux)


def test_the_progress_bar_says_when_it_validates(data, tmp_path, monkeypatch):
    """(Item 16.) ProgressCallbacks relabels the epoch's bar while the full-ranking validation runs."""
    from rich.console import Console
    from rich.progress import Progress

    from cli.train import ProgressCallbacks

    progress = Progress(console=Console(file=io.StringIO()))
    callbacks = ProgressCallbacks(progress, "ndcg@20", tmp_path)
    callbacks.on_epoch_start(3, n_steps=10)
    callbacks.on_validate(3)
    assert progress.tasks[-1].description == "epoch 3 · validating (full ranking)"
