"""Every registered method, in every mode it supports, trains on the tiny synthetic dataset without NaN
and its run resumes bit-identically after an interruption mid-epoch (stateful methods included: their
state travels in last.safetensors).

The same check on the synthetic default and on Ciao is ``benchmarks/train_every_method.py`` (minutes).
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from safetensors import safe_open

from recmtl.aggregators import AGGREGATORS
from recmtl.train.loop import fit
from tests.train.conftest import Interrupt, assert_same_tensors, metrics_without_wall, quick_config

CASES = [
    pytest.param(name, mode, id=f"{name}-{mode}")
    for name, cls in AGGREGATORS.items()
    for mode in sorted(cls.modes)
]


@pytest.mark.parametrize("method, mode", CASES)
def test_trains_without_nan_and_resumes_bit_identically(tiny_data, tmp_path, method, mode):
    config = quick_config(tiny_data, method=method, mode=mode, aux=("social", "category"), epochs=2)
    full = fit(config, tmp_path / "full")
    tasks = ("rec",) if method == "single" else ("rec", "social", "category")  # single trains rec alone
    for record in full.history:
        assert all(math.isfinite(record[f"loss_{t}"]) for t in tasks), record
    assert math.isfinite(full.history[-1]["valid_ndcg@20"])

    run = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(config, run, callbacks=Interrupt(1, 3))
    fit(config, run, resume=True)
    assert metrics_without_wall(run).equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(run / "last.safetensors", tmp_path / "full" / "last.safetensors")

    # the run says which method, options and variant ("paper" or "per-row, ours") produced it
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["method"]["name"] == method
    assert saved["method"] == {"name": method, "mode": mode, "variant": AGGREGATORS[method]().label(mode)}
    with safe_open(run / "last.safetensors", "pt") as f:
        names = set(f.keys())
    state = AGGREGATORS[method]().init_state(3, 1, mode)
    assert {f"aggregator.{k}" for k in state} <= names


def test_weights_are_logged_for_every_task(tiny_data, tmp_path):
    """The logged per-task weights of a method that reweighs (not fixed 0/1) are finite numbers."""
    config = quick_config(tiny_data, method="pmtrec", aux=("social",), epochs=1)
    fit(config, tmp_path / "r")
    table = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    weights = [c for c in table.columns if c.startswith("weight_")]
    assert weights and all(math.isfinite(v) for c in weights for v in table[c].to_list())
