"""The pure helpers in recmtl.aggregators._math: masked softmax, safe division, norms, Gram, combination."""

from __future__ import annotations

import pytest
import torch

from recmtl.aggregators._math import combine, compute_dtype, masked_softmax, row_gram, row_norms, safe_div

INF = float("inf")


def test_safe_div_defines_x_over_zero_as_zero():
    num = torch.tensor([1.0, 0.0, -2.0, 6.0])
    den = torch.tensor([0.0, 0.0, 0.0, 3.0])
    assert torch.equal(safe_div(num, den), torch.tensor([0.0, 0.0, 0.0, 2.0]))


def test_safe_div_broadcasts():
    out = safe_div(torch.tensor([[6.0], [0.0]]), torch.tensor([[3.0, 0.0, 2.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(out, torch.tensor([[2.0, 0.0, 3.0], [0.0, 0.0, 0.0]]))


def test_masked_softmax_matches_softmax_on_the_present_entries():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=gen) * 5
    mask = torch.rand(50, 5, generator=gen) < 0.6
    out = masked_softmax(logits, mask)
    for r in range(50):
        expected = torch.zeros(5)
        if mask[r].any():
            expected[mask[r]] = torch.softmax(logits[r, mask[r]], dim=0)
        torch.testing.assert_close(out[r], expected)


def test_masked_softmax_edge_rows():
    logits = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1e4, -1e4, 0.0], [INF, 0.0, 0.0]])
    mask = torch.tensor([[False] * 3, [False, True, False], [True, True, True], [False, True, True]])
    out = masked_softmax(logits, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(3))  # no present entry: zeros, not NaN
    assert torch.equal(out[1], torch.tensor([0.0, 1.0, 0.0]))  # one entry: exactly 1
    assert torch.equal(out[2], torch.tensor([1.0, 0.0, 0.0]))  # huge logits: no overflow
    assert torch.equal(out[3], torch.tensor([0.0, 0.5, 0.5]))  # masked +inf ignored


def test_row_norms_and_gram():
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(7, 3, 11, generator=gen, dtype=torch.float64)
    present = torch.rand(7, 3, generator=gen) < 0.5
    norms = row_norms(grads, present)
    torch.testing.assert_close(norms, grads.norm(dim=-1) * present)
    gram = row_gram(grads, present)
    explicit = torch.stack([g @ g.T for g in grads]) * (present.unsqueeze(2) & present.unsqueeze(1))
    torch.testing.assert_close(gram, explicit)
    assert torch.equal(gram, gram.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(gram, dim1=1, dim2=2).sqrt(), norms)


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_statistics_run_in_at_least_float32(dtype, expected):
    assert compute_dtype(dtype) == expected
    grads = torch.full((2, 2, 300), 300.0, dtype=dtype)  # Σ x² = 2.7e7 overflows float16
    assert row_norms(grads).dtype == expected
    torch.testing.assert_close(row_norms(grads), torch.full((2, 2), 300.0 * 300**0.5, dtype=expected))
    assert row_gram(grads).dtype == expected and torch.isfinite(row_gram(grads)).all()


def test_combine_is_the_weighted_sum_in_grads_dtype():
    gen = torch.Generator().manual_seed(2)
    grads = torch.randn(5, 3, 4, generator=gen)
    c = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    out = combine(c, grads)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, (c.float().unsqueeze(-1) * grads).sum(1))


def test_combine_clamps_coefficients_to_finite():
    grads = torch.zeros(1, 2, 3)
    grads[0, 1, 0] = 1e-30
    out = combine(torch.tensor([[1.0, 1e300]], dtype=torch.float64), grads)
    assert torch.isfinite(out).all() and out[0, 0] > 0
