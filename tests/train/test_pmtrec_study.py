"""Training with the PMTRec study's options and instruments: the norm EMA through checkpoints and --resume,
meet_fraction, the main task's weight by user-activity group (mean and quartiles), user_weights.parquet."""

from __future__ import annotations

import dataclasses
import math

import polars as pl
import pytest
import torch
from safetensors import safe_open

from recmtl.aggregators import PMTRec
from recmtl.train.instruments import USER_GROUPS, EpochInstruments, instrument_columns
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


# --------------------------------------------------------------------------------------------------
# instruments


GROUPS = {1: "cold_users", 2: "mid_users", 3: "heavy_users"}


def test_the_trainer_reports_the_three_user_groups():
    assert USER_GROUPS == GROUPS


def hand_checked() -> EpochInstruments:
    """4 users (0, 1 cold; 2 mid; 3 heavy) then 3 items; two steps of two tasks (main = 0)."""
    inst = EpochInstruments(4, torch.tensor([1, 1, 2, 3, 0, 0, 0]), GROUPS, torch.device("cpu"))
    # step 0: rows 0 and 5 hold both tasks (meet 2/4); user 0 main weight 0.6, user 2 1.0
    inst.add(
        torch.tensor([0, 2, 4, 5]),
        torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool),
        torch.tensor([[0.6, 0.4], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]),
    )
    # step 1: row 1 holds both (meet 1/3); user 0 1.0, user 1 0.8; user 3 without the main task
    inst.add(
        torch.tensor([0, 1, 3]),
        torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool),
        torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0]]),
    )
    return inst


def test_instruments_on_a_hand_checked_case():
    inst = hand_checked()
    record = inst.record()
    assert record["meet_fraction"] == pytest.approx((2 / 4 + 1 / 3) / 2)  # mean of the per-step fractions
    means = inst.user_means().tolist()
    assert means[:3] == pytest.approx([0.8, 0.8, 1.0]) and math.isnan(means[3])
    for stat in ("mean", "q25", "q50", "q75"):
        assert record[f"main_weight_{stat}@cold_users"] == pytest.approx(0.8)
        assert record[f"main_weight_{stat}@mid_users"] == pytest.approx(1.0)
        assert math.isnan(record[f"main_weight_{stat}@heavy_users"])  # user 3: never under the main task
    assert sorted(record) == sorted(instrument_columns(GROUPS))
    frame = inst.user_frame(torch.tensor([3, 4, 10, 50]), epoch=7)
    assert frame.columns == ["user_id", "n_train", "main_weight", "main_steps", "epoch"]
    assert frame["main_steps"].to_list() == [2, 1, 1, 0] and frame["epoch"].to_list() == [7] * 4


def test_instruments_quartiles_over_users():
    inst = EpochInstruments(5, torch.ones(5, dtype=torch.long), GROUPS, torch.device("cpu"))
    rows = torch.arange(5)
    inst.add(
        rows, torch.ones(5, 2, dtype=torch.bool), torch.tensor([[v, 0.0] for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    )
    record = inst.record()
    assert record["main_weight_mean@cold_users"] == pytest.approx(0.3)
    assert [record[f"main_weight_{q}@cold_users"] for q in ("q25", "q50", "q75")] == pytest.approx(
        [0.2, 0.3, 0.4]
    )
    assert record["meet_fraction"] == 1.0


def test_instruments_global_weights_and_methods_without_weights():
    inst = EpochInstruments(2, torch.tensor([1, 1, 0]), GROUPS, torch.device("cpu"))
    inst.add(
        torch.tensor([0, 1, 2]),
        torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool),
        torch.tensor([[0.7, 0.3]]),
    )
    assert inst.user_means().tolist() == pytest.approx([0.7, 0.7])
    none = EpochInstruments(2, torch.tensor([1, 1, 0]), GROUPS, torch.device("cpu"))
    none.add(torch.tensor([0, 2]), torch.tensor([[1, 1], [0, 1]], dtype=torch.bool), None)
    record = none.record()
    assert record["meet_fraction"] == 0.5 and math.isnan(record["main_weight_mean@cold_users"])


def test_training_logs_meet_fraction_and_main_weights(tiny_data, tmp_path):
    runs = {}
    for name, method, sampling in [
        ("single", "single", "independent"),
        ("ew", "ew", "independent"),
        ("pmtrec", "pmtrec", "independent"),
        ("pmtrec-aligned", "pmtrec", "aligned"),
    ]:
        config = quick_config(
            tiny_data, method=method, aux=("social", "category"), epochs=2, aux_sampling=sampling
        )
        fit(config, tmp_path / name)
        runs[name] = pl.read_parquet(tmp_path / name / "metrics.parquet")
    assert (runs["single"]["meet_fraction"] == 0.0).all()  # rec alone never meets anything
    for name in ("ew", "pmtrec", "pmtrec-aligned"):
        assert ((runs[name]["meet_fraction"] > 0) & (runs[name]["meet_fraction"] < 1)).all(), name
    # anchoring the social batch on the rec users makes tasks meet on more rows
    assert (runs["pmtrec-aligned"]["meet_fraction"] > runs["pmtrec"]["meet_fraction"]).all()
    for group in ("cold_users", "mid_users", "heavy_users"):
        assert (runs["ew"][f"main_weight_mean@{group}"] == 1.0).all()
        frame = runs["pmtrec"]
        q = [frame[f"main_weight_{s}@{group}"] for s in ("q25", "q50", "q75")]
        assert ((q[0] <= q[1]) & (q[1] <= q[2]) & (q[0] > 0) & (q[2] <= 1)).all()
        assert ((frame[f"main_weight_mean@{group}"] > 0) & (frame[f"main_weight_mean@{group}"] <= 1)).all()


def test_user_weights_parquet_holds_the_last_epoch_per_user(tiny_data, tmp_path):
    from recmtl.data.store import open_dataset
    from recmtl.data.tensors import TrainData

    fit(quick_config(tiny_data, aux=("social",), epochs=2), tmp_path / "r")
    frame = pl.read_parquet(tmp_path / "r" / "user_weights.parquet")
    data = TrainData.load(open_dataset(tiny_data), torch.device("cpu"))
    assert frame["user_id"].to_list() == list(range(data.n_users))
    assert frame["n_train"].to_list() == torch.bincount(data.train.a, minlength=data.n_users).tolist()
    assert (frame["epoch"] == 1).all()
    touched = frame.filter(pl.col("n_train") > 0)
    assert touched["main_steps"].min() >= 1
    assert ((touched["main_weight"] > 0) & (touched["main_weight"] <= 1)).all()
    # a user's mean main weight is below 1 only where another task met the main task on its row
    assert (touched["main_weight"] < 1).any()
