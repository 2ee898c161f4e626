"""On a CUDA GPU only (skipped without one; ``pytest -m cuda`` selects them; benchmarks/gpu_check.sh runs
them): the compiled Triton kernels against the reference at training sizes, and train / resume / evaluate on
the GPU with each back end, against the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from recmtl.aggregators import PMTRec
from recmtl.eval.run_eval import evaluate_run
from recmtl.kernels import reference
from recmtl.kernels.slots import RowSlots
from recmtl.train.loop import fit
from recmtl.train.row_adam import RowAdam
from tests.kernels.cases import BF16_UPDATE, FP32, coefficients, entries
from tests.train.conftest import prepare_tiny, quick_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

close = torch.testing.assert_close
CUDA = torch.device("cuda")


def scaled(tolerance, ref):
    return {"rtol": tolerance["rtol"], "atol": tolerance["atol"] * max(float(ref.abs().max()), 1.0)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("dim", [64, 128, 300])
def test_compiled_kernels_match_the_reference_at_scale(dtype, dim):
    from recmtl.kernels import triton_combine as K

    grads = entries(20_000, 4, dim, seed=dim, dtype=dtype, device=CUDA)
    slots = RowSlots.from_grads(grads)
    tolerance = FP32 if dtype == torch.float32 else BF16_UPDATE
    for method in (PMTRec(alpha=1.2), PMTRec(focus="logit", combine="raw", tau=0.5)):
        update, c, w = K.pmtrec_rows(slots, method, 7)
        ref_update, ref_c, ref_w = reference.pmtrec_rows(grads, method, 7)
        close(c, ref_c.float(), **FP32)
        close(w, ref_w.float(), **FP32)
        close(update.float(), ref_update.float(), **scaled(tolerance, ref_update.float()))
    coef = coefficients(20_000, 4, grads)
    expected = reference.combine_rows(grads, coef).float()
    close(K.combine_rows(slots, coef).float(), expected, **scaled(tolerance, expected))

    weight = torch.randn(50_000, dim, device=CUDA)
    fused, plain = RowAdam.wrap(weight, 1e-3), RowAdam.wrap(weight, 1e-3)
    rows = torch.randperm(50_000, device=CUDA)[:20_000]
    plain.step(rows, reference.pmtrec_rows(reference.upcast(grads), PMTRec(), 3)[0])
    K.pmtrec_adam_rows(slots, PMTRec(), 3, fused.storage, rows, fused.next_step())
    close(fused.storage, plain.storage, **scaled(FP32, plain.storage))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("cuda") / "tiny")


def _valid(run_dir):
    import polars as pl

    return pl.read_parquet(run_dir / "metrics.parquet")


@pytest.mark.parametrize("method", ["pmtrec", "mgda"])
def test_fused_update_on_and_off_train_alike_on_cuda(data, tmp_path, method):
    """Same sampling (the CUDA generator), so the two back ends differ only by float32 rounding."""
    runs = {}
    for fused in ("on", "off"):
        options = {"method": method, "aux": ("social",), "epochs": 2}
        config = quick_config(data, device="cuda", fused_update=fused, **options)
        runs[fused] = fit(config, tmp_path / fused).run_dir
    on = json.loads((runs["on"] / "config.json").read_text())
    off = json.loads((runs["off"] / "config.json").read_text())
    assert on["kernel_backend"] == "triton" and off["kernel_backend"] == "torch"
    a, b = _valid(runs["on"]), _valid(runs["off"])
    for column in ("loss_rec", "loss_social"):
        close(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-3, atol=1e-5)
    # (a ranking metric moves in steps of one user's hit: a rounding difference may flip one)
    close(a["valid_ndcg@20"].to_numpy(), b["valid_ndcg@20"].to_numpy(), rtol=0, atol=0.01)


def test_train_resume_evaluate_on_cuda_and_evaluate_on_cpu(data, tmp_path):
    config = quick_config(data, device="cuda", aux=("social", "category"), epochs=1)
    fit(config, tmp_path / "run")
    result = fit(quick_config(data, device="cuda", aux=("social", "category"), epochs=2), tmp_path / "run",
                 resume=True)  # fmt: skip
    assert [r["epoch"] for r in result.history] == [0, 1]
    gpu, _ = evaluate_run(tmp_path / "run", split="test", ks=(10, 20), device=CUDA)
    cpu, _ = evaluate_run(tmp_path / "run", split="test", ks=(10, 20), device=torch.device("cpu"))
    for key, value in cpu.metrics.items():
        assert gpu.metrics[key] == pytest.approx(value, abs=1e-6), key


def test_cpu_and_cuda_runs_reach_similar_quality(data, tmp_path):
    """The CPU and CUDA generators draw different batches, so only the quality is compared, loosely."""
    ndcg = {}
    for device in ("cpu", "cuda"):
        fit(quick_config(data, device=device, epochs=3), tmp_path / device)
        ndcg[device] = float(_valid(tmp_path / device)["valid_ndcg@20"][-1])
    assert abs(ndcg["cpu"] - ndcg["cuda"]) < 0.05, ndcg
