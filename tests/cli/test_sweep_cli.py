"""`recmtl sweep` through CliRunner: --dry-run, progress lines, resume after Ctrl-C, --jobs, errors."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from typer.testing import CliRunner

import cli.sweep
from cli.main import app
from tests.cli.conftest import assert_one_line_error, stderr_lines
from tests.sweeps.conftest import QUICK_OPTIONS, write_sweep
from tests.train.conftest import Interrupt, prepare_tiny

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("sweep-cli-data") / "tiny")


def sweep_file(tmp_path, data, runs="runs"):
    head = f'data = "{data}"\nruns_dir = "{tmp_path / runs}"\nseeds = [0, 1]\n'
    body = QUICK_OPTIONS + "[methods.single]\n[methods.pmtrec]\ngrid = { alpha = [1.0, 1.5] }\n"
    return write_sweep(tmp_path / f"{runs}.toml", head + body)


def metrics(runs_dir):
    return {
        p.parent.name: json.loads(p.read_text())["metrics"] for p in sorted(runs_dir.glob("*/metrics.json"))
    }


def test_dry_run_lists_the_cells_and_trains_nothing(tmp_path, data):
    path = sweep_file(tmp_path, data)
    result = run("sweep", path, "--dry-run")
    assert result.exit_code == 0, result.stderr
    for name in ("single-s0", "single-s1", "pmtrec-alpha=1.0-s0", "pmtrec-alpha=1.5-s1"):
        assert name in result.stdout
    assert "alpha=1.5" in result.stdout and "6 cells: 6 to train" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_sweep_prints_a_line_per_cell_then_skips_finished_cells(tmp_path, data):
    path = sweep_file(tmp_path, data)
    result = run("sweep", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    done = [line for line in result.stdout.splitlines() if " done in " in line]
    assert len(done) == 6
    assert re.fullmatch(r"\[1/6\] single-s0 \.\.\. done in [\d.]+ s · ETA [\d.]+ (s|min)", done[0]), done[0]
    assert done[-1].startswith("[6/6] pmtrec-alpha=1.5-s1 ... done in") and "ETA" not in done[-1]
    assert "epoch   1" in result.stdout  # the epoch log lines of --quiet
    assert len(metrics(tmp_path / "runs")) == 6

    result = run("sweep", path, "--dry-run")
    assert "6 cells: 6 done" in result.stdout
    result = run("sweep", path)
    assert result.exit_code == 0 and "every cell is done" in result.stdout


def test_ctrl_c_says_how_to_continue_and_the_rerun_resumes(tmp_path, data, monkeypatch):
    reference = sweep_file(tmp_path, data, "reference")
    assert run("sweep", reference, "--quiet").exit_code == 0

    path = sweep_file(tmp_path, data, "interrupted")

    def log_callbacks(metric, run_dir):
        return Interrupt(epoch=1, step=1) if run_dir.name == "pmtrec-alpha=1.0-s0" else Interrupt(epoch=99)

    monkeypatch.setattr(cli.sweep, "LogCallbacks", log_callbacks)
    result = run("sweep", path, "--quiet")
    assert result.exit_code == 130, (result.stdout, result.stderr)
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("interrupted: stopped pmtrec-alpha=1.0-s0"), lines
    assert f"continue with: recmtl sweep {path}" in lines[0] and "Traceback" not in result.output
    monkeypatch.undo()

    result = run("sweep", path, "--dry-run")
    assert "6 cells: 2 done, 1 partial (resumes), 3 to train" in result.stdout
    result = run("sweep", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "[1/4] pmtrec-alpha=1.0-s0 · resuming" in result.stdout
    assert "single-s0" not in result.stdout  # skipped
    assert metrics(tmp_path / "interrupted") == metrics(tmp_path / "reference")


def test_jobs_2_gives_the_metrics_of_jobs_1(tmp_path, data):
    one, two = sweep_file(tmp_path, data, "one"), sweep_file(tmp_path, data, "two")
    assert run("sweep", one, "--quiet").exit_code == 0
    result = run("sweep", two, "--jobs", 2)
    assert result.exit_code == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if " done in " in line]) == 6
    assert metrics(tmp_path / "two") == metrics(tmp_path / "one")
    assert len(metrics(tmp_path / "one")) == 6


def test_bad_input_is_one_line(tmp_path, data):
    assert_one_line_error(run("sweep", tmp_path / "none.toml"), "none.toml", "not found")
    bad = write_sweep(tmp_path / "bad.toml", f'data = "{data}"\n[methods.pmtrec]\ngrid = {{ tau = [] }}\n')
    assert_one_line_error(run("sweep", bad, "--dry-run"), str(bad), "[methods.pmtrec] grid: tau", "empty")
    assert_one_line_error(run("sweep", sweep_file(tmp_path, data), "--jobs", 0), "--jobs 0")
    missing = write_sweep(tmp_path / "missing.toml", f'data = "{tmp_path / "nodata"}"\n[methods.ew]\n')
    assert_one_line_error(run("sweep", missing, "--quiet"), "nodata")


def test_help_explains_the_file_and_points_to_examples_and_docs():
    result = run("sweep", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for fragment in ("[methods.LABEL]", "sweeps/", "docs/training.md", "--dry-run", "--jobs", "seeds"):
        assert fragment in text, fragment


def test_compare_takes_the_cells_of_a_sweep(tmp_path, data):
    """`recmtl compare --sweep FILE` compares exactly the sweep's cells, once all of them are evaluated."""
    path = sweep_file(tmp_path, data)
    refused = run("compare", "--sweep", str(path))
    assert_one_line_error(refused, str(path), "not finished", "recmtl sweep")
    assert run("sweep", str(path), "--quiet").exit_code == 0
    out = tmp_path / "report"
    result = run("compare", "--sweep", str(path), "--baseline", "single", "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.stderr
    table = (out / "compare.csv").read_text()
    assert "single" in table and "pmtrec" in table
    assert_one_line_error(run("compare"), "RUN_DIRs or --sweep")
    only = tmp_path / "only"
    result = run("compare", "--sweep", str(path), "--only", "pmtrec", "--out", str(only), "--no-plots")
    assert result.exit_code == 0, result.stderr
    table = pl.read_csv(only / "compare.csv")
    assert set(table["method"]) == {"pmtrec"} and table["group"].n_unique() == 2  # the single cells left out
    assert_one_line_error(
        run("compare", "--sweep", str(path), "--only", "nash"), "nash", "not a [methods.LABEL]", "single"
    )
    assert_one_line_error(run("compare", str(tmp_path), "--only", "pmtrec"), "--only", "--sweep")


def test_seeds_and_only_run_a_first_pass_whose_cells_the_whole_sweep_then_skips(tmp_path, data):
    path = sweep_file(tmp_path, data)
    listed = run("sweep", str(path), "--only", "single", "--dry-run")
    assert listed.exit_code == 0 and "single-s0" in listed.stdout and "pmtrec" not in listed.stdout
    assert_one_line_error(run("sweep", str(path), "--only", "ew"), "ew", "not a [methods.LABEL]", "pmtrec")
    listed = run("sweep", str(path), "--seeds", "1", "--dry-run")
    assert listed.exit_code == 0 and "-s1" in listed.stdout and "-s0" not in listed.stdout
    assert run("sweep", str(path), "--seeds", "1", "--quiet").exit_code == 0
    assert sorted(metrics(tmp_path / "runs")) == ["pmtrec-alpha=1.0-s1", "pmtrec-alpha=1.5-s1", "single-s1"]
    rest = run("sweep", str(path), "--quiet")
    assert "3 done, 3 to train" in rest.stdout
    assert_one_line_error(run("sweep", str(path), "--seeds", "7"), "seeds 7", "[0, 1]")
    assert_one_line_error(run("sweep", str(path), "--seeds", "a"), "--seeds a", "integers")
