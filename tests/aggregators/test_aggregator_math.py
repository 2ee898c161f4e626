"""The pure helpers in recmtl.aggregators._math: masked softmax, safe division, norms, Gram, weighted sum."""

from __future__ import annotations

import pytest
import torch

from recmtl.aggregators._math import compute_dtype, gram, masked_softmax, norms, safe_div, weighted_scatter

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


def test_norms_and_gram():
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(7, 3, 11, generator=gen, dtype=torch.float64)
    present = torch.rand(7, 3, generator=gen) < 0.5
    torch.testing.assert_close(norms(grads), grads.norm(dim=-1))
    g = gram(grads, present)
    explicit = torch.stack([x @ x.T for x in grads]) * (present.unsqueeze(2) & present.unsqueeze(1))
    torch.testing.assert_close(g, explicit)
    assert torch.equal(g, g.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(g, dim1=1, dim2=2).sqrt(), norms(grads) * present)


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
    assert norms(grads).dtype == expected
    torch.testing.assert_close(norms(grads), torch.full((2, 2), 300.0 * 300**0.5, dtype=expected))
    assert gram(grads).dtype == expected and torch.isfinite(gram(grads)).all()


def test_weighted_scatter_is_the_weighted_sum_in_the_values_dtype():
    gen = torch.Generator().manual_seed(2)
    values = torch.randn(9, 4, generator=gen)
    weights = torch.randn(9, generator=gen, dtype=torch.float64)
    index = torch.tensor([0, 2, 2, 1, 0, 4, 4, 4, 1])
    out = weighted_scatter(values, weights, index, 6)
    assert out.dtype == torch.float32 and out.shape == (6, 4)
    expected = torch.zeros(6, 4)
    for n in range(9):  # a plain loop: the independent reference
        expected[index[n]] += float(weights[n]) * values[n]
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[3], torch.zeros(4)) and torch.equal(out[5], torch.zeros(4))  # untouched rows
    torch.testing.assert_close(
        weighted_scatter(values, None, index, 6), weighted_scatter(values, weights * 0 + 1, index, 6)
    )


def test_weighted_scatter_passes_a_lone_weight_one_entry_bit_for_bit():
    values = torch.randn(3, 5, generator=torch.Generator().manual_seed(4))
    out = weighted_scatter(values, torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]), 2)
    assert torch.equal(out[0], values[0]) and torch.equal(out[1], values[2])


def test_weighted_scatter_clamps_weights_to_finite():
    values = torch.zeros(2, 3)
    values[1, 0] = 1e-30
    out = weighted_scatter(values, torch.tensor([1.0, 1e300], dtype=torch.float64), torch.tensor([0, 0]), 1)
    assert torch.isfinite(out).all() and out[0, 0] > 0


def test_weighted_scatter_in_column_chunks_equals_one_pass(monkeypatch):
    """Few long vectors (global mode) are scaled a column block at a time: the same sum."""
    from recmtl.aggregators import _math

    gen = torch.Generator().manual_seed(5)
    values = torch.randn(3, 1000, generator=gen)
    weights = torch.tensor([0.5, -2.0, 3.0])
    index = torch.tensor([0, 0, 1])
    whole = weighted_scatter(values, weights, index, 2)
    monkeypatch.setattr(_math, "SCATTER_CHUNK", 7)  # 2 columns per block, the last one partial
    chunked = weighted_scatter(values, weights, index, 2)
    assert torch.equal(chunked, whole)
    torch.testing.assert_close(whole[0], 0.5 * values[0] - 2.0 * values[1])
    torch.testing.assert_close(whole[1], 3.0 * values[2])
