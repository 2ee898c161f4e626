"""Running a sweep: status transitions, skipping done cells, resuming an interrupted one, parallel jobs,
and stopping its workers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from recmtl.data.store import atomic_file, remove_temporaries, temporary_sibling
from recmtl.errors import RecmtlError
from recmtl.sweeps import load_sweep, runner
from recmtl.sweeps.runner import SweepInterrupted, cell_status, run_cell, run_sweep
from tests.sweeps.conftest import QUICK_OPTIONS, write_sweep
from tests.train.conftest import Interrupt


def make_sweep(tmp_path, data, runs_dir="runs"):
    """single and pmtrec × seeds 0, 1 on the tiny data, 2 epochs, into tmp_path/runs_dir."""
    head = f'data = "{data}"\nruns_dir = "{tmp_path / runs_dir}"\nseeds = [0, 1]\n'
    body = QUICK_OPTIONS + "[methods.single]\n[methods.pmtrec]\n"
    return load_sweep(write_sweep(tmp_path / f"{runs_dir}.toml", head + body))


def metrics_of(sweep):
    return {c.name: json.loads((c.run_dir / "metrics.json").read_text())["metrics"] for c in sweep.cells()}


def test_status_goes_todo_partial_done(tmp_path, sweep_data):
    sweep = make_sweep(tmp_path, sweep_data)
    cell = sweep.cells()[0]
    assert cell_status(cell) == "todo"
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, Interrupt(epoch=1, step=1))
    assert cell_status(cell) == "partial"
    report = run_cell(cell)
    assert cell_status(cell) == "done" and report is not None
    assert (cell.run_dir / "per_user.parquet").is_file()
    saved = json.loads((cell.run_dir / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["metrics"] == report.metrics
    assert run_cell(cell) is None  # done: nothing to do


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path, sweep_data):
    reference = make_sweep(tmp_path, sweep_data, "reference")
    outcomes = run_sweep(reference)
    assert [o.cell.name for o in outcomes] == ["single-s0", "single-s1", "pmtrec-s0", "pmtrec-s1"]
    assert all(o.error is None and o.total == 4 for o in outcomes)

    sweep = make_sweep(tmp_path, sweep_data, "interrupted")
    target = sweep.cells()[2]  # pmtrec-s0, at its second epoch
    started: list[str] = []

    def callbacks(cell):
        return Interrupt(epoch=1, step=1) if cell.name == target.name else None

    with pytest.raises(SweepInterrupted) as info:
        run_sweep(sweep, on_cell_start=lambda cell, i, n: started.append(cell.name), callbacks=callbacks)
    assert started == ["single-s0", "single-s1", "pmtrec-s0"]
    message = str(info.value)
    assert "pmtrec-s0" in message and "epoch 0 kept" in message and f"recmtl sweep {sweep.path}" in message
    assert [cell_status(c) for c in sweep.cells()] == ["done", "done", "partial", "todo"]

    resumed: list[tuple[str, int]] = []

    class Record:
        def __init__(self, cell):
            self.cell = cell

        def on_resume(self, start_epoch, reason):
            resumed.append((self.cell.name, start_epoch))

        def on_epoch_start(self, epoch, n_steps): ...
        def on_step(self, epoch, step): ...
        def on_validate(self, epoch): ...
        def on_epoch_end(self, record): ...

    again = run_sweep(sweep, callbacks=Record)
    assert [o.cell.name for o in again] == ["pmtrec-s0", "pmtrec-s1"]  # the finished cells are skipped
    assert resumed == [("pmtrec-s0", 1)]  # the interrupted one continued at its second epoch
    assert metrics_of(sweep) == metrics_of(reference)
    assert run_sweep(sweep) == []  # everything done


def test_a_failing_cell_does_not_stop_the_others(tmp_path, sweep_data):
    sweep = make_sweep(tmp_path, sweep_data)
    broken = sweep.cells()[1]
    broken.run_dir.mkdir(parents=True)
    (broken.run_dir / "stray.txt").write_text("not a run")  # fit refuses a non-empty foreign directory
    with pytest.raises(RecmtlError) as info:
        run_sweep(sweep)
    assert "1 of 4 cells failed" in str(info.value) and broken.name in str(info.value)
    assert [cell_status(c) for c in sweep.cells()] == ["done", "todo", "done", "done"]


def test_parallel_jobs_give_the_same_metrics(tmp_path, sweep_data):
    serial = make_sweep(tmp_path, sweep_data, "serial")
    parallel = make_sweep(tmp_path, sweep_data, "parallel")
    run_sweep(serial)
    ended: list[str] = []
    outcomes = run_sweep(parallel, jobs=2, on_cell_end=lambda o: ended.append(o.cell.name))
    assert sorted(ended) == sorted(c.name for c in parallel.cells())
    assert [o.cell.name for o in outcomes] == [c.name for c in parallel.cells()]
    assert metrics_of(parallel) == metrics_of(serial)


def test_jobs_must_be_positive(tmp_path, sweep_data):
    with pytest.raises(RecmtlError, match="--jobs 0"):
        run_sweep(make_sweep(tmp_path, sweep_data), jobs=0)


def _write_metrics_then_sigterm(path: Path) -> None:
    """In a forked worker: a cell whose atomic write of ``path`` is cut by the sweep's SIGTERM."""

    def cell_writing(cell):
        with atomic_file(path) as tmp:
            tmp.write_text("half an epoch's metrics")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal is handled before this returns
            tmp.write_text("reached only if SIGTERM was ignored")

    runner.run_cell = cell_writing
    runner._worker_run(None)


