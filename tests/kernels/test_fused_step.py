"""The fused row update behind the aggregation interface: :func:`recmtl.kernels.apply_row_update` on the
Triton back end against the torch back end (the update materialised, then RowAdam's step), for PMTRec (its
own per-row kernel) and for methods that only give coefficients (the generic kernel), in both modes; and a
few training steps of the real step with each back end.

Run compiled on CUDA, or on CPU under TRITON_INTERPRET=1 (conftest.py): dispatch's ``apply_row_update``
takes the back end as resolved, so the Triton path can run here on CPU tensors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recmtl.aggregators import Aggregation, StepInfo, make_aggregator
from recmtl.data.store import open_dataset
from recmtl.data.tensors import TrainData
from recmtl.kernels import apply_row_update
from recmtl.train.loop import build_training
from recmtl.train.row_adam import RowAdam
from recmtl.train.step import train_step
from tests.kernels.cases import FP32, entries
from tests.kernels.conftest import DEVICE
from tests.train.conftest import prepare_tiny, quick_config

pytest.importorskip("triton", reason="triton is in the test extra: pip install -e .[test]")

close = torch.testing.assert_close


def optimizers(n: int, dim: int) -> tuple[RowAdam, RowAdam]:
    weight = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    return RowAdam.wrap(weight, 0.01), RowAdam.wrap(weight, 0.01)


@pytest.mark.parametrize(
    "name, mode",
    [
        ("pmtrec", "row"),
        ("pmtrec-ema", "row"),
        ("mgda", "row"),
        ("gradvac", "row"),
        ("pmtrec", "global"),
        ("upgrad", "global"),
    ],
)
def test_apply_row_update_triton_matches_torch(name, mode):
    """Two steps: same storage, coefficients, logged weights and state on both back ends (PMTRec with its
    norm EMA has state, so it takes the generic kernel)."""
    method = make_aggregator("pmtrec", norm_source="ema") if name == "pmtrec-ema" else make_aggregator(name)
    fused, plain = optimizers(60, 20)
    rows = torch.randperm(60, generator=torch.Generator().manual_seed(1))[:24].to(DEVICE)
    states = [method.init_state(3, 60, mode), method.init_state(3, 60, mode)]
    for step in range(2):
        grads = dataclasses.replace(entries(24, 3, 20, seed=step, device=DEVICE), mode=mode)
        info = StepInfo(epoch=step, step=step, mode=mode, row_ids=rows)
        outs = [method.aggregate(grads, states[i], info) for i in range(2)]
        assert (outs[0].fused is not None) == (name == "pmtrec" and mode == "row")
        apply_row_update(rows, outs[0], fused, "triton")
        apply_row_update(rows, outs[1], plain, "torch")
        assert fused.steps == plain.steps == step + 1
        close(outs[0].coefficients.float(), outs[1].coefficients.float(), **FP32)
        close(outs[0].logged_weights.float(), outs[1].logged_weights.float(), **FP32)
        close(fused.storage, plain.storage, rtol=1e-5, atol=1e-6)
        for key in states[0]:
            close(outs[0].state[key], outs[1].state[key], equal_nan=True)
        states = [outs[0].state, outs[1].state]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = prepare_tiny(tmp_path_factory.mktemp("fused") / "tiny")
    return path, TrainData.load(open_dataset(path), DEVICE)


@pytest.mark.parametrize("method", ["pmtrec", "ew", "pcgrad"])
def test_training_steps_on_both_back_ends_agree(tiny, method):
    """Three steps of the real step (rec + social, batch 128) on DEVICE: the tables stay within float32
    rounding."""
    path, data = tiny
    config = quick_config(path, method=method, aux=("social",), batch_size=128)
    runs = []
    for backend in ("torch", "triton"):
        model, plan = build_training(config, data, DEVICE)
        plan.backend = backend
        state = plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0], config.mode)
        generator = torch.Generator(device=DEVICE).manual_seed(3)
        losses = []
        for step in range(3):
            idx = torch.arange(step * 128, (step + 1) * 128, device=DEVICE)
            out = train_step(model, plan, data.train.a[idx], data.train.b[idx], generator, 1, step, state)
            state = out.state
            losses.append(out.losses)
        runs.append((plan.row_adam.storage.clone(), torch.stack(losses), out.weight_sum))
    (a, la, wa), (b, lb, wb) = runs
    close(b, a, rtol=1e-5, atol=1e-6)
    close(lb, la, rtol=1e-5, atol=1e-6)
    close(wb, wa, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_an_update_without_coefficients_takes_the_plain_adam_step():
    """A method that gives only its update (not linear in the gradients): RowAdam's step, either back end."""
    grads = entries(8, 2, 12, seed=5, device=DEVICE)
    fused, plain = optimizers(20, 12)
    rows = torch.arange(8, device=DEVICE)
    apply_row_update(rows, Aggregation(grads.summed(), None, None, {}), fused, "triton")
    plain.step(rows, grads.summed())
    assert torch.equal(fused.storage, plain.storage) and fused.steps == 1
