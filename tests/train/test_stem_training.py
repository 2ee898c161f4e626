"""Training, resuming and evaluating with ``--encoder stem``: bit-identical resume, every kind of
aggregator, the run's config deciding how its checkpoint is read, and runs written before encoders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from recmtl.errors import ConfigError, RecmtlError
from recmtl.eval.run_eval import evaluate_run
from recmtl.runs import load_tensors, read_run_config
from recmtl.train.loop import fit
from tests.train.conftest import Interrupt, assert_same_tensors, metrics_without_wall, quick_config

AUX = ("social", "category")


@pytest.mark.parametrize(("method", "epoch", "step"), [("pmtrec", 2, None), ("ew", 1, 5)])
def test_stem_resume_reaches_the_uninterrupted_result(tiny_data, tmp_path, method, epoch, step):
    """Train N epochs, or stop at epoch k and --resume to N: identical tables, gates and optimiser state."""
    config = quick_config(tiny_data, method=method, aux=AUX, encoder="stem", epochs=3)
    fit(config, tmp_path / "full")
    run = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(config, run, callbacks=Interrupt(epoch, step))
    fit(config, run, resume=True)
    assert metrics_without_wall(run).equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(run / "last.safetensors", tmp_path / "full" / "last.safetensors")
    assert_same_tensors(run / "best.safetensors", tmp_path / "full" / "best.safetensors")
    tensors, _ = load_tensors(run / "last.safetensors")
    assert {"table.user.rec", "table.item.category", "private.gate.rec.user.W"} <= set(tensors)
    assert "private_adam.exp_avg.gate.rec.item.W" in tensors


@pytest.mark.parametrize(
    ("method", "mode", "options"),
    [
        ("pmtrec", "row", {}),
        ("mgda", "global", {}),
        ("pcgrad", "global", {"stem_asymmetric": True}),
        ("gradvac", "row", {"stem_no_shared": True}),
        ("ew", "row", {"stem_no_stopgrad": True}),
        ("single", "row", {}),
    ],
)
def test_stem_composes_with_every_kind_of_aggregator(tiny_data, tmp_path, method, mode, options):
    config = quick_config(tiny_data, method=method, mode=mode, aux=AUX, encoder="stem", epochs=2, **options)
    result = fit(config, tmp_path / "r")
    assert len(result.history) == 2 and math.isfinite(result.best_value) and result.best_value > 0
    for record in result.history:
        assert math.isfinite(record["loss_rec"])
    report, _ = evaluate_run(tmp_path / "r", split="valid", write=False)
    assert report.metrics["ndcg@20"] == pytest.approx(result.best_value)


def test_the_run_config_decides_how_the_checkpoint_is_read(tiny_data, tmp_path):
    run = tmp_path / "stem"
    fit(quick_config(tiny_data, aux=AUX, encoder="stem", epochs=1), run)
    assert read_run_config(run)["config"]["encoder"] == "stem"
    evaluate_run(run, split="valid", write=False)  # reads the stem checkpoint
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["encoder"] = "mf"
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(
        RecmtlError, match="config.json says --encoder mf, but the checkpoint holds the tables"
    ):
        evaluate_run(run, split="valid", write=False)
    saved["config"] |= {"encoder": "stem", "stem_asymmetric": True}
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RecmtlError, match="gate"):
        evaluate_run(run, split="valid", write=False)


def test_an_mf_checkpoint_is_not_read_as_stem(tiny_data, tmp_path):
    run = tmp_path / "mf"
    fit(quick_config(tiny_data, aux=AUX, epochs=1), run)
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["encoder"] = "stem"
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RecmtlError, match="says --encoder stem"):
        evaluate_run(run, split="valid", write=False)


def test_a_run_written_before_encoders_resumes_and_evaluates_as_mf(tiny_data, tmp_path):
    config = quick_config(tiny_data, aux=("social",), epochs=2)
    fit(config, tmp_path / "full")
    old = tmp_path / "old"
    with pytest.raises(KeyboardInterrupt):
        fit(config, old, callbacks=Interrupt(1))
    saved = json.loads((old / "config.json").read_text())
    for key in ("encoder", "stem_dim", "stem_asymmetric", "stem_no_stopgrad", "stem_no_shared"):
        del saved["config"][key]
    (old / "config.json").write_text(json.dumps(saved))
    assert read_run_config(old)["config"]["encoder"] == "mf"
    fit(config, old, resume=True)  # no "option --encoder differs" refusal
    assert_same_tensors(old / "last.safetensors", tmp_path / "full" / "last.safetensors")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stem_asymmetric": True}, "--stem-asymmetric needs --encoder stem"),
        ({"stem_no_shared": True}, "--stem-no-shared needs --encoder stem"),
        ({"stem_dim": 16}, "--stem-dim needs --encoder stem"),
        ({"encoder": "stem", "stem_dim": 8}, "--stem-dim 8: must equal --dim 16"),
        ({"encoder": "bogus"}, "--encoder bogus: expected mf or stem"),
    ],
)
def test_stem_options_are_checked(tiny_data, options, message):
    with pytest.raises(ConfigError, match=message):
        quick_config(tiny_data, **options).validate()


def test_stem_dim_equal_to_dim_is_accepted(tiny_data, tmp_path):
    result = fit(
        quick_config(tiny_data, aux=("social",), encoder="stem", stem_dim=16, epochs=1), tmp_path / "r"
    )
    tensors, _ = load_tensors(tmp_path / "r" / "best.safetensors")
    assert tensors["table.user.social"].shape[1] == 16 and result.best_value > 0
    assert torch.isfinite(tensors["table.user.rec"]).all()
