"""Fixtures for the training tests: tiny prepared synthetic datasets and quick train configs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from recmtl.config import PrepareConfig, SyntheticConfig
from recmtl.data.pipeline import prepare
from recmtl.runs import load_tensors
from recmtl.train.config import TrainConfig

#: Small enough that one epoch is a fraction of a second on 2 cores.
TINY = SyntheticConfig(users=300, items=200, interactions=6000)


def prepare_tiny(out: Path, **options: Any) -> Path:
    """Prepare the tiny synthetic dataset into ``out`` (extra PrepareConfig ``options``)."""
    prepare(PrepareConfig(source="synthetic", synthetic=TINY, min_rating=0.0, **options), out)
    return out


def quick_config(data: Path, **overrides: Any) -> TrainConfig:
    """A TrainConfig that trains in well under a second per epoch on the tiny dataset."""
    base = TrainConfig(data=data, dim=16, batch_size=256, epochs=3, lr=0.01, device="cpu")
    return dataclasses.replace(base, **overrides)


def n_steps(config: TrainConfig) -> int:
    """Steps per epoch of ``config`` (the rec training rows divided into batches)."""
    train = pl.read_parquet(Path(config.data) / "train.parquet")
    return math.ceil(train.height / config.batch_size)


def metrics_without_wall(run_dir: Path) -> pl.DataFrame:
    """metrics.parquet without the (timing) wall_s column."""
    return pl.read_parquet(run_dir / "metrics.parquet").drop("wall_s")


def assert_same_tensors(a: Path, b: Path) -> None:
    """Two checkpoints hold the same tensor names with bit-identical values (NaN where the other has NaN:
    e.g. PMTRec's norm EMA of pairs never seen)."""
    ta, _ = load_tensors(a)
    tb, _ = load_tensors(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        x, y = ta[name], tb[name]
        if x.is_floating_point() and y.is_floating_point():
            assert torch.equal(x.isnan(), y.isnan()), name
            x, y = x.nan_to_num(0.0), y.nan_to_num(0.0)
        assert torch.equal(x, y), name


class Interrupt:
    """Callbacks that raise KeyboardInterrupt at the start of ``epoch`` or at its step ``step``."""

    def __init__(self, epoch: int, step: int | None = None) -> None:
        self.epoch, self.step = epoch, step
        self.seen_epochs: list[int] = []
        self.validated: list[int] = []
        self.resumed: list[tuple[int, str]] = []  # what on_resume reported

    def on_resume(self, start_epoch: int, reason: str) -> None:
        self.resumed.append((start_epoch, reason))

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        self.seen_epochs.append(epoch)
        if epoch == self.epoch and self.step is None:
            raise KeyboardInterrupt

    def on_step(self, epoch: int, step: int) -> None:
        if epoch == self.epoch and step == self.step:
            raise KeyboardInterrupt

    def on_validate(self, epoch: int) -> None:
        self.validated.append(epoch)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        return None


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Tiny synthetic dataset with every auxiliary table (social, category, item_item) and ratings."""
    return prepare_tiny(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def social_only_data(tmp_path_factory) -> Path:
    """The same tiny dataset prepared with only the social auxiliary table."""
    return prepare_tiny(tmp_path_factory.mktemp("data") / "tiny-social", aux=("social",))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tensors here are tiny: one intra-op thread avoids OpenMP oversubscription stalls on a busy
    2-core machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
