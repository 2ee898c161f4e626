"""`recmtl train` / `recmtl evaluate` through Typer's CliRunner: outputs, exit codes, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app
from recmtl.aggregators import AGGREGATORS, method_options
from recmtl.data.store import sha256_file
from recmtl.runs import load_tensors
from recmtl.tasks.bpr_tasks import SocialTask
from recmtl.train.config import TrainConfig, flag
from recmtl.train.loop import fit
from tests.cli.conftest import QUICK, assert_one_line_error
from tests.train.conftest import Interrupt, metrics_without_wall, prepare_tiny, quick_config

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(data, runs, *extra, name="r"):
    return run("train", data, "--runs-dir", runs, "--name", name, *QUICK, *extra)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("cli-data") / "tiny")


@pytest.fixture(scope="module")
def social_only(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("cli-data") / "tiny-social", aux=("social",))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One finished CLI run (pmtrec, social + category, 3 epochs)."""
    runs = tmp_path_factory.mktemp("cli-runs")
    result = train(data, runs, "--aux", "social,category", "--epochs", 3)
    assert result.exit_code == 0, (result.output, result.stderr)
    return runs / "r", result


# --------------------------------------------------------------------------------------------------
# train


def test_train_writes_the_run_directory(trained, data):
    run, result = trained
    for name in ("config.json", "metrics.parquet", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name
    assert result.stdout.count("epoch ") >= 3  # one log line per epoch with --quiet
    assert "best valid ndcg@20" in result.stdout and str(run) in result.stdout.replace("\n", "")
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["aux"] == ["social", "category"]
    assert saved["config"]["dim"] == 16 and saved["config"]["epochs"] == 3 and saved["config"]["lr"] == 0.01
    frame = pl.read_parquet(run / "metrics.parquet")
    assert frame.height == 3 and {"loss_social", "weight_category", "valid_ndcg@20"} <= set(frame.columns)


def test_cli_run_equals_library_fit(trained, data, tmp_path):
    run, _ = trained
    fit(quick_config(data, aux=("social", "category"), epochs=3, name="r"), tmp_path / "lib")
    assert metrics_without_wall(run).equals(metrics_without_wall(tmp_path / "lib"))


def test_default_run_name(data, tmp_path):
    result = run("train", data, "--runs-dir", tmp_path, *QUICK, "--epochs", 1, "--method", "ew")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "tiny-ew-noaux-s0" / "best.safetensors").is_file()


def test_resume_continues_an_interrupted_run(data, tmp_path):
    config = quick_config(data, aux=("social",), epochs=3, name="r")
    fit(config, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "r", callbacks=Interrupt(1, 2))
    result = run("train", "--resume", tmp_path / "r", "--quiet")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert metrics_without_wall(tmp_path / "r").equals(metrics_without_wall(tmp_path / "full"))


@pytest.mark.parametrize(
    "flags, option",
    [
        (("--lr", 0.5), "--lr"),
        (("--aux", "social,category"), "--aux"),
        (("--method", "ew"), "--method"),
        (("--method-opt", "alpha=1.4"), "--method-opt alpha"),
    ],
)
def test_resume_with_a_different_option_is_a_one_line_error(data, tmp_path, flags, option):
    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(data, aux=("social",), epochs=2, name="r"), tmp_path / "r", callbacks=Interrupt(1))
    last = (tmp_path / "r" / "last.safetensors").read_bytes()
    result = run("train", "--resume", tmp_path / "r", "--quiet", *flags)
    assert_one_line_error(result, "--resume", f"option {option} is ")
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == last


def test_existing_run_name_without_resume(trained, data):
    run, _ = trained
    before = (run / "last.safetensors").read_bytes()
    result = train(data, run.parent, "--aux", "social,category", "--epochs", 3)
    assert_one_line_error(result, "exists", "--resume")
    assert (run / "last.safetensors").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# bad input


