"""`recmtl train` and `recmtl evaluate`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli._shell import comma_list, console, tune_allocator, user_errors
from cli.options import config_options
from cli.render import metrics_table
from recmtl.config import build, read_toml
from recmtl.errors import ConfigError
from recmtl.eval.run_eval import evaluate_run
from recmtl.runs import read_run_config
from recmtl.train.config import TrainConfig
from recmtl.train.loop import fit, resolve_device

Opt = typer.Option
DATA_HELP = {f.name: f for f in dataclasses.fields(TrainConfig)}["data"].metadata["help"]


def epoch_summary(record: dict[str, Any], metric: str) -> str:
    """One line per epoch: losses per task, the validation metric (* = new best), wall time."""
    parts = [f"epoch {record['epoch']:>3}"]
    parts += [f"{k[5:]} {v:.4f}" for k, v in record.items() if k.startswith("loss_") and v == v]
    if f"valid_{metric}" in record:
        parts.append(f"valid {metric} {record[f'valid_{metric}']:.4f}{' *' if record['best'] else ''}")
    parts.append(f"{record['wall_s']:.1f}s")
    return " · ".join(parts)


class ProgressCallbacks:
    """A transient rich progress bar over the current epoch's steps, and one summary line per epoch."""

    def __init__(self, progress: Progress, select_metric: str, run_dir: Path) -> None:
        self.progress = progress
        self.metric = select_metric
        self.run_dir = run_dir
        self.task_id: Any = None

    def on_resume(self, start_epoch: int, reason: str) -> None:
        line = LogCallbacks.resume_line(self.run_dir, start_epoch, reason)
        self.progress.console.print(line, highlight=False, soft_wrap=True, markup=False)

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        if self.task_id is not None:
            self.progress.remove_task(self.task_id)
        self.task_id = self.progress.add_task(f"epoch {epoch}", total=n_steps)

    def on_step(self, epoch: int, step: int) -> None:
        self.progress.advance(self.task_id)

    def on_validate(self, epoch: int) -> None:
        self.progress.update(self.task_id, description=f"epoch {epoch} · validating (full ranking)")

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.progress.console.print(epoch_summary(record, self.metric), highlight=False, soft_wrap=True)


class LogCallbacks:
    """--quiet: one plain line per epoch, for logs."""

    def __init__(self, select_metric: str, run_dir: Path) -> None:
        self.metric = select_metric
        self.run_dir = run_dir

    @staticmethod
    def resume_line(run_dir: Path, start_epoch: int, reason: str) -> str:
        """Where a resumed run restarts: ``resuming runs/x at epoch 3 (epochs 0-2 kept)``."""
        if start_epoch == 0:
            return f"resuming {run_dir} from epoch 0: {reason}"
        return f"resuming {run_dir} at epoch {start_epoch} ({reason})"

    def on_resume(self, start_epoch: int, reason: str) -> None:
        print(self.resume_line(self.run_dir, start_epoch, reason), flush=True)

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        return None

    def on_step(self, epoch: int, step: int) -> None:
        return None

    def on_validate(self, epoch: int) -> None:
        return None

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        print(epoch_summary(record, self.metric), flush=True)


