"""Reading run directories for a comparison: config.json, metrics.json, per_user.parquet, metrics.parquet and
user_weights.parquet (optional).

A run must have been evaluated (`recmtl evaluate RUN` writes metrics.json and per_user.parquet), and all
runs of one comparison must share the data (hash) and the evaluated split: anything else is a one-line
:class:`~recmtl.errors.RecmtlError` naming the run(s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recmtl.errors import RecmtlError
from recmtl.runs import CONFIG, METRICS, USER_WEIGHTS, read_run_config

EVAL_METRICS = "metrics.json"
PER_USER = "per_user.parquet"


@dataclass(frozen=True)
class Run:
    """One evaluated run directory."""

    path: Path
    config: dict[str, Any]  # the resolved TrainConfig as saved (config.json "config")
    method: dict[str, Any]  # {name, mode, variant}
    data: dict[str, Any]  # {path, name, hash}
    split: str
    metrics: dict[str, float]  # "ndcg@20" -> mean over evaluated users (metrics.json)
    per_user: pl.DataFrame  # user_id, n_train, n_pos, one column per metric
    history: pl.DataFrame | None  # metrics.parquet (one row per epoch), None if absent
    user_weights: pl.DataFrame | None = None  # user_weights.parquet (user_id, n_train, main_weight, ...)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """``paths`` with every directory that is not itself a run (no config.json) replaced by the run
    directories directly inside it (sorted by name), e.g. ``runs/sweeps/ciao`` -> its runs."""
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RecmtlError(f"{path}: run directory not found")
        if (path / CONFIG).is_file():
            out.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if p.is_dir() and (p / CONFIG).is_file())
        if not inside:
            raise RecmtlError(
                f"{path}: neither a run directory (no {CONFIG}) nor a folder of run directories"
            )
        out += inside
    unique = list(dict.fromkeys(p.resolve() for p in out))
    return [next(p for p in out if p.resolve() == u) for u in unique]


def load_run(path: Path) -> Run:
    """Read one evaluated run directory; a one-line RecmtlError if it is not one."""
    path = Path(path)
    saved = read_run_config(path)
    metrics_path = path / EVAL_METRICS
    if not metrics_path.is_file():
        raise RecmtlError(
            f"{path}: no {EVAL_METRICS} (not evaluated yet: run `recmtl evaluate {path}` first)"
        )
    try:
        report = json.loads(metrics_path.read_text())
        metrics = {str(k): float(v) for k, v in report["metrics"].items()}
        split = str(report["split"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RecmtlError(
            f"{metrics_path}: not a metrics.json written by `recmtl evaluate` ({exc})"
        ) from None
    if not (path / PER_USER).is_file():
        raise RecmtlError(f"{path}: no {PER_USER} (run `recmtl evaluate {path}` again)")
    per_user = pl.read_parquet(path / PER_USER)
    history = pl.read_parquet(path / METRICS) if (path / METRICS).is_file() else None
    user_weights = pl.read_parquet(path / USER_WEIGHTS) if (path / USER_WEIGHTS).is_file() else None
    config = saved.get("config")
    if not isinstance(config, dict):
        raise RecmtlError(f"{path / CONFIG}: no resolved config in it")
    return Run(
        path=path,
        config=config,
        method=dict(saved.get("method") or {"name": (config.get("method") or {}).get("name", "?")}),
        data=dict(saved.get("data") or {}),
        split=split,
        metrics=metrics,
        per_user=per_user,
        history=history,
        user_weights=user_weights,
    )


def check_comparable(runs: list[Run]) -> None:
    """Refuse runs on different data (hash) or evaluated on different splits, naming two that differ."""
    first = runs[0]
    for run in runs[1:]:
        if run.data.get("hash") != first.data.get("hash"):
            raise RecmtlError(
                f"{first.path} and {run.path} were trained on different data (data hash "
                f"{str(first.data.get('hash'))[:12]} vs {str(run.data.get('hash'))[:12]}): "
                "compare runs of one dataset at a time"
            )
        if run.split != first.split:
            raise RecmtlError(
                f"{first.path} was evaluated on {first.split} but {run.path} on {run.split}: "
                f"run `recmtl evaluate --split {first.split}` on both"
            )


def load_runs(paths: list[Path]) -> list[Run]:
    """Load the runs at ``paths`` (folders of runs expanded) and check they are comparable."""
    dirs = expand_run_dirs(paths)
    if not dirs:
        raise RecmtlError("no run directories given")
    runs = [load_run(p) for p in dirs]
    check_comparable(runs)
    return runs


def train_counts(data_path: Path) -> np.ndarray | None:
    """[U] training interactions of every user of the prepared dataset at ``data_path`` (None if it is not
    there): the activity the trainer's user row groups are cut from."""
    data_path = Path(data_path)
    try:
        manifest = json.loads((data_path / "manifest.json").read_text())
        users = pl.read_parquet(data_path / "train.parquet", columns=["user_id"])["user_id"].to_numpy()
        n_users = int(manifest["counts"]["users"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError, pl.exceptions.PolarsError):
        return None
    return np.bincount(users.astype(np.int64), minlength=n_users)


def social_degrees(data_path: Path) -> np.ndarray | None:
    """[U] social out-degree (edges ``src -> dst`` from the user) of every user of the prepared dataset at
    ``data_path``; None if it is not there or has no social table."""
    data_path = Path(data_path)
    try:
        manifest = json.loads((data_path / "manifest.json").read_text())
        src = pl.read_parquet(data_path / "social.parquet", columns=["src"])["src"].to_numpy()
        n_users = int(manifest["counts"]["users"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError, pl.exceptions.PolarsError):
        return None
    return np.bincount(src.astype(np.int64), minlength=n_users)
