"""The training loop: epochs, validation, early stopping, checkpoints, resume (EVALUATION.md protocol).

``fit`` trains one run into its run directory. Randomness comes from one ``torch.Generator`` re-seeded at
the start of every epoch from (seed, epoch), so an interrupted run resumed from its last checkpoint draws
exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from recmtl.aggregators import State
from recmtl.config import to_jsonable
from recmtl.data.store import PreparedDataset, open_dataset
from recmtl.data.tensors import TrainData, split_targets
from recmtl.errors import ConfigError, RecmtlError, TrainingInterrupted
from recmtl.eval.ranking import rank_users
from recmtl.interrupts import deferred_interrupts
from recmtl.kernels import KernelUnavailable, resolve_backend
from recmtl.model import StemLayout, create_encoder
from recmtl.model.base import Encoder, entity_of
from recmtl.provenance import package_versions
from recmtl.runs import (
    BEST,
    CONFIG,
    LAST,
    checkpoint_epoch,
    load_tensors,
    read_run_config,
    save_tensors,
    write_json,
    write_metrics,
    write_user_weights,
)
from recmtl.tasks import TaskOptions, build_tasks
from recmtl.train.config import TrainConfig, flag
from recmtl.train.instruments import ROW_GROUPS, USER_GROUPS, EpochInstruments
from recmtl.train.row_adam import RowAdam
from recmtl.train.step import RowWorkspace, StepPlan, train_step


class Callbacks(Protocol):
    """What the loop reports while it runs (the CLI draws progress bars from it)."""

    def on_resume(self, start_epoch: int, reason: str) -> None:
        """A resumed run continues at ``start_epoch``; ``reason`` says what was kept ("epochs 0-2 kept",
        "no epoch had finished"), and whether the run had already ended."""

    def on_epoch_start(self, epoch: int, n_steps: int) -> None: ...
    def on_step(self, epoch: int, step: int) -> None: ...
    def on_validate(self, epoch: int) -> None:
        """The epoch's steps are done and the full-ranking validation starts (it takes a while)."""

    def on_epoch_end(self, record: dict[str, Any]) -> None: ...


class NoCallbacks:
    def on_resume(self, start_epoch: int, reason: str) -> None:
        return None

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        return None

    def on_step(self, epoch: int, step: int) -> None:
        return None

    def on_validate(self, epoch: int) -> None:
        return None

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        return None


class TrainingDiverged(RecmtlError):
    """A task's loss became NaN or inf."""


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_value: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecmtlError("--device cuda requested but CUDA is not available (use --device cpu or auto)")
    return torch.device(name)


#: A task loss whose magnitude exceeds this many times its value at the epoch's first step (at least 1) has
#: diverged: training stops as for a NaN loss. Legitimate losses stay far below (BPR starts at ln 2).
DIVERGED = 1e4


def row_groups(
    data: TrainData, device: torch.device, tables: Sequence[str] = ("user", "item")
) -> torch.Tensor:
    """[N] group id (index into ROW_GROUPS) of every embedding row of the storage whose ``tables`` (in
    storage order; ``user...`` tables hold users, ``item...`` ones items) are given."""
    activity = user_activity(data).to(torch.float64)
    q1, q2 = torch.quantile(
        activity, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64, device=activity.device)
    )
    users = 1 + (activity > q1).long() + (activity > q2).long()
    items = torch.zeros(data.n_items, dtype=torch.long, device=users.device)
    of = {"user": users, "item": items}
    return torch.cat([of[entity_of(name)] for name in tables]).to(device)


def user_activity(data: TrainData) -> torch.Tensor:
    """[n_users] training interactions of every user."""
    return torch.bincount(data.train.a, minlength=data.n_users)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def kernel_backend(config: TrainConfig, device: torch.device) -> str:
    """The row update's back end for ``--fused-update`` on ``device``: "triton" or "torch" (ConfigError for
    ``on`` where the Triton kernels cannot run)."""
    request = {"auto": "auto", "on": "triton", "off": "torch"}[config.fused_update]
    try:
        return resolve_backend(request, device)
    except KernelUnavailable as exc:
        raise ConfigError(
            f"{flag('fused_update')} on: {exc} (use {flag('fused_update')} auto or off)"
        ) from None


