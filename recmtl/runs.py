"""The run directory ``runs/<name>/`` and its checkpoints.

```
config.json        resolved TrainConfig, data path + hash, package versions + source commit, device, back end
metrics.parquet    one row per epoch: loss_<task>, weight_<task>, meet_fraction, main_weight_*@<group>,
                   valid_<metric>@K, wall_s, best
user_weights.parquet  per user, the last finished epoch: n_train, mean main-task weight, steps it was touched
best.safetensors   model tensors of the best validation epoch (metadata: epoch, metric, value)
last.safetensors   model + optimiser moments + sampler RNG of the last finished epoch; its metadata holds
                   the loop state as JSON (epoch, Adam step counts, early-stopping state, history), so one
                   atomic file is the whole resumable state
metrics.json       written by `recmtl evaluate` (plus per_user.parquet)
```
Checkpoints are safetensors: loading them never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from recmtl.data.store import atomic_file, atomic_write_text
from recmtl.errors import RecmtlError

CONFIG = "config.json"
METRICS = "metrics.parquet"
USER_WEIGHTS = "user_weights.parquet"
BEST = "best.safetensors"
LAST = "last.safetensors"
STATE_KEY = "recmtl_state"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write ``tensors`` (made contiguous, on CPU) with ``meta`` stored as JSON metadata."""
    path = Path(path)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(cpu, str(tmp), metadata={STATE_KEY: json.dumps(meta)})


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_tensors`; a bad file is a one-line RecmtlError."""
    path = Path(path)
    if not path.is_file():
        raise RecmtlError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (not a dict)
            meta = json.loads((fh.metadata() or {}).get(STATE_KEY, "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as exc:
        raise RecmtlError(f"{path}: not a readable recmtl checkpoint ({exc})") from None
    return tensors, meta


def checkpoint_epoch(path: Path) -> int:
    """The last finished epoch a resumable checkpoint (last.safetensors) holds, read from its metadata
    alone; -1 if there is no readable checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return int(json.loads((fh.metadata() or {})[STATE_KEY])["loop"]["epoch"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        return -1


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run directory, or a one-line error saying why ``run_dir`` is not a run."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise RecmtlError(f"{run_dir}: run directory not found")
    if not path.is_file():
        raise RecmtlError(f"{run_dir}: no {CONFIG} (not a recmtl run directory)")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecmtlError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(saved.get("config"), dict):
        saved["config"] = ADDED_OPTIONS | upgrade_train_config(saved["config"])
    return saved


#: TrainConfig options added since runs were first written, with the value that gives what those runs did:
#: a config.json without them reads as if it had them, so its run resumes, evaluates and groups as before.
ADDED_OPTIONS: dict[str, Any] = {
    "encoder": "mf",
    "stem_dim": None,
    "stem_asymmetric": False,
    "stem_no_stopgrad": False,
    "stem_no_shared": False,
    "aux_sampling": "independent",
}


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.parquet atomically from the per-epoch records."""
    with atomic_file(Path(run_dir) / METRICS) as tmp:
        pl.DataFrame(history).write_parquet(tmp)


def write_user_weights(run_dir: Path, frame: pl.DataFrame) -> None:
    """Rewrite user_weights.parquet atomically."""
    with atomic_file(Path(run_dir) / USER_WEIGHTS) as tmp:
        frame.write_parquet(tmp)


def upgrade_train_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig table as recmtl 0.1 saved it (PMTRec's options flat beside the method name) in
    today's form (the options inside the method's table); anything else is returned unchanged."""
    flat = ("alpha", "tau", "combine", "focus")
    if not isinstance(saved.get("method"), str) or not any(k in saved for k in flat):
        return saved
    out = {k: v for k, v in saved.items() if k not in flat}
    if saved["method"] == "pmtrec":
        out["method"] = {"name": "pmtrec"} | {k: saved[k] for k in flat if k in saved}
    return out
