"""Fixtures for the `recmtl compare` tests: hand-built run directories (no training) with fixed values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

METRICS = ("recall", "ndcg")
KS = (10, 20)
HASH = "a" * 64


def per_user_values(n_users: int, level: float, seed: int) -> dict[str, np.ndarray]:
    """Fixed per-user metric columns around ``level`` (rounded to 4 decimals, so goldens are stable)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(METRICS):
        for j, k in enumerate(KS):
            base = level * (1 + 0.5 * i + 0.25 * j)
            out[f"{name}@{k}"] = np.round(np.clip(base + rng.normal(0, 0.05, n_users), 0, 1), 4)
    return out


def make_run(
    root: Path,
    name: str,
    *,
    method: str | dict[str, Any] = "ew",
    seed: int = 0,
    level: float = 0.1,
    n_users: int = 40,
    data_hash: str = HASH,
    split: str = "test",
    epochs: int = 3,
    evaluated: bool = True,
    user_weights: bool = False,
    **config: Any,
) -> Path:
    """Write a run directory as `recmtl train` + `recmtl evaluate` would (config.json, metrics.parquet,
    metrics.json, per_user.parquet; with ``user_weights`` also user_weights.parquet: main weight
    1 - 0.1·log10(n_train) - 0.01·seed) with fixed synthetic values; the data path does not exist."""
    run = root / name
    run.mkdir(parents=True)
    table = {"name": method} if isinstance(method, str) else dict(method)
    resolved = {
        "data": "/nonexistent/data",
        "name": None,
        "aux": ["social"],
        "method": table,
        "mode": "row",
        "lr": 0.01,
        "seed": seed,
        "device": "cpu",
        "ks": list(KS),
        "eval_users_chunk": 512,
    } | config
    meta = {
        "config": resolved,
        "method": {"name": table["name"], "mode": "row", "variant": "paper"},
        "data": {"path": "/nonexistent/data", "name": "synthetic-fixed", "hash": data_hash},
    }
    (run / "config.json").write_text(json.dumps(meta))
    epochs_col = np.arange(epochs)
    weight = 1.0 if table["name"] == "ew" else 0.8
    history = {
        "epoch": epochs_col,
        "loss_rec": 0.69 - 0.01 * epochs_col,
        "weight_rec": np.full(epochs, weight),
        "weight_social": np.full(epochs, weight - 0.05 * seed),
        "valid_ndcg@20": level * (0.5 + 0.2 * epochs_col) + 0.001 * seed,
        "valid_ndcg@10": level * (0.4 + 0.2 * epochs_col),
    }
    pl.DataFrame(history).write_parquet(run / "metrics.parquet")
    if user_weights:
        n_train = np.arange(n_users) * 7 % 500 + 1
        weights = pl.DataFrame(
            {
                "user_id": np.arange(n_users),
                "n_train": n_train,
                "main_weight": 1 - 0.1 * np.log10(n_train) - 0.01 * seed,
                "main_steps": n_train,
                "epoch": np.full(n_users, epochs - 1),
            }
        )
        weights.write_parquet(run / "user_weights.parquet")
    if not evaluated:
        return run
    values = per_user_values(n_users, level, seed * 1000 + int(level * 1e4))
    n_train = np.arange(n_users) % 12 + 1
    frame = pl.DataFrame({"user_id": np.arange(n_users, dtype=np.int32), "n_train": n_train.astype(np.int32),
                          "n_pos": np.ones(n_users, dtype=np.int32)} | values)  # fmt: skip
    frame.write_parquet(run / "per_user.parquet")
    metrics = {k: float(v.mean()) for k, v in values.items()}
    report = {"split": split, "ks": list(KS), "metrics": metrics, "n_users": n_users}
    (run / "metrics.json").write_text(json.dumps(report))
    return run