def test_data_dir_that_is_not_a_prepare_output(tmp_path):
    (tmp_path / "junk").mkdir()
    result = train(tmp_path / "junk", tmp_path / "runs")
    assert_one_line_error(result, "junk", "manifest.json")
    assert not (tmp_path / "runs").exists()


def test_missing_data_dir(tmp_path):
    assert_one_line_error(train(tmp_path / "nowhere", tmp_path / "runs"), "nowhere")


def test_table_modified_after_prepare(data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    frame = pl.read_parquet(copy / "train.parquet")
    frame.head(frame.height - 1).write_parquet(copy / "train.parquet")
    result = train(copy, tmp_path / "runs")
    assert_one_line_error(result, "train.parquet", "sha256")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (("--aux", "bogus"), "--aux"),
        (("--method-opt", "alpha=0.5"), "pmtrec: alpha must be in [1, 10], found 0.5"),
        (("--method-opt", "alpha=11"), "pmtrec: alpha"),
        (("--method-opt", "tau=0"), "pmtrec: tau must be in (0, 100]"),
        (("--method-opt", "tau=-1"), "pmtrec: tau"),
        (("--method-opt", "tau=fast"), ("tau", "expected a number")),
        (("--method-opt", "combine=sum"), "combine must be one of raw, unit"),
        (("--method", "ew", "--method-opt", "tau=5"), ("method ew has no option 'tau'", "recmtl methods")),
        (("--method-opt", "gamma=1"), ("method pmtrec has no option 'gamma'", "alpha, tau")),
        (("--method-opt", "tau"), ("--method-opt 'tau'", "KEY=VALUE")),
        (("--mode", "rows"), "--mode rows"),
        (("--method", "nosuch"), "nosuch"),
        (("--select-metric", "ndcg@7"), "--select-metric"),
    ],
)
def test_invalid_options(data, tmp_path, flags, fragment):
    result = train(data, tmp_path / "runs", *flags)
    assert_one_line_error(result, *([fragment] if isinstance(fragment, str) else fragment))
    assert not (tmp_path / "runs").exists()


def test_missing_auxiliary_table_fails_before_training(social_only, tmp_path):
    result = train(social_only, tmp_path / "runs", "--aux", "category")
    assert_one_line_error(result, "--aux category", "item_category")
    assert not (tmp_path / "runs" / "r" / "best.safetensors").exists()
    assert not (tmp_path / "runs" / "r").exists()


def test_nan_loss_exits_1_with_one_line(data, tmp_path, monkeypatch):
    config = quick_config(data, aux=("social",))
    steps = math.ceil(pl.read_parquet(data / "train.parquet").height / config.batch_size)
    original, calls = SocialTask.loss, {"n": 0}

    def nan_after_epoch_0(self, rows, batch, private):  # social's loss runs once per step
        calls["n"] += 1
        loss = original(self, rows, batch, private)
        return loss * math.nan if calls["n"] > steps else loss

    monkeypatch.setattr(SocialTask, "loss", nan_after_epoch_0)
    result = train(data, tmp_path / "runs", "--aux", "social", "--epochs", 3)
    assert_one_line_error(result, "social", "epoch 1")
    _, meta = load_tensors(tmp_path / "runs" / "r" / "last.safetensors")
    assert meta["loop"]["epoch"] == 0


