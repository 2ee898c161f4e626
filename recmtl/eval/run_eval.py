"""Evaluate a trained run: load its best checkpoint, rank every user over all items, write the results.

Outputs in the run directory: ``metrics.json`` (every metric at every K, the split, the checkpoint's
sha256, the number of evaluated users) and ``per_user.parquet`` (user_id, n_train, n_pos, one column per
metric) so that comparisons can run paired tests and break results down by user activity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from recmtl.data.store import atomic_file, open_dataset, sha256_file
from recmtl.data.tensors import TrainData, split_targets
from recmtl.errors import RecmtlError
from recmtl.eval.ranking import RankingResult, rank_users
from recmtl.interrupts import deferred_interrupts
from recmtl.model import StemLayout, load_encoder
from recmtl.runs import BEST, load_tensors, read_run_config, write_json
from recmtl.tasks import TASKS


@dataclass(frozen=True)
class EvalReport:
    split: str
    ks: tuple[int, ...]
    metrics: dict[str, float]  # "ndcg@20" -> mean over evaluated users
    n_users: int
    checkpoint_sha256: str
    checkpoint_epoch: int | None
    device: str

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "ks": list(self.ks),
            "metrics": self.metrics,
            "n_users": self.n_users,
            "checkpoint": {"file": BEST, "sha256": self.checkpoint_sha256, "epoch": self.checkpoint_epoch},
            "device": self.device,
        }


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "test",
    ks: tuple[int, ...] = (10, 20, 40),
    device: torch.device | str = "cpu",
    users_chunk: int | None = None,
    write: bool = True,
    data: Path | None = None,
) -> tuple[EvalReport, RankingResult]:
    """Full-ranking evaluation of ``run_dir``'s best checkpoint on ``split``; writes the outputs unless not
    ``write``.

    The dataset is the one config.json names, or ``data`` (the same dataset elsewhere, e.g. after moving
    it): accepted only if its data hash is the run's."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    stored = saved.get("config", {}).get("data")
    if not isinstance(stored, str):
        raise RecmtlError(f"{run_dir / 'config.json'}: no data path in its config")
    data_path = Path(stored)
    checkpoint = run_dir / BEST
    if not checkpoint.is_file():
        raise RecmtlError(f"{run_dir}: no {BEST} checkpoint (the run has not finished an epoch)")
    if data is not None:
        dataset = open_dataset(data)
        if dataset.data_hash != saved.get("data", {}).get("hash"):
            raise RecmtlError(
                f"--data {data}: its data hash differs from the run's, so it is not the dataset "
                f"{run_dir} was trained on ({data_path})"
            )
    else:
        if not data_path.exists():
            raise RecmtlError(
                f"{data_path}: dataset not found (the path comes from {run_dir / 'config.json'}; "
                "if the dataset moved, pass --data DIR)"
            )
        dataset = open_dataset(data_path)
        if dataset.data_hash != saved.get("data", {}).get("hash"):
            raise RecmtlError(f"{data_path}: the data changed since {run_dir} was trained (hash mismatch)")
    tensors, meta = load_tensors(checkpoint)
    model = encoder_of_run(saved.get("config", {}), tensors, checkpoint)
    device = torch.device(device)
    data = TrainData.load(dataset, torch.device("cpu"))
    positives, exclude = split_targets(data, split)
    result = rank_users(
        model.user_embeddings(),
        model.item_embeddings(),
        positives,
        exclude,
        ks,
        users_chunk=users_chunk,
        device=device,
    )
    report = EvalReport(
        split=split,
        ks=tuple(sorted(ks)),
        metrics=result.mean(),
        n_users=result.n_users,
        checkpoint_sha256=sha256_file(checkpoint),
        checkpoint_epoch=meta.get("epoch"),
        device=str(device),
    )
    if write:
        # metrics.json last: it marks the run evaluated (a sweep's cell done), so per_user.parquet is there
        with deferred_interrupts():  # (Ctrl-C inside polars' native code could be swallowed by it)
            n_train = torch.bincount(data.train.a, minlength=data.n_users)
            frame = pl.DataFrame(
                {
                    "user_id": result.user_ids.numpy().astype("int32"),
                    "n_train": n_train[result.user_ids].numpy().astype("int32"),
                    "n_pos": result.n_pos.numpy().astype("int32"),
                }
                | {name: values.numpy() for name, values in result.per_user.items()}
            )
            with atomic_file(run_dir / "per_user.parquet") as tmp:
                frame.write_parquet(tmp)
            write_json(run_dir / "metrics.json", report.to_json())
    return report, result


def encoder_of_run(config: dict[str, Any], tensors: dict[str, torch.Tensor], checkpoint: Path) -> Any:
    """The encoder the run's config names (``encoder``, its tasks and STEM options), loaded from
    ``tensors``; a one-line RecmtlError when the checkpoint holds another encoder's tables."""
    name = config.get("encoder", "mf")
    tasks = tuple((task, TASKS[task].tables) for task in ("rec", *config.get("aux", ())))
    layout = StemLayout(
        tasks,
        shared=not config.get("stem_no_shared", False),
        stopgrad=not config.get("stem_no_stopgrad", False),
        asymmetric=bool(config.get("stem_asymmetric", False)),
    )
    try:
        return load_encoder(name, tensors, layout)
    except RecmtlError as exc:
        raise RecmtlError(f"{checkpoint}: config.json says --encoder {name}, but {exc}") from None
