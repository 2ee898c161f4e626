"""Every registered method, in every mode it supports, on the synthetic default (datasets/synthetic.toml)
and on Ciao (``--aux social,category``, lr 0.005 as in docs/results.md): training without a non-finite
loss or metric, and a run interrupted in its second epoch resumes to bit-identical metrics and weights.

On Ciao the resume check runs where a method keeps per-row state (keyed by storage
row id, so the real row ids matter: gradvac's and pcd's per-row variants), over 2 epochs; every other
method trains 1 epoch there. Every method's resume, its global state included, is checked on the synthetic
default and on the tiny dataset (tests/train/test_every_method_trains.py). Ciao validates once, after the
last epoch. This keeps CI within its 15 minutes on 2 cores.

Ciao needs the raw files (RECMTL_SHARED_DATA, default ../shared/data); without them those cases skip.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from recmtl.aggregators import AGGREGATORS
from recmtl.data.pipeline import prepare
from recmtl.data.recipes import load_recipe
from recmtl.train.config import TrainConfig
from recmtl.train.loop import fit
from tests.conftest import ROOT, shared_dataset
from tests.train.conftest import Interrupt, assert_same_tensors, metrics_without_wall
from tests.train.test_every_method_trains import CASES


def _prepared(recipe: str, out: Path, raw: Path | None = None) -> Path:
    config = load_recipe(ROOT / "datasets" / f"{recipe}.toml").config({"raw": raw} if raw else {})
    prepare(config, out)
    return out


@pytest.fixture(scope="module")
def synthetic_default(tmp_path_factory) -> Path:
    return _prepared("synthetic", tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def ciao(tmp_path_factory) -> Path:
    raw = shared_dataset("ciao")
    return _prepared("ciao", tmp_path_factory.mktemp("data") / "ciao", raw)


def _per_row_state(method: str, mode: str) -> bool:
    """Whether the method's state in ``mode`` has a tensor whose size follows the number of storage rows."""
    aggregator = AGGREGATORS[method]()
    small, large = aggregator.init_state(3, 8, mode), aggregator.init_state(3, 9, mode)
    return any(small[k].shape != large[k].shape for k in small)


def _trains_and_resumes(
    config: TrainConfig, tmp_path: Path, interrupt_at_step: int, resume: bool = True
) -> None:
    full = fit(config, tmp_path / "full")
    active = ("rec",) if config.method.name == "single" else ("rec", *config.aux)
    for record in full.history:
        losses = {t: record[f"loss_{t}"] for t in active}
        assert all(math.isfinite(v) for v in losses.values()), (record["epoch"], losses)
    assert math.isfinite(full.history[-1]["valid_ndcg@20"])
    if not resume:
        return
    run = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(config, run, callbacks=Interrupt(1, interrupt_at_step))
    fit(config, run, resume=True)
    assert metrics_without_wall(run).equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(run / "last.safetensors", tmp_path / "full" / "last.safetensors")


@pytest.mark.parametrize("method, mode", CASES)
def test_synthetic_default(synthetic_default, tmp_path, method, mode):
    config = TrainConfig(
        data=synthetic_default, method=method, mode=mode, aux=("social", "category", "coview"), epochs=2
    )
    _trains_and_resumes(config.validate(), tmp_path, interrupt_at_step=5)


@pytest.mark.parametrize("method, mode", CASES)
def test_ciao(ciao, tmp_path, method, mode):
    resume = _per_row_state(method, mode)
    epochs = 2 if resume else 1
    config = TrainConfig(
        data=ciao,
        method=method,
        mode=mode,
        aux=("social", "category"),
        lr=0.005,
        epochs=epochs,
        eval_every=epochs,
    )
    _trains_and_resumes(config.validate(), tmp_path, interrupt_at_step=20, resume=resume)