# --------------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_json_matches_metrics_json(trained, data):
    run, _ = trained
    result = run_cli_eval(run, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    saved = json.loads((run / "metrics.json").read_text())
    assert printed == saved
    assert saved["split"] == "test"
    ks = (10, 20, 40)
    names = ("recall", "precision", "hit", "ndcg", "mrr", "map")
    assert set(saved["metrics"]) == {f"{m}@{k}" for m in names for k in ks}
    assert saved["checkpoint"]["sha256"] == sha256_file(run / "best.safetensors")
    per_user = pl.read_parquet(run / "per_user.parquet")
    assert {"user_id", "n_train", *saved["metrics"]} <= set(per_user.columns)
    assert per_user.height == saved["n_users"]
    assert per_user["ndcg@20"].mean() == pytest.approx(saved["metrics"]["ndcg@20"])


def run_cli_eval(run_dir, *extra):
    return run("evaluate", run_dir, *extra)


def test_evaluate_valid_split_and_table_output(trained, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    result = run_cli_eval(run, "--split", "valid", "--k", "5,10", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "ndcg" in result.stdout and "@5" in result.stdout
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["split"] == "valid" and saved["ks"] == [5, 10]
    # the best checkpoint on valid with only train masked is what training reported for that epoch
    frame = pl.read_parquet(run / "metrics.parquet")
    best = frame.filter(pl.col("best")).tail(1)
    assert saved["metrics"]["ndcg@10"] == pytest.approx(best["valid_ndcg@10"][0], abs=1e-12)


def test_evaluate_run_without_checkpoint(trained, tmp_path):
    run, _ = trained
    (tmp_path / "empty-run").mkdir()
    shutil.copy(run / "config.json", tmp_path / "empty-run" / "config.json")
    result = run_cli_eval(tmp_path / "empty-run", "--device", "cpu")
    assert_one_line_error(result, "best.safetensors")
    assert not (tmp_path / "empty-run" / "metrics.json").exists()


def test_evaluate_non_run_dir(tmp_path):
    assert_one_line_error(run_cli_eval(tmp_path, "--device", "cpu"), "config.json")
    assert_one_line_error(run_cli_eval(tmp_path / "nowhere", "--device", "cpu"), "nowhere")


@pytest.mark.parametrize("flags, fragment", [(("--k", "ten"), "--k"), (("--split", "train"), "--split")])
def test_evaluate_bad_options(trained, flags, fragment):
    run, _ = trained
    assert_one_line_error(run_cli_eval(run, "--device", "cpu", *flags), fragment)


def test_resume_of_a_missing_run_dir(tmp_path):
    assert_one_line_error(run("train", "--resume", tmp_path / "nowhere", "--quiet"), "nowhere")


def test_config_file_with_an_unknown_key(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("epochs = 1\nlearning_rate = 0.1\n")
    result = train(data, tmp_path / "runs", "--config", config)
    assert_one_line_error(result, "learning_rate")
    assert not (tmp_path / "runs").exists()


def test_config_file_values_are_used_and_flags_override_them(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('epochs = 1\nmethod = "ew"\ndim = 8\n')
    result = train(data, tmp_path / "runs", "--config", config, "--method", "single")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())["config"]
    assert (saved["epochs"], saved["method"]["name"], saved["dim"]) == (1, "single", 16)  # QUICK: --dim 16


def saved_method(runs, name="r"):
    return json.loads((runs / name / "config.json").read_text())["config"]["method"]


def test_method_options_from_the_command_line_are_recorded_with_the_defaults(data, tmp_path):
    result = train(
        data, tmp_path / "runs", "--epochs", 1, "--method-opt", "alpha=1.3", "--method-opt", "tau=0.4"
    )
    assert result.exit_code == 0, result.stderr
    assert saved_method(tmp_path / "runs") == {
        "name": "pmtrec",
        "alpha": 1.3,
        "tau": 0.4,
        "combine": "raw",
        "focus": "norm",
        "balance": "softmax",
        "main_task": 0,
        "norm_source": "step",
        "beta": 0.9,
    }


def test_method_table_in_a_config_file_and_flags_over_it(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('epochs = 1\n[method]\nname = "pmtrec"\nalpha = 1.5\ntau = 2.0\nfocus = "logit"\n')
    result = train(data, tmp_path / "runs", "--config", config, "--method-opt", "tau=0.3")
    assert result.exit_code == 0, result.stderr
    method = saved_method(tmp_path / "runs")
    assert (method["alpha"], method["tau"], method["focus"]) == (1.5, 0.3, "logit")
    # another --method starts from that method's own defaults: the file's PMTRec options do not leak
    result = train(data, tmp_path / "runs", "--config", config, "--method", "single", name="s")
    assert result.exit_code == 0, result.stderr
    assert saved_method(tmp_path / "runs", "s") == {"name": "single", "main_task": 0}


def test_method_table_with_an_option_the_method_lacks(data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('epochs = 1\n[method]\nname = "ew"\ntau = 2.0\n')
    assert_one_line_error(train(data, tmp_path / "runs", "--config", config), "run.toml", "ew", "'tau'")
    assert not (tmp_path / "runs").exists()


def test_an_option_that_does_not_fit_the_mode_is_refused_before_any_work(data, tmp_path):
    """Nash-MTL reuses its weights only in global mode: asked to in row mode, no run directory is made."""
    extra = ("--aux", "social", "--method", "nashmtl", "--method-opt", "update_weights_every=2")
    refused = train(data, tmp_path / "runs", *extra)
    assert_one_line_error(refused, "nashmtl", "update_weights_every=2", "global")
    assert not (tmp_path / "runs").exists()
    ok = train(data, tmp_path / "runs", *extra, "--mode", "global")
    assert ok.exit_code == 0, ok.stderr


def test_methods_lists_every_method_with_its_options_and_paper():
    result = runner.invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name, cls in AGGREGATORS.items():
        assert name in result.output
        for option in method_options(cls):
            assert f"{option.name} = {option.default}" in result.output
            assert option.valid in result.output
    assert "arXiv:2407.21364" in result.output
    assert "[reading]" in result.output  # not eaten as markup


def test_train_help_points_to_methods_and_lists_every_config_option():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "recmtl methods" in result.output and "--method-opt" in result.output
    for f in dataclasses.fields(TrainConfig):
        if f.name != "data":
            assert flag(f.name) in result.output, f.name


def test_evaluate_after_the_data_was_prepared_again_differently(data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    result = train(copy, tmp_path / "runs", "--epochs", 1)
    assert result.exit_code == 0, result.stderr
    shutil.rmtree(copy)
    prepare_tiny(copy, seed=1)  # same place, a valid prepare output, other split
    assert_one_line_error(run_cli_eval(tmp_path / "runs" / "r", "--device", "cpu"), "hash mismatch")
    result = run("train", "--resume", tmp_path / "runs" / "r", "--quiet")
    assert_one_line_error(result, "--resume", "differs")


def test_ctrl_c_exits_130_without_traceback_and_keeps_the_last_epoch(data, tmp_path, monkeypatch):
    config = quick_config(data, aux=("social",))
    steps = math.ceil(pl.read_parquet(data / "train.parquet").height / config.batch_size)
    original, calls = SocialTask.loss, {"n": 0}

    def interrupt_in_epoch_1(self, rows, batch, private):
        calls["n"] += 1
        if calls["n"] == steps + 3:
            raise KeyboardInterrupt
        return original(self, rows, batch, private)

    monkeypatch.setattr(SocialTask, "loss", interrupt_in_epoch_1)
    result = train(data, tmp_path / "runs", "--aux", "social", "--epochs", 3)
    assert result.exit_code == 130, (result.output, result.stderr)
    assert "Traceback" not in result.output + result.stderr and "interrupted" in result.stderr
    _, meta = load_tensors(tmp_path / "runs" / "r" / "last.safetensors")
    assert meta["loop"]["epoch"] == 0
    monkeypatch.setattr(SocialTask, "loss", original)
    result = run("train", "--resume", tmp_path / "runs" / "r", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert pl.read_parquet(tmp_path / "runs" / "r" / "metrics.parquet")["epoch"].to_list() == [0, 1, 2]


def test_an_error_under_the_progress_bar_prints_nothing_on_stdout(data, tmp_path):
    """Without --quiet the progress bar is up when training diverges: the error is one line on stderr and
    nothing (no stray blank line) on stdout (issue 7, item 8). A subprocess: stdout is a real stream."""
    options = ["--dim", "16", "--batch-size", "256", "--lr", "1e9", "--device", "cpu", "--aux", "social"]
    args = ["train", str(data), "--runs-dir", str(tmp_path / "runs"), "--name", "r", *options]
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "exploded" in lines[0] and "lower --lr" in lines[0], proc.stderr
