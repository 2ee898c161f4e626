"""torchjd as the oracle (METHODS.md §6): where torchjd has the method, our global-mode output (R = 1, all
tasks present) must equal torchjd's aggregation of the Jacobian [T, D]."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import Constant, Mean, Sum

from recmtl.aggregators import StepInfo, make_aggregator

SHAPES = [(1, 1), (2, 5), (3, 64), (4, 1000), (5, 20_000)]


def jacobian(T: int, D: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-3, 2, T).unsqueeze(1)
    return torch.randn(T, D, generator=gen, dtype=torch.float64) * scales


def ours(name: str, J: torch.Tensor, **params) -> torch.Tensor:
    agg = make_aggregator(name, **params)
    present = torch.ones(1, J.shape[0], dtype=torch.bool)
    return agg(J.unsqueeze(0), present, agg.init_state(J.shape[0], 1), StepInfo(epoch=2)).update[0]


@pytest.mark.parametrize("T, D", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ew_matches_torchjd_sum(T, D, seed):
    J = jacobian(T, D, seed)
    torch.testing.assert_close(ours("ew", J), Sum()(J), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T, D", SHAPES)
def test_ew_matches_torchjd_sum_float32(T, D):
    J = jacobian(T, D, 3).float()
    torch.testing.assert_close(ours("ew", J), Sum()(J), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T, D", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_single_matches_torchjd_constant_one_hot(T, D, seed):
    J = jacobian(T, D, seed)
    onehot = torch.zeros(T, dtype=J.dtype)
    onehot[0] = 1.0
    torch.testing.assert_close(ours("single", J), Constant(onehot)(J), rtol=0, atol=0)


@pytest.mark.parametrize("combine", ["unit", "raw"])
@pytest.mark.parametrize("T, D", SHAPES[1:])
def test_pmtrec_combination_matches_torchjd_constant(T, D, combine):
    """PMTRec is not in torchjd; its combination step is: update = Constant(c)(J) for the returned c."""
    J = jacobian(T, D, 4)
    agg = make_aggregator("pmtrec", combine=combine)
    out = agg(J.unsqueeze(0), torch.ones(1, T, dtype=torch.bool), {}, StepInfo(epoch=3))
    torch.testing.assert_close(out.update[0], Constant(out.coefficients[0])(J), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T, D", SHAPES)
def test_ew_is_torchjd_mean_times_the_number_of_tasks(T, D):
    """torchjd's Mean averages the rows of the Jacobian; `ew` sums them (the classic equal-weighting baseline
    as LibMTL's EW: weights 1). A constant factor T apart, stated here."""
    J = jacobian(T, D, 5)
    torch.testing.assert_close(ours("ew", J), T * Mean()(J), rtol=1e-12, atol=1e-12)
