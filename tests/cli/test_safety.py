"""Safe to handle: atomic writes leave nothing behind (Ctrl-C included), --overwrite replaces only what recmtl
wrote, Ctrl-C anywhere is one line and exit status 130 (start-up included), the interrupt of `train` says
how to resume (SIGTERM too: a scheduler's stop, a background sweep), `--version`, and usage errors on one
line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import recmtl
from cli import main as cli_main
from cli import prepare as prepare_cmd
from cli.main import app
from recmtl import runs
from recmtl.data import store
from recmtl.errors import RecmtlError
from recmtl.runs import load_tensors, save_tensors, write_metrics
from recmtl.tasks.bpr_tasks import SocialTask
from recmtl.train.loop import fit
from tests.cli.conftest import TRAIN_FLAGS as QUICK
from tests.cli.conftest import assert_one_line_error, stderr_lines
from tests.train.conftest import Interrupt, n_steps, prepare_tiny, quick_config

runner = CliRunner()
TINY = ("--users", 300, "--items", 200, "--interactions", 6000, "--min-rating", 0, "--quiet")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def leftovers(*folders: Path) -> list[str]:
    """Temporary siblings (``.tmp-`` / ``.old-``) anywhere under ``folders``."""
    found = [p for f in folders if f.exists() for p in f.rglob("*")]
    return sorted(str(p) for p in found if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("safety-data") / "tiny")


# --------------------------------------------------------------------------------------------------
# 1. atomic writes remove their temporary on any exception, Ctrl-C included


def partial_then(exc):
    """A writer that leaves a partial file at the path it was given, then raises ``exc``."""

    def write(*args, **kwargs):
        target = next(a for a in args if isinstance(a, str | Path) and ".tmp-" in str(a))
        Path(target).write_bytes(b"partial")
        raise exc

    return write


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk full")], ids=["ctrl-c", "error"])
def test_save_tensors_leaves_no_temporary_and_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "last.safetensors"
    save_tensors(path, {"x": torch.arange(3.0)}, {"epoch": 0})
    monkeypatch.setattr(runs, "save_file", lambda tensors, filename, metadata: partial_then(exc)(filename))
    with pytest.raises(type(exc)):
        save_tensors(path, {"x": torch.zeros(3)}, {"epoch": 1})
    assert leftovers(tmp_path) == []
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["x"], torch.arange(3.0)) and meta == {"epoch": 0}


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk full")], ids=["ctrl-c", "error"])
def test_write_metrics_leaves_no_temporary_and_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    write_metrics(tmp_path, [{"epoch": 0, "loss_rec": 0.5}])
    monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda self, file, **kw: partial_then(exc)(file))
    with pytest.raises(type(exc)):
        write_metrics(tmp_path, [{"epoch": 0, "loss_rec": 0.5}, {"epoch": 1, "loss_rec": 0.4}])
    assert leftovers(tmp_path) == []
    assert pl.read_parquet(tmp_path / "metrics.parquet")["epoch"].to_list() == [0]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk full")], ids=["ctrl-c", "error"])
def test_atomic_write_text_leaves_no_temporary_and_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "config.json"
    store.atomic_write_text(path, "before\n")
    monkeypatch.setattr(Path, "write_text", lambda self, text, *a, **kw: partial_then(exc)(self))
    with pytest.raises(type(exc)):
        store.atomic_write_text(path, "after\n")
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    assert path.read_text() == "before\n"


def test_atomic_directory_interrupted_inside_or_at_the_swap_keeps_the_old_one(data, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    shutil.copytree(data, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt), store.atomic_directory(out, overwrite=True) as tmp:
        (tmp / "train.parquet").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert leftovers(tmp_path) == [] and {p.name: p.read_bytes() for p in out.iterdir()} == before

    real_rename, calls = Path.rename, []

    def rename(self, target):  # the second rename puts the new directory in place: interrupt it
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt), store.atomic_directory(out, overwrite=True) as tmp:
        (tmp / "manifest.json").write_text("{}")
    monkeypatch.undo()
    assert len(calls) >= 2
    assert leftovers(tmp_path) == [] and {p.name: p.read_bytes() for p in out.iterdir()} == before


# --------------------------------------------------------------------------------------------------
# 3. --overwrite replaces only an empty directory or a prepare output; run directories likewise


def test_overwrite_refuses_a_directory_recmtl_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = cli("prepare", "--out", out, *TINY, "--overwrite")
    assert_one_line_error(result, str(out), "not a recmtl prepare output", "--overwrite will not replace it")
    with pytest.raises(RecmtlError, match="not a recmtl prepare output"):  # the same without --overwrite
        store.check_output(out)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"
    assert leftovers(tmp_path) == []


def test_out_that_is_a_file_is_named_as_a_file(tmp_path):
    target = tmp_path / "data.csv"
    target.write_text("a,b\n")
    result = cli("prepare", "--out", target, *TINY, "--overwrite")
    assert_one_line_error(result, str(target), "is a file")
    assert "directory exists" not in result.stderr
    for overwrite in (False, True):
        with pytest.raises(RecmtlError, match="is a file, not a directory"):
            store.check_output(target, overwrite=overwrite)
    assert target.read_text() == "a,b\n"


def test_overwrite_replaces_an_empty_directory_or_a_prepare_output(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    result = cli("prepare", "--out", out, *TINY, "--overwrite")
    assert result.exit_code == 0, result.stderr
    first = store.read_manifest(out)
    assert_one_line_error(cli("prepare", "--out", out, *TINY), str(out), "--overwrite")
    result = cli("prepare", "--out", out, *TINY, "--seed", 1, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert store.read_manifest(out)["options"]["seed"] == 1 != first["options"]["seed"]
    assert leftovers(tmp_path) == []


def test_train_refuses_a_run_name_that_is_not_a_run_directory(data, tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "notes.txt").write_text("mine")
    result = cli("train", data, "--runs-dir", tmp_path / "runs", "--name", "r", *QUICK, "--quiet")
    assert_one_line_error(result, str(tmp_path / "runs" / "r"), "config.json", "--name")
    assert [p.name for p in (tmp_path / "runs" / "r").iterdir()] == ["notes.txt"]
    with pytest.raises(RecmtlError, match="is a file"):
        fit(quick_config(data, epochs=1), tmp_path / "runs" / "r" / "notes.txt")


# --------------------------------------------------------------------------------------------------
# 2. and 5. the resume says where it restarts; the interrupt of train says how to resume


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "progress"])
def test_resume_prints_where_it_restarts(data, tmp_path, quiet):
    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(data, aux=("social",), epochs=3), run, callbacks=Interrupt(1, 2))
    result = cli("train", "--resume", run, *(("--quiet",) if quiet else ()))
    assert result.exit_code == 0, result.stderr
    assert f"resuming {run} at epoch 1 (epoch 0 kept)" in result.stdout.replace("\n", "")
    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(data, epochs=2), tmp_path / "r0", callbacks=Interrupt(0, 1))
    result = cli("train", "--resume", tmp_path / "r0", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert f"resuming {tmp_path / 'r0'} from epoch 0: no epoch had finished" in result.stdout


def interrupt_social_loss_at(monkeypatch, call: int) -> None:
    original, calls = SocialTask.loss, {"n": 0}

    def loss(self, rows, batch, private):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, rows, batch, private)

    monkeypatch.setattr(SocialTask, "loss", loss)


def test_ctrl_c_in_train_says_what_is_kept_and_how_to_resume(data, tmp_path, monkeypatch):
    steps = n_steps(quick_config(data))
    interrupt_social_loss_at(monkeypatch, 2 * steps + 3)  # in epoch 2
    runs_dir = tmp_path / "runs"
    result = cli(
        "train", data, "--runs-dir", runs_dir, "--name", "r", *QUICK, "--aux", "social", "--epochs=4"
    )
    run = runs_dir / "r"
    assert result.exit_code == 130, (result.output, result.stderr)
    assert stderr_lines(result.stderr) == [
        f"interrupted: epochs 0-1 are kept in {run}; continue with: recmtl train --resume {run}"
    ]
    assert "Traceback" not in result.output + result.stderr and leftovers(runs_dir) == []
    monkeypatch.undo()
    again = stderr_lines(result.stderr)[0].split("continue with: recmtl ")[1].split()
    result = cli(*again, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert pl.read_parquet(run / "metrics.parquet")["epoch"].to_list() == [0, 1, 2, 3]


def test_ctrl_c_in_the_first_epoch_of_train_says_no_epoch_finished(data, tmp_path, monkeypatch):
    interrupt_social_loss_at(monkeypatch, 2)
    result = cli("train", data, "--runs-dir", tmp_path, "--name", "r", *QUICK, "--aux", "social", "--quiet")
    assert result.exit_code == 130
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"interrupted: no epoch had finished in {tmp_path / 'r'}")
    assert line.endswith(f"continue with: recmtl train --resume {tmp_path / 'r'}")


# --------------------------------------------------------------------------------------------------
# 6. and 7. --version, usage errors, exit statuses through main()


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["recmtl", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_version(monkeypatch, capsys):
    assert run_main(monkeypatch, capsys, "--version") == (0, f"recmtl {recmtl.__version__}\n", "")
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"recmtl {recmtl.__version__}\n"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("train", "data/x", "--lr", "abc"), "'--lr'"),
        (("train", "data/x", "--bogus"), "--bogus"),
        (("train", "data/x", "--lr"), "'--lr' requires an argument"),
        (("prepare", "--users", "many"), "'--users'"),
        (("evaluate",), "Missing argument"),
        (("nosuchcommand",), "nosuchcommand"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(monkeypatch, capsys, args, fragment):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Usage" not in err and "╭" not in err and "Traceback" not in err


def test_help_user_errors_and_no_arguments_keep_their_exit_status(monkeypatch, capsys, tmp_path):
    code, out, _ = run_main(monkeypatch, capsys, "--help")
    assert code == 0 and "Usage" in out and "--version" in out
    code, out, _ = run_main(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "--method-opt" in out
    code, out, err = run_main(monkeypatch, capsys, "info", tmp_path / "nowhere")
    assert code == 1 and stderr_lines(err) == [
        f"error: {tmp_path / 'nowhere'}: not a directory (expected the output of recmtl prepare)"
    ]
    code, out, err = run_main(monkeypatch, capsys)
    assert code == 2 and "Usage" in out + err and "error" not in err


def test_ctrl_c_in_a_command_through_main_is_one_line(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_cmd, "run_prepare", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "prepare", "--out", tmp_path / "o", "--quiet")
    assert code == 130 and stderr_lines(err) == ["interrupted: nothing half-written was kept"]
    monkeypatch.setattr(cli_main, "build_app", interrupted)  # Ctrl-C while the commands are imported
    code, _, err = run_main(monkeypatch, capsys, "prepare", "--out", tmp_path / "o")
    assert code == 130 and stderr_lines(err) == ["interrupted"]
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------
# 4. a real SIGINT at several moments, start-up imports included (bounded in total time)

BUDGET_S = 30.0


def sigint_after(
    args: list[str],
    delay: float | None,
    cwd: Path,
    once: Path | None = None,
    sig: signal.Signals = signal.SIGINT,
    in_background: bool = False,
    sent: list[float] | None = None,
) -> tuple[int | None, str]:
    """Run ``recmtl ARGS``, send ``sig`` after ``delay`` s (None: shortly after the file ``once`` appears);
    (None, "") if it had already ended by then. ``in_background``: started as a shell's background job is,
    ignoring SIGINT. ``sent``: the wall-clock time (``time.time()``) just after the signal went is appended
    to it."""
    # (SIG_DFL even if pytest's parent ignores it)
    ctrl_c = signal.SIG_IGN if in_background else signal.SIG_DFL
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, ctrl_c),
    )
    if delay is None:
        deadline = time.monotonic() + 120
        while once is not None and not once.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        proc.wait(timeout=0.2 if delay is None else delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        if sent is not None:
            sent.append(time.time())
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err
    proc.communicate()
    return None, ""


def written_before(path: Path, sent: list[float]) -> bool:
    """Whether ``path`` (a command's last file) was complete before the signal went (``sent``). The work
    had then finished; a signal landing in the ~0.1 s of interpreter shut-down that follows either ends the
    process (-SIGINT, once Python has handed SIGINT back to the system) or finds no more Python code to run
    (status 0). A KeyboardInterrupt swallowed mid-work, which also ends in 0, leaves a later file. (File
    times come from the kernel's coarse clock, never ahead of ``time.time()``.)"""
    return path.is_file() and bool(sent) and path.stat().st_mtime <= sent[0]


def assert_interrupted(code: int | None, err: str, delay: float) -> None:
    assert code == 130, (delay, code, err)
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("interrupted"), (delay, err)
    assert "Traceback" not in err


def test_sigint_during_prepare_is_one_line_and_130(tmp_path):
    """SIGINT during start-up, during the parsing of the command line and inside prepare's work (polars' and
    pyarrow's native code included): timings spread over a measured uninterrupted run.

    Two ways this once failed, a few times in a hundred: polars' own C-level SIGINT handler (cli.main takes
    SIGINT back after importing polars), and pydantic-core swallowing the KeyboardInterrupt raised while it
    built typer's validator for a Path option ("Exception ignored in: 'Path'", exit 0, the work finished):
    parsing now runs under the exit-at-once handler of start-up."""
    big = ["--users", "12000", "--items", "5000", "--interactions", "800000", "--quiet"]
    started = time.monotonic()
    code, _ = sigint_after(["prepare", "--out", str(tmp_path / "whole"), *big], 600.0, tmp_path)
    took = time.monotonic() - started
    assert code is None and (tmp_path / "whole" / "manifest.json").is_file()
    delays = [0.2, 0.6, 1.0, 1.4] + [f * took for f in (0.3, 0.45, 0.6, 0.75, 0.9)]
    started, interrupted = time.monotonic(), 0
    for i, delay in enumerate(delays):
        if time.monotonic() - started > BUDGET_S:
            break
        out, sent = tmp_path / f"out{i}", []
        code, err = sigint_after(["prepare", "--out", str(out), *big], delay, tmp_path, sent=sent)
        if code is None or (code in (0, -signal.SIGINT) and written_before(out / "manifest.json", sent)):
            continue  # finished before the signal, or it landed in the shut-down: nothing to check
        assert_interrupted(code, err, delay)
        assert not out.exists() and leftovers(tmp_path) == []
        interrupted += 1
    assert interrupted >= 4


def test_sigint_during_train_is_one_line_130_and_keeps_whole_epochs(data, tmp_path):
    """SIGINT during the imports, during set-up or the first epoch, and once a checkpoint exists."""
    started, seen = time.monotonic(), set()
    for i, delay in enumerate((0.3, 1.5, 3.0, None)):
        if delay is not None and time.monotonic() - started > BUDGET_S / 2:
            continue
        run = tmp_path / "runs" / f"r{i}"
        long_run = ["--epochs", "100000", "--patience", "100000", "--name", f"r{i}", "--quiet"]
        args = ["train", str(data), "--runs-dir", str(tmp_path / "runs"), *map(str, QUICK), *long_run]
        code, err = sigint_after(args, delay, tmp_path, once=run / "last.safetensors")
        assert_interrupted(code, err, delay)
        assert leftovers(tmp_path) == []
        if (run / "last.safetensors").is_file():
            _, meta = load_tensors(run / "last.safetensors")
            last = meta["loop"]["epoch"]
            assert pl.read_parquet(run / "metrics.parquet").height in (last, last + 1)
            kept = "epoch 0 is kept" if last == 0 else f"epochs 0-{last} are kept"
            assert f"{kept} in {run}; continue with: recmtl train --resume {run}" in err
            seen.add("epochs kept")
        elif "--resume" in err:
            assert "no epoch had finished" in err and (run / "config.json").is_file()
            seen.add("no epoch")
        else:
            assert not run.exists() or not any(run.iterdir())
            seen.add("start-up")
    assert {"start-up", "epochs kept"} <= seen


def test_sigterm_during_train_ends_it_as_ctrl_c_does(data, tmp_path):
    """A scheduler's stop or `kill`: whole epochs kept, one line saying how to resume, status 130."""
    run = tmp_path / "runs" / "r"
    long_run = ["--epochs", "100000", "--patience", "100000", "--name", "r", "--quiet"]
    args = ["train", str(data), "--runs-dir", str(tmp_path / "runs"), *map(str, QUICK), *long_run]
    code, err = sigint_after(args, None, tmp_path, once=run / "last.safetensors", sig=signal.SIGTERM)
    assert_interrupted(code, err, delay=0)
    last = load_tensors(run / "last.safetensors")[1]["loop"]["epoch"]
    kept = "epoch 0 is kept" if last == 0 else f"epochs 0-{last} are kept"
    assert f"{kept} in {run}; continue with: recmtl train --resume {run}" in err
    assert leftovers(tmp_path) == []


def test_sigterm_stops_a_background_sweep_and_its_workers(data, tmp_path):
    """A sweep started in the background (Ctrl-C ignored) stops on SIGTERM: its workers end with it, the
    cells they trained keep their epochs, and the same command lists them as resuming."""
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f'data = "{data}"\nruns_dir = "{tmp_path / "runs"}"\nseeds = [0, 1]\n'
        '[options]\naux = ["social"]\nepochs = 100000\npatience = 100000\ndim = 8\nbatch_size = 256\n'
        'device = "cpu"\n[methods.ew]\n'
    )
    args = ["sweep", str(sweep), "--jobs", "2", "--quiet"]
    first = tmp_path / "runs" / "ew-s0" / "last.safetensors"
    code, err = sigint_after(args, None, tmp_path, once=first, sig=signal.SIGTERM, in_background=True)
    assert_interrupted(code, err, delay=0)
    assert "their last finished epochs are kept" in err and f"continue with: recmtl sweep {sweep}" in err
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    time.sleep(1.5)  # a worker left running would go on writing checkpoints and metrics
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()} == written
    assert leftovers(tmp_path) == []
    listing = subprocess.run(
        [sys.executable, "-m", "cli.main", "sweep", str(sweep), "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "partial (resumes)" in listing.stdout, listing.stdout