def run_metadata(config: TrainConfig, dataset: PreparedDataset, device: torch.device) -> dict[str, Any]:
    """What config.json records: every resolved option, the data identity, versions, device and the row
    update's back end (``kernel_backend``).

    The data path is stored absolute (``config.data`` and ``data.path``), so the run can be evaluated or
    resumed from any working directory."""
    data = {"path": str(Path(dataset.root).resolve()), "name": dataset.manifest.get("name")}
    return {
        "config": to_jsonable(config) | {"data": str(Path(config.data).resolve())},
        "method": {
            "name": config.method.name,
            "mode": config.mode,
            "variant": config.method.label(config.mode),
        },
        "data": data | {"hash": dataset.data_hash},
        "versions": package_versions(),
        "device": str(device),
        "kernel_backend": kernel_backend(config, device),
    }


def _compare_configs(saved: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume with an option (or a method option) other than the one the run was started with.

    An option the saved config lacks (added to recmtl after the run started) matches its default.
    Only ``epochs`` may grow: a larger ``--epochs`` extends a finished or interrupted run. A relative data
    path (saved by earlier versions) is compared resolved against the working directory."""

    def shown(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    found: list[tuple[str, Any, Any]] = []  # (option, saved value, new value)
    defaults = to_jsonable(TrainConfig())
    for key in sorted(set(saved) | set(new)):
        old, now = saved.get(key), new.get(key)
        if key in ("device", "fused_update") or old == now:  # how to compute, not what
            continue
        if key not in saved and key in defaults and now == defaults[key]:
            continue  # an option added after the run started: the run had its default's behaviour
        if key == "epochs" and isinstance(old, int) and isinstance(now, int) and now > old:
            continue  # extending the run
        if key == "data" and old and now and Path(old).resolve() == Path(now).resolve():
            continue
        if key == "method" and isinstance(old, dict) and isinstance(now, dict):
            if old.get("name") != now.get("name"):
                found.append(("--method", old.get("name"), now.get("name")))
            options = sorted(set(old) - {"name"})
            found += [(f"--method-opt {k}", old[k], now.get(k)) for k in options if old[k] != now.get(k)]
        else:
            found.append((flag(key), old, now))
    if found:
        option, old, now = found[0]
        hint = "start a new run to change it"
        if option == "--epochs":
            hint = "only a larger --epochs may extend a run"
        raise RecmtlError(
            f"--resume {run_dir}: option {option} is {shown(now)} but the run was started with "
            f"{shown(old)} ({hint})"
        )


def fit(
    config: TrainConfig, run_dir: Path, *, resume: bool = False, callbacks: Callbacks | None = None
) -> FitResult:
    """Train ``config`` into ``run_dir`` (new), or continue it (``resume``) from its last checkpoint."""
    callbacks = callbacks or NoCallbacks()
    config = config.validate()
    run_dir = Path(run_dir)
    device = resolve_device(config.device)
    dataset = open_dataset(config.data)
    meta = run_metadata(config, dataset, device)
    if resume:
        saved = read_run_config(run_dir)
        _compare_configs(saved.get("config", {}), meta["config"], run_dir)
        if saved.get("data", {}).get("hash") != meta["data"]["hash"]:
            raise RecmtlError(f"--resume {run_dir}: the data in {config.data} differs from the run's data")
        if saved.get("config", {}).get("epochs") != config.epochs:  # extended with a larger --epochs
            write_json(run_dir / CONFIG, saved | {"config": meta["config"]})
    elif (run_dir / CONFIG).exists():
        raise RecmtlError(f"{run_dir}: run directory exists (use --resume to continue it, or another --name)")
    elif run_dir.exists() and not run_dir.is_dir():
        raise RecmtlError(f"{run_dir}: is a file, not a run directory (choose another --name or --runs-dir)")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RecmtlError(
            f"{run_dir}: directory exists, is not empty and has no {CONFIG} (not a recmtl run directory); "
            "choose another --name or --runs-dir"
        )

    data = TrainData.load(dataset, device)
    model, plan = build_training(config, data, device)  # fails on a missing table before any training
    loop = {"epoch": -1, "best_epoch": -1, "best_value": -math.inf, "bad_evals": 0, "history": []}
    agg_state = plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0], config.mode)
    if resume and (run_dir / LAST).is_file():
        loop, agg_state = _restore(run_dir, model, plan, agg_state)
        # last.safetensors is written before metrics.parquet: after a crash between the two the table is
        # an epoch short, and the checkpoint's history is the complete one
        with deferred_interrupts():
            write_metrics(run_dir, loop["history"])
    elif not resume:  # (a run interrupted before its first epoch ended has nothing to restore)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, meta)

    valid = split_targets(data, "valid")
    generator = torch.Generator(device=device)
    stopped_early = loop["bad_evals"] >= config.patience  # a run that had stopped early trains no further
    first = config.epochs if stopped_early else loop["epoch"] + 1
    if resume:
        reason = TrainingInterrupted.kept(loop["epoch"])
        if stopped_early or first >= config.epochs:
            reason += "; the run had stopped early" if stopped_early else "; the run had finished"
        callbacks.on_resume(loop["epoch"] + 1, reason)
    try:
        for epoch in range(first, config.epochs):
            start = time.perf_counter()
            generator.manual_seed(epoch_seed(config.seed, epoch))
            instruments = EpochInstruments(data.n_users, plan.row_groups, USER_GROUPS, device)
            record, agg_state = run_epoch(
                model, plan, data, config, epoch, generator, agg_state, callbacks, instruments
            )
            if "error" in record:
                kept = (
                    f"the last good checkpoint (epoch {loop['epoch']}) is kept in {run_dir / LAST}"
                    if loop["epoch"] >= 0
                    else "no epoch had finished, so no checkpoint was written"
                )
                raise TrainingDiverged(f"{record['error']}; {kept}")
            improved = False
            if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
                callbacks.on_validate(epoch)
                record |= {f"valid_{k}": v for k, v in validate(model, valid, config, device).items()}
                value = record[f"valid_{config.select_metric}"]
                improved = value > loop["best_value"]
                if improved:
                    loop["best_value"], loop["best_epoch"], loop["bad_evals"] = value, epoch, 0
                else:
                    loop["bad_evals"] += 1
            record["best"] = improved
            record["wall_s"] = time.perf_counter() - start
            loop["epoch"] = epoch
            loop["history"].append(record)
            with deferred_interrupts():  # (Ctrl-C inside polars' native code could be swallowed by it)
                if improved:
                    best_meta = {"epoch": epoch, "metric": config.select_metric, "value": loop["best_value"]}
                    save_tensors(run_dir / BEST, model.state_tensors(), best_meta)
                # (before last.safetensors: a crash in between reruns this epoch, which rewrites it)
                write_user_weights(run_dir, instruments.user_frame(user_activity(data), epoch))
                _save_last(run_dir, model, plan, loop, agg_state)
                write_metrics(run_dir, loop["history"])  # (a resume rewrites it if this write is cut short)
            callbacks.on_epoch_end(record)
            if loop["bad_evals"] >= config.patience:
                stopped_early = True
                break
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        # what is kept is what a resume continues from: the checkpoint on disk, whenever Ctrl-C came
        raise TrainingInterrupted(run_dir, checkpoint_epoch(run_dir / LAST)) from None
    return FitResult(run_dir, loop["best_epoch"], loop["best_value"], loop["history"], stopped_early)


def stem_layout(config: TrainConfig, tasks: Sequence[tuple[str, tuple[str, ...]]]) -> StemLayout:
    """The STEM tables and options of ``config`` for ``tasks`` ((name, entities), main task first)."""
    return StemLayout(
        tuple(tasks),
        shared=not config.stem_no_shared,
        stopgrad=not config.stem_no_stopgrad,
        asymmetric=config.stem_asymmetric,
    )


def build_training(config: TrainConfig, data: TrainData, device: torch.device) -> tuple[Encoder, StepPlan]:
    """The model (seeded init, task-private parameters) and the step plan for ``config`` on ``data``."""
    options = TaskOptions(
        batch_size=config.aux_batch_size or config.batch_size,
        negatives=config.negatives,
        init_std=config.init_std,
        sampling=config.aux_sampling,
    )
    tasks = build_tasks(config.aux, data, options)
    init_gen = torch.Generator().manual_seed(config.seed)
    model = create_encoder(
        config.encoder,
        n_users=data.n_users,
        n_items=data.n_items,
        dim=config.dim,
        init=config.init,
        init_std=config.init_std,
        seed=config.seed,
        layout=stem_layout(config, [(task.name, task.tables) for task in tasks]),
    )
    for task in tasks:
        model.private |= {f"{task.name}.{k}": v for k, v in task.init_private(config.dim, init_gen).items()}
    model = model.to(device)
    private_opt = torch.optim.Adam(list(model.private.values()), lr=config.lr) if model.private else None
    row_adam = RowAdam.wrap(model.weight, config.lr)
    model.weight = row_adam.param  # the optimiser owns the storage; the model sees its value view
    plan = StepPlan(
        tasks=tasks,
        aggregator=config.method,
        mode=config.mode,
        fixed_weights=config.method.fixed_task_weights(len(tasks)),
        private_optimizer=private_opt,
        row_adam=row_adam,
        workspace=RowWorkspace(model.weight.shape[0], device),
        row_groups=row_groups(data, device, list(model.table_rows)),
        n_groups=len(ROW_GROUPS),
        tables=model.table_rows,
        backend=kernel_backend(config, device),
    )
    return model, plan


def run_epoch(
    model: Encoder,
    plan: StepPlan,
    data: TrainData,
    config: TrainConfig,
    epoch: int,
    generator: torch.Generator,
    agg_state: State,
    callbacks: Callbacks,
    instruments: EpochInstruments | None = None,
) -> tuple[dict[str, Any], State]:
    """One pass over the shuffled training pairs. Returns the epoch's record (mean loss and mean logged
    weight per task and per user-activity group, the ``instruments``' columns; an ``error`` entry if a loss
    became NaN or inf or grew beyond ``DIVERGED`` times its value at the epoch's first step) and the
    aggregator state. ``instruments`` (a fresh one when None) accumulates the epoch's instruments."""
    device = model.weight.device
    if instruments is None:
        instruments = EpochInstruments(data.n_users, plan.row_groups, USER_GROUPS, device)
    n_train, n_tasks = len(data.train), plan.n_tasks
    n_steps = math.ceil(n_train / config.batch_size)
    callbacks.on_epoch_start(epoch, n_steps)
    order = torch.randperm(n_train, generator=generator, device=device)
    loss_sum = torch.zeros(n_tasks, device=device)
    weight_sum = torch.zeros(plan.n_groups, n_tasks, device=device)
    weight_count = torch.zeros(plan.n_groups, n_tasks, device=device)
    # per task: the first step whose loss is not finite or beyond DIVERGED × the epoch's first loss (no
    # sync inside the loop), that loss, and the bound it broke
    first_bad = torch.full((n_tasks,), -1, dtype=torch.long, device=device)
    bad_loss = torch.zeros(n_tasks, device=device)
    bound = torch.full((n_tasks,), math.inf, device=device)
    for step in range(n_steps):
        idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        out = train_step(model, plan, data.train.a[idx], data.train.b[idx], generator, epoch, step, agg_state)
        agg_state = out.state
        loss_sum += out.losses
        weight_sum += out.weight_sum
        weight_count += out.weight_count
        if out.rows is not None and out.present is not None:
            instruments.add(out.rows, out.present, out.logged)
        if step == 0:
            bound = DIVERGED * out.losses.abs().clamp(min=1.0).nan_to_num(nan=math.inf)
        bad = (~torch.isfinite(out.losses) | (out.losses.abs() > bound)) & (first_bad < 0)
        first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
        bad_loss = torch.where(bad, out.losses, bad_loss)
        callbacks.on_step(epoch, step)

    names = [t.name for t in plan.tasks]
    record: dict[str, Any] = {"epoch": epoch}
    bad = [(int(s), names[t], float(bad_loss[t])) for t, s in enumerate(first_bad.tolist()) if s >= 0]
    if bad:
        step = min(bad)[0]
        culprits = [(name, loss) for s, name, loss in bad if s == step]
        what = "became NaN or inf" if not all(math.isfinite(v) for _, v in culprits) else "exploded"
        tasks = ", ".join(name for name, _ in culprits)
        values = ", ".join(f"{name} {loss:.3g}" for name, loss in culprits)
        record["error"] = (
            f"loss of task {tasks} {what} at epoch {epoch}, step {step} ({values}): "
            f"training diverged; lower --lr (now {config.lr:g})"
        )
        return record, agg_state
    active = set(plan.active_tasks)

    def mean(total: torch.Tensor, count: torch.Tensor) -> float:
        return float(total) / float(count) if float(count) else float("nan")

    for t, name in enumerate(names):
        # tasks a fixed-weight method never trains (``single``'s auxiliaries) have no loss to report
        record[f"loss_{name}"] = float(loss_sum[t]) / n_steps if t in active else float("nan")
        record[f"weight_{name}"] = mean(weight_sum[:, t].sum(), weight_count[:, t].sum())
        for g, group in enumerate(ROW_GROUPS):
            if group != "items":
                record[f"weight_{name}@{group}"] = mean(weight_sum[g, t], weight_count[g, t])
    record |= instruments.record()
    return record, agg_state


def validate(model: Encoder, valid: tuple, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Mean full-ranking metrics on the validation split (train items masked)."""
    positives, exclude = valid
    result = rank_users(
        model.user_embeddings().contiguous(),
        model.item_embeddings().contiguous(),
        positives,
        exclude,
        config.ks,
        users_chunk=config.eval_users_chunk,
        device=device,
    )
    return result.mean()


#: Prefix of the aggregator's state tensors in last.safetensors.
AGG_STATE = "aggregator."


def _save_last(run_dir: Path, model: Encoder, plan: StepPlan, loop: dict[str, Any], agg_state: State) -> None:
    """One atomic file with everything a resume needs: model, both optimisers' state, the aggregator's
    state, the loop state.

    (The sampling generator needs no saving: it is re-seeded from (seed, epoch) at every epoch start.)
    """
    tensors = dict(model.state_tensors())
    tensors["adam.exp_avg"], tensors["adam.exp_avg_sq"] = plan.row_adam.exp_avg, plan.row_adam.exp_avg_sq
    tensors |= {AGG_STATE + name: value for name, value in agg_state.items()}
    opt_meta: dict[str, Any] = {"row_adam_steps": plan.row_adam.steps, "private_adam_steps": {}}
    if plan.private_optimizer is not None:
        params = plan.private_optimizer.param_groups[0]["params"]
        for name, p in zip(model.private, params, strict=True):
            state = plan.private_optimizer.state.get(p, {})
            if state:
                tensors[f"private_adam.exp_avg.{name}"] = state["exp_avg"]
                tensors[f"private_adam.exp_avg_sq.{name}"] = state["exp_avg_sq"]
                opt_meta["private_adam_steps"][name] = float(state["step"])
    meta = {
        "loop": loop,
        "optim": opt_meta,
        "rng": "torch.Generator re-seeded per epoch by epoch_seed(seed, epoch)",
    }
    save_tensors(run_dir / LAST, tensors, meta)


def _restore(run_dir: Path, model: Encoder, plan: StepPlan, agg_state: State) -> tuple[dict[str, Any], State]:
    """Load last.safetensors into ``model`` and ``plan``'s optimisers in place; return the loop state and
    the aggregator's state (``agg_state``, its initial state, gives the names and shapes expected)."""
    tensors, meta = load_tensors(run_dir / LAST)
    device = model.weight.device
    saved = {k.removeprefix(AGG_STATE): v for k, v in tensors.items() if k.startswith(AGG_STATE)}
    expected = {name: tuple(value.shape) for name, value in agg_state.items()}
    if {name: tuple(value.shape) for name, value in saved.items()} != expected:
        raise RecmtlError(
            f"{run_dir / LAST}: the aggregator state saved there ({', '.join(sorted(saved)) or 'none'}) "
            f"is not what {plan.aggregator.name} keeps ({', '.join(sorted(expected)) or 'none'})"
        )
    with torch.no_grad():
        for name, table in model.tables.items():
            table.copy_(tensors[f"table.{name}"].to(device))
        plan.row_adam.exp_avg.copy_(tensors["adam.exp_avg"].to(device))
        plan.row_adam.exp_avg_sq.copy_(tensors["adam.exp_avg_sq"].to(device))
        for name, param in model.private.items():
            param.copy_(tensors[f"private.{name}"].to(device))
    plan.row_adam.steps = int(meta["optim"]["row_adam_steps"])
    if plan.private_optimizer is not None:
        params = plan.private_optimizer.param_groups[0]["params"]
        for name, p in zip(model.private, params, strict=True):
            step = meta["optim"]["private_adam_steps"].get(name)
            if step is not None:
                plan.private_optimizer.state[p] = {
                    "step": torch.tensor(step),
                    "exp_avg": tensors[f"private_adam.exp_avg.{name}"].to(device),
                    "exp_avg_sq": tensors[f"private_adam.exp_avg_sq.{name}"].to(device),
                }
    return meta["loop"], {name: saved[name].to(device) for name in agg_state}
