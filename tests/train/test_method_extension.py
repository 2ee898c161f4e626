"""A method added the way a newcomer adds one: a small frozen dataclass with two hyper-parameters and per-row
state, not registered in the package (the tests put it in the registry with monkeypatch, the one line a real
method adds to ``recmtl/aggregators/__init__.py``). Through it: durable state across ``--resume``, the
options on the command line and in ``recmtl methods``, complete StepInfo, and NaN for unlogged weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import polars as pl
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli.main import app
from recmtl.aggregators import (
    AGGREGATORS,
    Aggregation,
    Aggregator,
    State,
    StepInfo,
    TaskGrads,
    Weights,
    option,
)
from recmtl.errors import RecmtlError
from recmtl.train.loop import fit
from tests.train.conftest import Interrupt, assert_same_tensors, metrics_without_wall, n_steps, quick_config


@dataclass(frozen=True)
class NormEMA(Aggregator):
    """Test double: c_rt = 1 / (1 + ema_rt / scale) on present tasks, ema the per-row moving average (rate
    ``beta``) of the task gradient norms, kept per storage row; a global step counter besides."""

    beta: float = option(0.9, low=0.0, high=1.0, help="EMA rate")
    scale: float = option(1.0, low=0.0, low_open=True, help="norm scale")

    name: ClassVar[str] = "norm-ema"
    modes: ClassVar[frozenset[str]] = frozenset({"row"})
    paper: ClassVar[str] = "a test double"

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        return {"ema": torch.zeros(n_rows, n_tasks), "steps": torch.zeros((), dtype=torch.long)}

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        rows = info.rows(grads.n_rows)
        old = state["ema"].index_select(0, rows)
        new = torch.where(grads.present, self.beta * old + (1 - self.beta) * grads.norms(), old)
        coefficients = grads.present / (1 + new / self.scale)
        ema = state["ema"].index_copy(0, rows, new)
        return Weights(coefficients, {"ema": ema, "steps": state["steps"] + 1})


@dataclass(frozen=True)
class Unlogged(Aggregator):
    """Test double: a method with no per-task weights to log (the EW update, logged_weights None)."""

    name: ClassVar[str] = "unlogged"
    modes: ClassVar[frozenset[str]] = frozenset({"row", "global"})

    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        return Weights(grads.present.to(torch.float32), state)

    def aggregate(self, grads: TaskGrads, state: State, info: StepInfo) -> Aggregation:
        return Aggregation(grads.summed(), None, None, state)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(AGGREGATORS, NormEMA.name, NormEMA)
    monkeypatch.setitem(AGGREGATORS, Unlogged.name, Unlogged)


AUX = ("social", "category")


def test_stateful_method_resumes_bit_identically(tiny_data, tmp_path):
    config = quick_config(tiny_data, method=NormEMA(beta=0.5, scale=0.1), aux=AUX, epochs=4)
    fit(config, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "cut", callbacks=Interrupt(2, 3))
    fit(config, tmp_path / "cut", resume=True)
    assert metrics_without_wall(tmp_path / "cut").equals(metrics_without_wall(tmp_path / "full"))
    assert_same_tensors(tmp_path / "cut" / "last.safetensors", tmp_path / "full" / "last.safetensors")
    saved = load_file(tmp_path / "full" / "last.safetensors")
    assert int(saved["aggregator.steps"]) == 4 * n_steps(config)  # global state, counted over 4 epochs
    assert saved["aggregator.ema"].abs().sum() > 0  # the state is real, and it is in the checkpoint


def test_state_reset_on_resume_would_have_changed_the_run(tiny_data, tmp_path):
    """The bit-identical resume above is meaningful: the same run resumed with a fresh state differs."""
    config = quick_config(tiny_data, method=NormEMA(beta=0.5, scale=0.1), aux=AUX, epochs=3)
    fit(config, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "cut", callbacks=Interrupt(2))
    last = tmp_path / "cut" / "last.safetensors"
    tensors = load_file(last)
    with safe_open(str(last), framework="pt") as fh:
        metadata = fh.metadata()
    tensors["aggregator.ema"] = torch.zeros_like(tensors["aggregator.ema"])
    save_file(tensors, str(last), metadata=metadata)
    fit(config, tmp_path / "cut", resume=True)
    a, b = load_file(tmp_path / "cut" / "last.safetensors"), load_file(tmp_path / "full" / "last.safetensors")
    assert not torch.equal(a["table.user"], b["table.user"])


def test_a_checkpoint_without_the_methods_state_is_refused(tiny_data, tmp_path):
    config = quick_config(tiny_data, method=NormEMA(), aux=AUX, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "r", callbacks=Interrupt(1))
    last = tmp_path / "r" / "last.safetensors"
    with safe_open(str(last), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = {k: v for k, v in load_file(last).items() if not k.startswith("aggregator.")}
    save_file(tensors, str(last), metadata=metadata)
    with pytest.raises(RecmtlError, match="aggregator state") as err:
        fit(config, tmp_path / "r", resume=True)
    assert "ema" in str(err.value) and "\n" not in str(err.value)


def test_step_info_is_complete(tiny_data, tmp_path, monkeypatch):
    seen: list[tuple[StepInfo, int]] = []
    original = NormEMA.weigh

    def spy(self, grads, state, info):
        seen.append((info, grads.n_rows))
        return original(self, grads, state, info)

    monkeypatch.setattr(NormEMA, "weigh", spy)
    fit(quick_config(tiny_data, method=NormEMA(), aux=AUX, epochs=2), tmp_path / "r")
    history = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert [info.epoch for info, _ in seen[:1]] == [0] and seen[-1][0].epoch == 1
    steps = [info.step for info, _ in seen if info.epoch == 0]
    assert steps == list(range(len(steps))) and len(steps) > 1
    n_users = json.loads((tiny_data / "manifest.json").read_text())["counts"]["users"]
    for info, n_rows in seen:
        assert info.mode == "row" and info.tasks == ("rec", *AUX)
        assert info.losses is not None and info.losses.shape == (3,) and torch.isfinite(info.losses).all()
        assert (info.losses > 0).all()
        assert info.row_ids is not None and info.row_ids.shape == (n_rows,)
        assert (info.row_ids[1:] > info.row_ids[:-1]).all()  # sorted, unique storage rows
        assert info.tables["user"] == range(0, n_users)
        users, local = info.rows_of_table("user")
        assert torch.equal(local, info.row_ids[users])
        assert isinstance(info.generator, torch.Generator)
    mean_rec_loss = sum(float(i.losses[0]) for i, _ in seen if i.epoch == 0) / len(steps)
    assert abs(mean_rec_loss - history["loss_rec"][0]) < 1e-5  # the losses are this step's


def test_a_method_without_weights_to_log_logs_nan_not_zero(tiny_data, tmp_path):
    fit(quick_config(tiny_data, method=Unlogged(), aux=AUX, epochs=1), tmp_path / "r")
    frame = pl.read_parquet(tmp_path / "r" / "metrics.parquet")
    for task in ("rec", *AUX):
        assert frame[f"weight_{task}"].is_nan().all()
        assert frame[f"weight_{task}@cold_users"].is_nan().all()
        assert (frame[f"loss_{task}"] > 0).all()


runner = CliRunner()
QUICK = ("--dim", 16, "--batch-size", 256, "--lr", 0.01, "--device", "cpu", "--quiet", "--epochs", 1)


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_a_new_method_is_usable_from_the_command_line(registered, tiny_data, tmp_path):
    result = cli(
        "train",
        tiny_data,
        "--runs-dir",
        tmp_path,
        "--name",
        "r",
        *QUICK,
        "--aux",
        "social",
        "--method",
        "norm-ema",
        "--method-opt",
        "beta=0.25",
        "--method-opt",
        "scale=2",
    )
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["config"]["method"] == {"name": "norm-ema", "beta": 0.25, "scale": 2.0}
    assert saved["method"]["variant"] == "per-row, ours"
    assert cli("evaluate", tmp_path / "r", "--device", "cpu").exit_code == 0
    listing = cli("methods").output
    assert "norm-ema" in listing and "beta = 0.9 · [0, 1] · EMA rate" in listing
    assert "scale = 1.0 · number > 0 · norm scale" in listing


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (("--method-opt", "gamma=1"), ("method norm-ema has no option 'gamma'", "beta, scale")),
        (("--method-opt", "beta=2"), ("norm-ema: beta must be in [0, 1], found 2.0",)),
        (("--mode", "global"), ("--method norm-ema does not support --mode global", "supports: row")),
    ],
)
def test_a_new_methods_options_are_checked(registered, tiny_data, tmp_path, flags, fragments):
    result = cli("train", tiny_data, "--runs-dir", tmp_path, *QUICK, "--method", "norm-ema", *flags)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), lines
    assert not any(tmp_path.iterdir())
