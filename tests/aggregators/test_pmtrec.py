"""PMTRec (Yang et al. 2024, arXiv:2407.21364; METHODS.md §4): golden cases computed by hand, and the
properties the [reading] must have (focusing, balancing, unit combination, validation)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recmtl.aggregators import PMTRec, StepInfo, make_aggregator
from recmtl.aggregators.pmtrec import pmtrec_task_weights
from recmtl.errors import ConfigError
from tests.aggregators.aggregator_cases import random_case

E = math.exp


def aggregate(grads, present=None, epoch: int = 0, **params):
    grads = torch.as_tensor(grads, dtype=torch.float64)
    if grads.ndim == 2:
        grads = grads.unsqueeze(0)
    if present is None:
        present = torch.ones(grads.shape[:2], dtype=torch.bool)
    return PMTRec(**params)(grads, present, {}, StepInfo(epoch=epoch))


# --- golden table ----------------------------------------------------------------------------------------
# Gradients G0 = (3, 0) (main, n0 = 3) and G1 = (0, 4) (aux, n1 = 4) unless stated; update = (3 c0, 4 c1).
GOLDEN = [
    # 1. α = 1, τ = 1, unit. p = (3/7, 4/7); w0 = e^{3/7} / (e^{3/7} + e^{4/7}) = 1 / (1 + e^{1/7})
    #    = 0.464346, w1 = 0.535654; S = Σ w n = 3 w0 + 4 w1 = 3.535654;
    #    c_t = w_t S / n_t = (0.547256, 0.473471); update = (w0 S, w1 S) = (1.641768, 1.893886).
    (
        dict(alpha=1.0, tau=1.0, combine="unit"),
        [[3.0, 0.0], [0.0, 4.0]],
        0,
        (1 / (1 + E(1 / 7)), E(1 / 7) / (1 + E(1 / 7))),
        (0.547255934, 0.473471467),
        (1.641767803, 1.893885868),
    ),
    # 2. same, raw: c = w, update = (3 w0, 4 w1) = (1.393039, 2.142615).
    (
        dict(alpha=1.0, tau=1.0, combine="raw"),
        [[3.0, 0.0], [0.0, 4.0]],
        0,
        (0.464346329, 0.535653671),
        (0.464346329, 0.535653671),
        (1.393038987, 2.142614683),
    ),
    # 3. focusing, α = 1.1, epoch s = 2: n'0 = 1.21 · 3 = 3.63, p = (3.63, 4) / 7.63 = (0.475754, 0.524246),
    #    w0 = 1 / (1 + e^{p1 - p0}) = 0.487879; S = 3 w0 + 4 w1 = 3.512121 (un-boosted norms);
    #    update = (w0 S, w1 S) = (1.713491, 1.798630).
    (
        dict(alpha=1.1, tau=1.0, combine="unit"),
        [[3.0, 0.0], [0.0, 4.0]],
        2,
        (0.487879177, 0.512120823),
        (0.487879177 * 3.512120823 / 3, 0.512120823 * 3.512120823 / 4),
        (1.713490617, 1.798630205),
    ),
    # 4. τ = 0.5: logits p/τ = (6/7, 8/7), w0 = 1 / (1 + e^{2/7}) = 0.429053; S = 3.570947;
    #    update = (1.532127, 2.038820).
    (
        dict(alpha=1.0, tau=0.5, combine="unit"),
        [[3.0, 0.0], [0.0, 4.0]],
        0,
        (0.429053403, 0.570946597),
        (0.429053403 * 3.570946597 / 3, 0.570946597 * 3.570946597 / 4),
        (1.532126790, 2.038819807),
    ),
    # 5. logit focus, α = 2, s = 1: p = (3/7, 4/7) from raw norms, logits (3/7 + ln 2, 4/7),
    #    w0 = 2 e^{3/7} / (2 e^{3/7} + e^{4/7}) = 0.634203; S = 3.365797; update = (2.134598, 1.231199).
    (
        dict(alpha=2.0, tau=1.0, focus="logit", combine="unit"),
        [[3.0, 0.0], [0.0, 4.0]],
        1,
        (0.634202879, 0.365797121),
        (0.634202879 * 3.365797121 / 3, 0.365797121 * 3.365797121 / 4),
        (2.134598225, 1.231198895),
    ),
    # 6. three tasks, the middle one present with a zero gradient: n = (3, 0, 4), p = (3/7, 0, 4/7),
    #    w ∝ (e^{3/7}, 1, e^{4/7}) = (0.356506, 0.232242, 0.411253); S = 3 w0 + 4 w2 = 2.714527;
    #    c = (w0 S / 3, 0, w2 S / 4); update = (w0 S, w2 S) = (0.967745, 1.116356).
    (
        dict(alpha=1.0, tau=1.0, combine="unit"),
        [[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]],
        0,
        (0.356505724, 0.232241753, 0.411252523),
        (0.356505724 * 2.714527265 / 3, 0.0, 0.411252523 * 2.714527265 / 4),
        (0.967744508, 1.116356188),
    ),
    # 7. equal norms (5 and 5, non-orthogonal): p = (1/2, 1/2), w = (1/2, 1/2), S = 5, c = (1/2, 1/2):
    #    update = mean of G0 = (3, 4) and G1 = (5, 0) = (4, 2) (raw, the default; unit agrees here).
    (dict(alpha=1.0, tau=1.0), [[3.0, 4.0], [5.0, 0.0]], 0, (0.5, 0.5), (0.5, 0.5), (4.0, 2.0)),
]


@pytest.mark.parametrize("params, grads, epoch, w, c, update", GOLDEN, ids=[f"case{i + 1}" for i in range(7)])
def test_golden(params, grads, epoch, w, c, update):
    out = aggregate(grads, epoch=epoch, **params)
    tol = dict(rtol=0, atol=2e-9)
    torch.testing.assert_close(out.logged_weights[0], torch.tensor(w, dtype=torch.float64), **tol)
    torch.testing.assert_close(out.coefficients[0], torch.tensor(c, dtype=torch.float64), **tol)
    torch.testing.assert_close(out.update[0], torch.tensor(update, dtype=torch.float64), **tol)


def test_golden_first_case_closed_form():
    """Case 1 again, straight from the formulas, so the literals above are checkable."""
    w0 = E(3 / 7) / (E(3 / 7) + E(4 / 7))
    s = 3 * w0 + 4 * (1 - w0)
    out = aggregate([[3.0, 0.0], [0.0, 4.0]], alpha=1.0, combine="unit")
    torch.testing.assert_close(out.update[0], torch.tensor([w0 * s, (1 - w0) * s], dtype=torch.float64))


# --- properties ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "params",
    [{}, {"combine": "raw"}, {"focus": "logit"}, {"alpha": 1.5, "tau": 0.1}, {"alpha": 10.0, "tau": 100.0}],
)
@pytest.mark.parametrize("epoch", [0, 5, 10_000])
def test_main_only_row_keeps_exactly_its_gradient(params, epoch, dtype):
    grads, present = random_case("row", seed=20, shape=(64, 4, 32), dtype=dtype)
    present[:, 1:] = False
    present[:, 0] = True
    grads[:, 0] = torch.randn(64, 32, dtype=dtype) * torch.logspace(-6, 6, 64, dtype=dtype).unsqueeze(1)
    grads[:, 1:] = torch.randn(64, 3, 32, dtype=dtype)  # absent: must not matter
    out = make_aggregator("pmtrec", **params)(grads, present, {}, StepInfo(epoch=epoch))
    assert torch.equal(out.update, grads[:, 0])
    assert (out.coefficients[:, 0] == 1).all() and (out.coefficients[:, 1:] == 0).all()


def test_large_tau_without_focusing_gives_uniform_weights():
    grads, present = random_case("row", seed=21, shape=(200, 4, 16))
    out = make_aggregator("pmtrec", alpha=1.0, tau=100.0)(grads, present, {}, StepInfo(epoch=50))
    w = out.logged_weights
    n_present = present.sum(1, keepdim=True)
    uniform = torch.where(present, 1.0 / n_present.clamp(min=1), torch.zeros_like(w))
    # p/τ ∈ [0, 0.01], so every w_t is within a factor e^{0.01} of 1/|A|
    torch.testing.assert_close(w, uniform, rtol=0.011, atol=0)
    # ... whereas a small τ is far from uniform on the same rows
    sharp = make_aggregator("pmtrec", alpha=1.0, tau=0.1)(grads, present, {}, StepInfo()).logged_weights
    assert (sharp - uniform).abs().max() > 0.2


def weights_over_epochs(epochs, **params):
    grads = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, -3.0]]])  # main has the smallest norm
    agg = PMTRec(**params)
    present = torch.ones(1, 3, dtype=torch.bool)
    return torch.stack([agg(grads, present, {}, StepInfo(epoch=s)).logged_weights[0] for s in epochs])


def test_focusing_moves_weight_to_the_main_task_monotonically():
    epochs = range(0, 200)
    w = weights_over_epochs(epochs, alpha=1.2, tau=0.05)
    w0 = w[:, 0]
    assert (w0[1:] >= w0[:-1]).all(), "w_0 must not decrease with the epoch"
    assert w0[0] < 0.01 and w0[-1] > 0.999


def test_norm_focusing_saturates_at_the_softmax_bound():
    """[reading] consequence: with focus="norm", p_0 → 1 so w_0 → e^{1/τ} / (e^{1/τ} + |A| − 1), not 1."""
    w0 = weights_over_epochs([0, 10, 100, 10_000], alpha=1.5, tau=1.0)[:, 0]
    bound = E(1.0) / (E(1.0) + 2)
    assert (w0[1:] >= w0[:-1]).all()
    assert w0[-1] == pytest.approx(bound, rel=1e-6)


def test_logit_focusing_goes_all_the_way_to_the_main_task():
    w0 = weights_over_epochs([0, 10, 100, 10_000], alpha=1.5, tau=1.0, focus="logit")[:, 0]
    assert (w0[1:] >= w0[:-1]).all()
    assert w0[-1] == pytest.approx(1.0, abs=1e-6)


def test_alpha_one_disables_focusing():
    w = weights_over_epochs([0, 7, 10_000], alpha=1.0, tau=0.3)
    torch.testing.assert_close(w[1:], w[:1].expand(2, -1))


@pytest.mark.parametrize("focus", ["norm", "logit"])
@pytest.mark.parametrize("combine", ["unit", "raw"])
@pytest.mark.parametrize("main_zero", [False, True])
def test_no_overflow_after_many_epochs(focus, combine, main_zero):
    grads, present = random_case("row", seed=22, shape=(128, 4, 64))
    if main_zero:
        grads[:, 0] = 0.0
    agg = PMTRec(alpha=10.0, tau=0.1, focus=focus, combine=combine)
    out = agg(grads, present, {}, StepInfo(epoch=10_000))
    assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
    w = out.logged_weights
    assert torch.isfinite(w).all()
    has_task = present.any(1)
    torch.testing.assert_close(w.sum(1)[has_task], torch.ones(int(has_task.sum())))
    if not main_zero:
        # the main task dominates wherever it is present (log-space boost of 10 000 · ln 10)
        boosted = present[:, 0] & (grads[:, 0].norm(dim=1) > 0)
        limit = E(10.0) / (E(10.0) + present.sum(1) - 1) if focus == "norm" else torch.ones(128)
        torch.testing.assert_close(w[boosted, 0], limit[boosted].float(), rtol=1e-5, atol=1e-6)


def test_raw_and_unit_differ_but_are_both_finite():
    grads, present = random_case("row", seed=23)
    unit = PMTRec(combine="unit")(grads, present, {}, StepInfo(epoch=4))
    raw = PMTRec(combine="raw")(grads, present, {}, StepInfo(epoch=4))
    assert torch.isfinite(unit.update).all() and torch.isfinite(raw.update).all()
    torch.testing.assert_close(unit.logged_weights, raw.logged_weights)  # same w
    torch.testing.assert_close(raw.coefficients, raw.logged_weights)  # raw: c = w
    assert (unit.update - raw.update).abs().max() > 1e-3


def test_unit_equals_raw_when_all_norms_are_equal():
    """c_t = w_t (Σ w n) / n_t = w_t when every present n_t = n."""
    grads, present = random_case("row", seed=24, dtype=torch.float64)
    norms = grads.norm(dim=-1, keepdim=True)
    present = present & (norms[..., 0] > 0)  # every present task has norm exactly 2.5
    grads = grads / norms.clamp(min=1e-300) * 2.5
    unit = PMTRec(combine="unit")(grads, present, {}, StepInfo(epoch=3))
    raw = PMTRec(combine="raw")(grads, present, {}, StepInfo(epoch=3))
    torch.testing.assert_close(unit.update, raw.update, rtol=1e-12, atol=1e-12)


def test_unit_update_norm_is_bounded_by_the_weighted_mean_norm():
    """||Σ_t w_t S u_t|| ≤ S Σ_t w_t = S with S = Σ w_t n_t (triangle inequality), equality when aligned."""
    grads, present = random_case("row", seed=25, dtype=torch.float64)
    out = PMTRec()(grads, present, {}, StepInfo(epoch=2))
    s = (out.logged_weights * grads.norm(dim=-1)).sum(1)
    assert (out.update.norm(dim=1) <= s * (1 + 1e-12) + 1e-15).all()
    aligned = grads[:, :1].expand(-1, 4, -1) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1)
    out = PMTRec()(aligned.contiguous(), present, {}, StepInfo())
    s = (out.logged_weights * aligned.norm(dim=-1)).sum(1)
    torch.testing.assert_close(out.update.norm(dim=1), s)


def test_main_task_index_is_respected():
    grads, present = random_case("row", seed=26)
    swap = torch.tensor([1, 0, 2, 3])
    a = PMTRec(main_task=0)(grads, present, {}, StepInfo(epoch=6))
    b = PMTRec(main_task=1)(grads[:, swap], present[:, swap], {}, StepInfo(epoch=6))
    torch.testing.assert_close(b.update, a.update)
    torch.testing.assert_close(b.coefficients, a.coefficients[:, swap])


def test_tiny_norms_do_not_overflow():
    grads = torch.zeros(2, 2, 3)
    grads[:, 0, 0] = 1e18  # main norm 1e18
    grads[0, 1, 1] = 1e-22  # aux norm barely representable: S / n1 ≈ 1e40 overflows float32
    grads[1, 1, 1] = 1e-30  # underflows in the norm: treated as a zero gradient
    out = PMTRec(alpha=1.0, combine="unit")(grads, torch.ones(2, 2, dtype=torch.bool), {}, StepInfo())
    assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
    assert out.coefficients[1, 1] == 0


def test_pure_weight_function_matches_the_aggregator():
    grads, present = random_case("row", seed=27, dtype=torch.float64)
    norms = grads.norm(dim=-1) * present
    w = pmtrec_task_weights(norms, present, 9, alpha=1.3, tau=0.7, focus="norm", main_task=0)
    out = PMTRec(alpha=1.3, tau=0.7)(grads, present, {}, StepInfo(epoch=9))
    torch.testing.assert_close(w, out.logged_weights)
    # and it is the plain (non-log-space) formula where that one does not overflow
    boosted = norms.clone()
    boosted[:, 0] *= 1.3**9
    p = boosted / boosted.sum(1, keepdim=True).clamp(min=1e-300)
    plain = torch.softmax((p / 0.7).masked_fill(~present, float("-inf")), dim=1).nan_to_num(0.0)
    torch.testing.assert_close(w, plain)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    log_scale=st.floats(-15, 15),
    epoch=st.integers(0, 10_000),
    alpha=st.floats(1.0, 10.0),
    tau=st.floats(1e-3, 100.0),
    combine=st.sampled_from(["unit", "raw"]),
    focus=st.sampled_from(["norm", "logit"]),
    zero_frac=st.floats(0.0, 1.0),
)
def test_always_finite(seed, log_scale, epoch, alpha, tau, combine, focus, zero_frac):
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(16, 3, 8, generator=gen) * 10.0**log_scale
    grads = grads * (torch.rand(16, 3, 1, generator=gen) >= zero_frac)
    present = torch.rand(16, 3, generator=gen) < 0.7
    out = PMTRec(alpha=alpha, tau=tau, combine=combine, focus=focus)(
        grads, present, {}, StepInfo(epoch=epoch)
    )
    assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
    assert (out.update[~present.any(1)] == 0).all()


# --- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param, value",
    [
        ("alpha", 0.99),
        ("alpha", 0.0),
        ("alpha", 10.5),
        ("alpha", float("nan")),
        ("alpha", float("inf")),
        ("alpha", "1.1"),
        ("alpha", True),
        ("tau", 0.0),
        ("tau", -1.0),
        ("tau", 101.0),
        ("tau", float("nan")),
        ("tau", float("inf")),
        ("tau", None),
        ("combine", "sum"),
        ("focus", "epoch"),
        ("main_task", -1),
        ("main_task", 1.0),
    ],
)
def test_invalid_hyper_parameters_are_config_errors(param, value):
    with pytest.raises(ConfigError, match=param) as err:
        make_aggregator("pmtrec", **{param: value})
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("alpha, tau", [(1.0, 1e-6), (1.5, 0.1), (10.0, 100.0), (1, 1)])
def test_valid_hyper_parameters_at_the_edges(alpha, tau):
    assert make_aggregator("pmtrec", alpha=alpha, tau=tau).alpha == alpha


def test_main_task_beyond_the_tasks_is_a_config_error():
    with pytest.raises(ConfigError, match="main_task=3"):
        PMTRec(main_task=3)(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), {}, StepInfo())


def test_pure_weight_function_ignores_absent_norms():
    norms = torch.tensor([[3.0, 4.0, 1e6], [0.0, 2.0, 5.0]])
    present = torch.tensor([[True, True, False], [False, True, True]])
    w = pmtrec_task_weights(norms, present, 4, alpha=1.2, tau=0.5)
    masked = pmtrec_task_weights(norms * present, present, 4, alpha=1.2, tau=0.5)
    torch.testing.assert_close(w, masked)
    assert w[0, 2] == 0 and w[1, 0] == 0


def test_uniform_balance_gives_equal_weights_whatever_the_focus():
    """The ablation without Gradient Magnitude Balancing: w_t = 1/|A| on the present tasks, so
    c_t = (1/|A|) · (Σ_k n_k / |A|) / n_t (combine=unit), and α^epoch changes nothing."""
    grads = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [9.0, 9.0], [6.0, 8.0]]])
    present = torch.tensor([[True, True, False], [True, False, True]])
    agg = PMTRec(balance="uniform", alpha=1.5, combine="unit")
    for epoch in (0, 7):
        out = agg(grads, present, {}, StepInfo(epoch=epoch))
        norms = torch.tensor([[5.0, 1.0, 0.0], [2.0, 0.0, 10.0]])
        expected = torch.tensor(
            [[0.5 * 3.0 / 5.0, 0.5 * 3.0 / 1.0, 0.0], [0.5 * 6.0 / 2.0, 0.0, 0.5 * 6.0 / 10.0]]
        )
        torch.testing.assert_close(out.coefficients, expected)
        torch.testing.assert_close(out.logged_weights, torch.where(present, 0.5, 0.0))
        assert norms.shape == expected.shape
