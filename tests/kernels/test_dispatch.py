"""Which back end runs (recmtl/kernels/dispatch.py), ``--fused-update`` and what a run records.

None of these needs triton: on a machine without CUDA every request but an explicit Triton one resolves to
the PyTorch reference, and an explicit one is a one-line error, never a silent fallback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from recmtl.aggregators import PMTRec
from recmtl.errors import ConfigError
from recmtl.kernels import KernelUnavailable, combine_rows, dispatch, pmtrec_rows, reference, resolve_backend
from recmtl.train.config import TrainConfig
from recmtl.train.loop import fit
from tests.cli.conftest import QUICK, assert_one_line_error
from tests.conftest import ROOT
from tests.kernels.cases import coefficients, entries
from tests.train.conftest import prepare_tiny, quick_config

runner = CliRunner()


@pytest.fixture
def no_triton(monkeypatch):
    """triton absent, whatever is installed."""
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)


def test_auto_is_torch_on_cpu_and_triton_on_cuda_with_triton(monkeypatch):
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", "cpu") == resolve_backend("torch", "cuda") == "torch"
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    assert resolve_backend("triton", "cuda:0") == "triton"


def test_auto_without_triton_is_torch_even_on_cuda(no_triton):
    assert resolve_backend("auto", "cuda") == "torch"


def test_an_explicit_triton_request_that_cannot_be_met_is_an_error(monkeypatch):
    with pytest.raises(KernelUnavailable, match="CUDA device.*cpu"):
        resolve_backend("triton", "cpu")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(KernelUnavailable, match=r"pip install recmtl\[gpu\]"):
        resolve_backend("triton", "cuda")
    assert issubclass(KernelUnavailable, ConfigError)
    with pytest.raises(ValueError, match="auto, torch, triton"):
        resolve_backend("cuda", "cpu")


def test_ops_on_cpu_run_the_reference():
    grads = entries(10, 3, 8)
    c = coefficients(10, 3, grads)
    assert torch.equal(combine_rows(grads, c), reference.combine_rows(grads, c))
    for a, b in zip(pmtrec_rows(grads, PMTRec(), 2), reference.pmtrec_rows(grads, PMTRec(), 2), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(KernelUnavailable):
        combine_rows(grads, c, backend="triton")


def test_the_library_imports_and_trains_without_importing_triton():
    """triton is optional: importing the trainer (and resolving the CPU back end) never imports it."""
    code = (
        "import sys; import recmtl.train.loop, recmtl.kernels as k; "
        "assert k.resolve_backend('auto', 'cpu') == 'torch'; "
        "assert 'triton' not in sys.modules, 'triton imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# --- --fused-update ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("dispatch") / "tiny")


def test_fused_update_is_declared_once_as_a_train_option():
    assert TrainConfig().fused_update == "auto"
    with pytest.raises(ConfigError, match="--fused-update maybe: expected auto, on or off"):
        TrainConfig(fused_update="maybe").validate()


def test_fused_update_on_without_cuda_is_a_one_line_error(data, tmp_path):
    result = runner.invoke(
        app, ["train", str(data), "--runs-dir", str(tmp_path), *map(str, QUICK), "--fused-update", "on"]
    )
    assert_one_line_error(result, "--fused-update on", "CUDA device", "--fused-update auto or off")
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_the_run_records_its_kernel_backend(data, tmp_path):
    config = quick_config(data, epochs=1)
    fit(config, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["kernel_backend"] == "torch"
    assert saved["config"]["fused_update"] == "auto"
    assert "triton" in saved["versions"]


def test_resume_may_change_fused_update(data, tmp_path):
    """A back-end switch changes how the update is computed, not what: a resume may change it."""
    result = runner.invoke(app, ["train", str(data), "--runs-dir", str(tmp_path), "--name", "r", "--epochs",
                                 "1", "--fused-update", "off", *map(str, QUICK)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--fused-update",
                                 "auto", *map(str, QUICK)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
