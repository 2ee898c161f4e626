"""Run a sweep's cells: train each (resuming an interrupted one), then evaluate it on the test split.

A cell is *done* when its run directory holds metrics.json (trained and evaluated), *partial* when it
holds config.json (training started), *todo* otherwise. :func:`run_sweep` skips done cells, so a sweep
that was stopped continues where it stopped; with ``jobs > 1`` cells run in separate processes and a
failing cell does not stop the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recmtl.data.store import open_dataset, remove_temporaries
from recmtl.errors import RecmtlError, TrainingInterrupted
from recmtl.eval.run_eval import EvalReport, evaluate_run
from recmtl.runs import CONFIG
from recmtl.sweeps.spec import Cell, Sweep
from recmtl.train.loop import Callbacks, fit, resolve_device

Status = Literal["done", "partial", "todo"]


def cell_status(cell: Cell) -> Status:
    """done: trained and evaluated (metrics.json); partial: training started (config.json); else todo."""
    if (cell.run_dir / "metrics.json").is_file():
        return "done"
    if (cell.run_dir / CONFIG).is_file():
        return "partial"
    return "todo"


def run_cell(cell: Cell, callbacks: Callbacks | None = None) -> EvalReport | None:
    """Train ``cell`` (resuming it when partial; a saved config that differs is fit's ConfigError), then
    evaluate its best checkpoint on the test split (metrics.json, per_user.parquet). A done cell: None."""
    status = cell_status(cell)
    if status == "done":
        return None
    fit(cell.config, cell.run_dir, resume=status == "partial", callbacks=callbacks)
    report, _ = evaluate_run(
        cell.run_dir, split="test", ks=cell.config.ks, device=resolve_device(cell.config.device)
    )
    return report


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell that :func:`run_sweep` ran."""

    cell: Cell
    index: int  # 1-based, among the cells that were run
    total: int  # cells run (the done ones are skipped)
    seconds: float
    error: str | None = None  # one line when the cell failed


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: which cells were stopped and how to continue."""

    def __init__(self, sweep: Sweep, cells: list[Cell], detail: str = "") -> None:
        super().__init__(str(sweep.path))
        self.sweep, self.cells, self.detail = sweep, cells, detail

    def __str__(self) -> str:
        names = ", ".join(c.name for c in self.cells) or "no cell had started"
        stopped = f"stopped {names}" + (f" ({self.detail})" if self.detail else "")
        return (
            f"{stopped}; continue with: recmtl sweep {self.sweep.path} "
            "(finished cells are skipped, interrupted ones resume)"
        )


def run_sweep(
    sweep: Sweep,
    jobs: int = 1,
    *,
    on_cell_start: Callable[[Cell, int, int], None] | None = None,
    on_cell_end: Callable[[CellOutcome], None] | None = None,
    callbacks: Callable[[Cell], Callbacks] | None = None,
) -> list[CellOutcome]:
    """Run every cell of ``sweep`` that is not done, ``jobs`` at a time; return their outcomes in order.

    ``on_cell_start(cell, index, total)`` is called before a cell runs (``jobs == 1`` only: with several
    jobs cells start in other processes), ``on_cell_end(outcome)`` when it ended, in this process;
    ``callbacks(cell)`` gives the training callbacks of a cell (``jobs == 1`` only). A failing cell (a
    RecmtlError, or with several jobs any exception) does not stop the others: the failures are raised
    together at the end as one RecmtlError naming each cell. Ctrl-C raises :class:`SweepInterrupted`.
    """
    if jobs < 1:
        raise RecmtlError(f"--jobs {jobs}: expected at least 1")
    todo = [c for c in sweep.cells() if cell_status(c) != "done"]
    if todo:
        open_dataset(sweep.data, verify=False)  # a missing dataset: one error now, not one per cell
    outcomes = (
        _run_here(sweep, todo, on_cell_start, on_cell_end, callbacks)
        if jobs == 1 or len(todo) <= 1
        else _run_parallel(sweep, todo, jobs, on_cell_end)
    )
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        listed = "; ".join(f"{o.cell.name}: {o.error}" for o in failed)
        raise RecmtlError(f"{len(failed)} of {len(outcomes)} cells failed ({listed})")
    return outcomes


def _run_here(
    sweep: Sweep,
    todo: list[Cell],
    on_cell_start: Callable[[Cell, int, int], None] | None,
    on_cell_end: Callable[[CellOutcome], None] | None,
    callbacks: Callable[[Cell], Callbacks] | None,
) -> list[CellOutcome]:
    outcomes = []
    for index, cell in enumerate(todo, 1):
        if on_cell_start:
            on_cell_start(cell, index, len(todo))
        start = time.perf_counter()
        error = None
        try:
            run_cell(cell, callbacks(cell) if callbacks else None)
        except RecmtlError as exc:
            error = str(exc)
        except TrainingInterrupted as exc:
            raise SweepInterrupted(sweep, [cell], TrainingInterrupted.kept(exc.last_epoch)) from None
        except KeyboardInterrupt:
            raise SweepInterrupted(sweep, [cell], "evaluation not finished; the training is kept") from None
        outcome = CellOutcome(cell, index, len(todo), time.perf_counter() - start, error)
        outcomes.append(outcome)
        if on_cell_end:
            on_cell_end(outcome)
    return outcomes


def _run_parallel(
    sweep: Sweep, todo: list[Cell], jobs: int, on_cell_end: Callable[[CellOutcome], None] | None
) -> list[CellOutcome]:
    threads = max(1, _cores() // jobs)
    executor = cf.ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    )
    futures = {executor.submit(_worker_run, cell): cell for cell in todo}
    done_count = 0
    by_name: dict[str, CellOutcome] = {}
    try:
        for future in cf.as_completed(futures):
            cell = futures[future]
            done_count += 1
            try:
                seconds, error = future.result()
            except Exception as exc:  # a bug, or a worker that died: still only this cell's failure
                seconds, error = 0.0, f"{type(exc).__name__}: {exc}"
            outcome = CellOutcome(cell, done_count, len(todo), seconds, error)
            by_name[cell.name] = outcome
            if on_cell_end:
                on_cell_end(outcome)
    except KeyboardInterrupt:
        # (a future counts as running once queued for a worker: the cells with a run directory started)
        running = [futures[f] for f in futures if not f.done() and cell_status(futures[f]) == "partial"]
        _stop(executor, [futures[f].run_dir for f in futures if not f.done()])  # (started or not)
        raise SweepInterrupted(sweep, running, "their last finished epochs are kept") from None
    executor.shutdown(wait=True)
    return [by_name[c.name] for c in todo]


def _stop(executor: cf.ProcessPoolExecutor, run_dirs: list[Path], grace_s: float = 10.0) -> None:
    """Cancel what has not started and end the workers now. A worker takes SIGTERM as :class:`_Stopped`,
    which unwinds its cell (an atomic write in progress removes its temporary file; the last checkpoint
    is whole, so the cell resumes from its last finished epoch); one still alive after ``grace_s`` (inside
    a long native call) is killed, and the temporary files it may have left in ``run_dirs`` are removed."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=grace_s)
        if process.is_alive():
            process.kill()
            process.join()
        for run_dir in run_dirs:
            remove_temporaries(run_dir, process.pid)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not on Linux)
        return os.cpu_count() or 1


class _Stopped(BaseException):
    """SIGTERM in a worker while it runs a cell (the main process ending it, :func:`_stop`). Not a
    KeyboardInterrupt, so no handler of the cell's turns it into an outcome: it unwinds the cell to
    :func:`_worker_run`. An idle worker keeps the default SIGTERM and ends at once."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _init_worker(threads: int) -> None:
    """A worker leaves Ctrl-C to the main process (which ends it) and shares the cores with the others."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _worker_run(cell: Cell) -> tuple[float, str | None]:
    """Run one cell in a worker: (seconds, one-line error or None). Stopped, the worker exits at once
    (status 128 + SIGTERM) once the cell has unwound, rather than waiting for the pool's next cell."""
    start = time.perf_counter()
    idle = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        run_cell(cell)
    except RecmtlError as exc:
        return time.perf_counter() - start, str(exc)
    except _Stopped:
        os._exit(128 + signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, idle)
    return time.perf_counter() - start, None


__all__ = ["CellOutcome", "SweepInterrupted", "cell_status", "run_cell", "run_sweep"]