def test_a_worker_stopped_mid_write_leaves_no_temporary_file_and_exits(tmp_path):
    """The sweep's stop reaches a worker inside an atomic write (the race CI once lost: a
    .metrics.parquet.tmp-PID left behind): the write is unwound, the old file kept, the worker ends."""
    path = tmp_path / "metrics.parquet"
    path.write_text("the last finished epoch's metrics")
    worker = multiprocessing.get_context("fork").Process(target=_write_metrics_then_sigterm, args=(path,))
    worker.start()
    worker.join(timeout=30)
    assert worker.exitcode == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.parquet"]
    assert path.read_text() == "the last finished epoch's metrics"


def test_remove_temporaries_takes_only_that_process_files(tmp_path):
    for name in (".metrics.parquet.tmp-123", ".last.safetensors.tmp-123", ".metrics.parquet.tmp-1234"):
        (tmp_path / name).write_text("")
    (tmp_path / "metrics.parquet").write_text("kept")
    removed = remove_temporaries(tmp_path, 123)
    assert [p.name for p in removed] == [".last.safetensors.tmp-123", ".metrics.parquet.tmp-123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.parquet.tmp-1234", "metrics.parquet"]
    assert temporary_sibling(tmp_path / "metrics.parquet", 1234).name == ".metrics.parquet.tmp-1234"


def _ignore_sigterm_and_leave_a_temporary(directory: Path, ready) -> None:
    """A worker stuck where SIGTERM cannot reach it (as inside a long native call), mid-write."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    temporary_sibling(directory / "last.safetensors").write_text("half a checkpoint")
    ready.set()
    time.sleep(60)


class _Pool:
    """What :func:`runner._stop` uses of a ProcessPoolExecutor: its worker processes and shutdown."""

    def __init__(self, processes):
        self._processes = {p.pid: p for p in processes}
        self.shut_down = False

    def shutdown(self, wait, cancel_futures):
        self.shut_down = not wait and cancel_futures


def test_stop_kills_a_worker_that_outlives_the_grace_and_removes_its_temporaries(tmp_path):
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    worker = context.Process(target=_ignore_sigterm_and_leave_a_temporary, args=(tmp_path, ready))
    worker.start()
    assert ready.wait(timeout=30)
    (tmp_path / "last.safetensors").write_text("the last finished epoch")
    pool = _Pool([worker])
    started = time.monotonic()
    runner._stop(pool, [tmp_path], grace_s=0.5)
    assert pool.shut_down and not worker.is_alive() and worker.exitcode == -signal.SIGKILL
    assert time.monotonic() - started < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
