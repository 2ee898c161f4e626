"""`recmtl sweep`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import _shell
from cli._shell import comma_list, console, err_console, tune_allocator, user_errors
from cli.train import LogCallbacks, ProgressCallbacks
from recmtl.errors import RecmtlError
from recmtl.sweeps.runner import CellOutcome, SweepInterrupted, cell_status, run_sweep
from recmtl.sweeps.spec import Cell, Sweep, load_sweep

Opt = typer.Option
STATUS_WORDS = {"done": "done", "partial": "partial (resumes)", "todo": "to train"}


@user_errors
def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(metavar="SWEEP_TOML", help="The sweep file, e.g. sweeps/smoke.toml.")
    ],
    dry_run: Annotated[
        bool, Opt("--dry-run", help="List the cells and their status; train nothing.")
    ] = False,
    jobs: Annotated[
        int, Opt("--jobs", "-j", help="Cells trained at a time, each in its own process (e.g. on a GPU).")
    ] = 1,
    quiet: Annotated[bool, Opt(help="No progress bars: one log line per epoch (and per cell).")] = False,
    seeds: Annotated[
        str | None,
        Opt(
            help="Only these of the file's seeds, comma-separated (a first pass, e.g. --seeds 0; the same "
            "command without --seeds later trains the rest and skips these)."
        ),
    ] = None,
    only: Annotated[
        str | None,
        Opt(
            help="Only the cells of these [methods.LABEL] tables, comma-separated (the rest later, as with "
            "--seeds)."
        ),
    ] = None,
) -> None:
    """Train and evaluate every cell of a sweep file (methods × option grid × seeds), resumably.

    The file (TOML) gives `data`, `seeds`, the shared TrainConfig `[options]`, an optional `[grid]` of
    options to cross, and one `[methods.LABEL]` table per method with its own `options`, `grid` and `train`
    overrides. Each cell is trained into runs_dir/NAME (e.g. pmtrec-alpha=1.1-s0) and evaluated on the test
    split (metrics.json, per_user.parquet). Finished cells are skipped and an interrupted one resumes, so
    running the same command again continues a stopped sweep.

    Examples in sweeps/; the file format in docs/training.md (Sweeps).
    """
    spec = load_sweep(sweep_file)
    if seeds is not None:
        spec = spec.with_seeds(_seed_list(seeds))
    if only is not None:
        spec = spec.with_labels(tuple(comma_list(only)))
    cells = spec.cells()
    statuses = {c.name: cell_status(c) for c in cells}
    if dry_run:
        _print_cells(spec, cells, statuses)
        return
    if jobs < 1:
        raise RecmtlError(f"--jobs {jobs}: expected at least 1")
    console.print(
        f"{spec.name}: {_counts(statuses)} · runs in {spec.runs_dir}", soft_wrap=True, highlight=False
    )
    if all(s == "done" for s in statuses.values()):
        console.print("nothing to do: every cell is done", highlight=False)
        return
    tune_allocator()
    eta = _Eta(jobs)
    progress: Progress | None = None
    if not quiet and jobs == 1:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        progress = Progress(*columns, console=console, transient=True, disable=not console.is_interactive)

    def start(cell: Cell, index: int, total: int) -> None:
        verb = "resuming" if cell_status(cell) == "partial" else "training"
        _line(f"[{index}/{total}] {cell.name} · {verb}", progress)

    def end(outcome: CellOutcome) -> None:
        head = f"[{outcome.index}/{outcome.total}] {outcome.cell.name} ..."
        if outcome.error is not None:
            err_console.print(f"{head} failed: {outcome.error}", markup=False)
            return
        _line(f"{head} done in {_duration(outcome.seconds)}{eta.after(outcome)}", progress)

    def callbacks(cell: Cell) -> Any:
        metric = cell.config.select_metric
        if progress is None:
            return LogCallbacks(metric, cell.run_dir)
        return ProgressCallbacks(progress, metric, cell.run_dir)

    began = time.perf_counter()
    try:
        if progress is not None:
            with progress:
                outcomes = run_sweep(spec, jobs, on_cell_start=start, on_cell_end=end, callbacks=callbacks)
        else:
            outcomes = run_sweep(
                spec, jobs, on_cell_start=start, on_cell_end=end, callbacks=callbacks if jobs == 1 else None
            )
    except SweepInterrupted as exc:
        err_console.print(f"interrupted: {exc}", markup=False, emoji=False)
        sys.stderr.flush()
        _shell.interrupt_reported = True
        raise typer.Exit(130) from None
    total = time.perf_counter() - began
    console.print(
        f"{len(outcomes)} cells trained and evaluated in {_duration(total)}; results in {spec.runs_dir}",
        soft_wrap=True,
        highlight=False,
    )


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in comma_list(text))
    except ValueError:
        raise RecmtlError(f"--seeds {text}: expected integers separated by commas, e.g. 0,1") from None


class _Eta:
    """Time left: the mean time of the cells run so far × the cells left, shared by ``jobs`` workers."""

    def __init__(self, jobs: int) -> None:
        self.jobs, self.seconds = jobs, []

    def after(self, outcome: CellOutcome) -> str:
        self.seconds.append(outcome.seconds)
        left = outcome.total - outcome.index
        if left == 0:
            return ""
        mean = sum(self.seconds) / len(self.seconds)
        return f" · ETA {_duration(mean * left / min(self.jobs, left))}"


def _duration(seconds: float) -> str:
    """41 s, 6 min, 1 h 05 min."""
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _line(text: str, progress: Progress | None) -> None:
    target = progress.console if progress is not None else console
    target.print(text, highlight=False, soft_wrap=True, markup=False)


def _counts(statuses: dict[str, str]) -> str:
    """``12 cells: 4 done, 1 partial (resumes), 7 to train``."""
    parts = [f"{n} {STATUS_WORDS[s]}" for s in STATUS_WORDS if (n := list(statuses.values()).count(s))]
    return f"{len(statuses)} cells: " + ", ".join(parts)


def _print_cells(spec: Sweep, cells: list[Cell], statuses: dict[str, str]) -> None:
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("cell", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("varied options")
    for cell in cells:
        varied = ", ".join(f"{k}={v}" for k, v in cell.varied.items()) or "-"
        table.add_row(cell.name, STATUS_WORDS[statuses[cell.name]], varied)
    console.print(f"{spec.name} · {spec.data} · runs in {spec.runs_dir}", soft_wrap=True, highlight=False)
    console.print(table)
    console.print(_counts(statuses), highlight=False)
