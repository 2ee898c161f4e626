"""Training with the PMTRec study's options and instruments: the norm EMA through checkpoints and --resume,
meet_fraction, the main task's weight by user-activity group (mean and quartiles), user_weights.parquet."""

from __future__ import annotations

import dataclasses

import pytest
from safetensors import safe_open

from recmtl.aggregators import PMTRec
from recmtl.train.loop import fit
from tests.train.conftest import Interrupt, assert_same_tensors, metrics_without_wall, quick_config

EMA = PMTRec(norm_source="ema", beta=0.8)


@pytest.mark.parametrize("step", [None, 4, "extend"], ids=["between-epochs", "mid-epoch", "extend"])
def test_ema_state_is_checkpointed_and_resume_is_bit_identical(tiny_data, tmp_path, step):
    """Interrupted in epoch 2 (between epochs or mid-epoch) and resumed, or trained 2 epochs and extended to
    3 with --resume: the same metrics and bit-identical checkpoints as the straight 3-epoch run."""
    config = quick_config(tiny_data, method=EMA, aux=("social", "category"), epochs=3, aux_sampling="aligned")
    fit(config, tmp_path / "full")
    with safe_open(str(tmp_path / "full" / "last.safetensors"), framework="pt") as fh:
        ema = fh.get_tensor("aggregator.norm_ema")
    assert ema.shape == (300 + 200, 3)
    assert (~ema.isnan()).any(dim=1).float().mean() > 0.5  # most rows seen; NaN where never
    assert ema.isnan().any()

    run = tmp_path / "cut"
    if step == "extend":
        fit(dataclasses.replace(config, epochs=2), run)
    else:
        with pytest.raises(KeyboardInterrupt):
            fit(config, run, callbacks=Interrupt(2, step))
    fit(config, run, resume=True)
    assert metrics_without_wall(run).equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(run / "last.safetensors", tmp_path / "full" / "last.safetensors")
    assert_same_tensors(run / "best.safetensors", tmp_path / "full" / "best.safetensors")


def test_ema_changes_training_and_step_is_the_default(tiny_data, tmp_path):
    base = quick_config(tiny_data, aux=("social",), epochs=1)
    step = fit(base, tmp_path / "step").history[0]
    ema = fit(quick_config(tiny_data, aux=("social",), epochs=1, method=EMA), tmp_path / "ema").history[0]
    assert step["loss_rec"] != ema["loss_rec"]
    assert 0 < ema["weight_rec"] < 1