def _default_name(config: TrainConfig, runs_dir: Path) -> str:
    """DATA-METHOD-AUX-sSEED, or the first of its -2, -3, ... variants with no directory in ``runs_dir``."""
    aux = "+".join(config.aux) if config.aux else "noaux"
    base = f"{config.data.name}-{config.method.name}-{aux}-s{config.seed}"
    name, n = base, 1
    while (runs_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def parse_method_options(items: list[str]) -> dict[str, str]:
    """``["alpha=1.2", "tau=0.5"]`` -> {"alpha": "1.2", "tau": "0.5"} (values converted later, per method)."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--method-opt {item!r}: expected KEY=VALUE, e.g. --method-opt tau=0.5")
        options[key.strip()] = value.strip()
    return options


@user_errors
@config_options(TrainConfig, skip=("data",))
def train(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="DATA_DIR",
            help=f"{DATA_HELP} Required, unless --resume or a --config file with `data` gives it.",
            show_default=False,
        ),
    ] = None,
    method_opt: Annotated[
        list[str] | None,
        Opt(
            "--method-opt",
            metavar="KEY=VALUE",
            help="A hyper-parameter of the chosen --method, repeatable (e.g. --method-opt alpha=1.2 "
            "--method-opt tau=0.5); `recmtl methods` lists each method's options.",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        Opt(
            "--config",
            help="TOML file with any of these options (method options in a [method] table); "
            "flags override it.",
        ),
    ] = None,
    runs_dir: Annotated[Path, Opt(help="Where run directories are created.")] = Path("runs"),
    resume: Annotated[
        Path | None, Opt(help="Continue the interrupted run in this directory (same options).")
    ] = None,
    quiet: Annotated[bool, Opt(help="No progress bars: one log line per epoch.")] = False,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train a recommender (MF or STEM) with auxiliary tasks and a gradient-aggregation method.

    Per step, every task's gradient on the touched user/item rows is computed, the rows de-duplicated and
    the tasks' gradients combined by the method (PMTRec: Task Focusing + Gradient Magnitude Balancing),
    then a row-sparse Adam update. Validation every epoch with early stopping; writes runs/NAME/ with
    config.json, metrics.parquet, best.safetensors and a resumable last.safetensors.

    Methods and their options: `recmtl methods`.
    """
    overrides = dict(overrides or {})
    if method_opt:
        name = overrides.pop("method", None)
        overrides["method"] = ({"name": name} if name else {}) | parse_method_options(method_opt)
    if data_dir is not None:
        overrides["data"] = data_dir
    if resume is not None:
        saved = read_run_config(resume).get("config", {})
        base = build(TrainConfig, saved, where=f"{resume}/config.json")
        config = build(TrainConfig, overrides, base=base, where="command line")
        run_dir = resume
    else:
        base = build(TrainConfig, read_toml(config_file), where=str(config_file)) if config_file else None
        config = build(TrainConfig, overrides, base=base, where="command line")
        if "data" not in overrides and base is None:
            raise ConfigError("missing DATA_DIR: the prepared dataset to train on (e.g. data/synthetic)")
        run_dir = runs_dir / (config.name or _default_name(config, runs_dir))
    config = config.validate()
    tune_allocator()
    if quiet:
        callbacks = LogCallbacks(config.select_metric, run_dir)
        result = fit(config, run_dir, resume=resume is not None, callbacks=callbacks)
    else:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        # (not on a non-interactive console: a bar that cannot be drawn only leaves a blank line behind)
        with Progress(
            *columns, console=console, transient=True, disable=not console.is_interactive
        ) as progress:
            result = fit(
                config,
                run_dir,
                resume=resume is not None,
                callbacks=ProgressCallbacks(progress, config.select_metric, run_dir),
            )
    how = "stopped early" if result.stopped_early else "finished"
    console.print(
        f"{how}: best valid {config.select_metric} {result.best_value:.4f} at epoch {result.best_epoch}"
    )
    console.print(f"run directory: {run_dir}", soft_wrap=True)


@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by recmtl train.")],
    split: Annotated[str, Opt(help="test (mask train + valid items) or valid (mask train items).")] = "test",
    k: Annotated[str, Opt("--k", help="Cut-offs K, comma-separated.")] = "10,20,40",
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    users_chunk: Annotated[
        int | None, Opt(help="Users scored at a time (default: ~128 MB of scores).")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="Print machine-readable JSON instead of a table.")] = False,
    data: Annotated[
        Path | None,
        Opt(
            "--data",
            help="The run's dataset at another place (default: the path in the run's config.json); "
            "accepted only if its data hash is the run's.",
        ),
    ] = None,
) -> None:
    """Full-ranking top-K evaluation of a run's best checkpoint over all items.

    Every user with at least one positive in the split is ranked against every item, after masking the
    items seen in training (and validation, for test). Writes metrics.json and per_user.parquet into the
    run directory.
    """
    try:
        ks = tuple(int(x) for x in comma_list(k))
    except ValueError:
        raise ConfigError(f"--k {k!r}: expected comma-separated whole numbers like 10,20,40") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k {k!r}: expected positive cut-offs")
    if users_chunk is not None and users_chunk < 1:
        raise ConfigError(f"--users-chunk {users_chunk}: expected at least 1")
    tune_allocator()
    report, _ = evaluate_run(
        run_dir, split=split, ks=ks, device=resolve_device(device), users_chunk=users_chunk, data=data
    )
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        # the heading on its own line: a table title would wrap at the (narrow) table's width
        console.print(f"{run_dir} · {split} · {report.n_users:,} users", soft_wrap=True, highlight=False)
        console.print(metrics_table(report.metrics, report.ks))
        console.print(f"wrote {run_dir / 'metrics.json'} and {run_dir / 'per_user.parquet'}", soft_wrap=True)
