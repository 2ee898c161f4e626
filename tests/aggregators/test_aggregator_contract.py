"""The contract every registered aggregator honours, in both modes (STYLE.md "Habits" 6).

Parametrised over ``aggregator_cases.CONFIGS`` (every registered name with its defaults, plus PMTRec's
[reading] options) × {"row", "global"}.
"""

from __future__ import annotations

import pytest
import torch

from recmtl.aggregators import AGGREGATORS, Aggregation, StepInfo, make_aggregator
from recmtl.aggregators.base import MODES
from tests.aggregators.aggregator_cases import CONFIGS, SHAPES, config_id, random_case

MODE_LIST = sorted(MODES)
# Methods for which grads × k → update × k (k > 0) does not hold (e.g. loss-based weightings).
NOT_SCALE_EQUIVARIANT: set[str] = {
    "gradnorm",  # w learns from the gradient norms through Adam, whose eps sees their scale (after step 1)
    "nashmtl",  # Gα = 1/α gives α ∝ 1/scale: the update Σ β_t g_t/‖g_t‖ is scale-invariant, then clipped
    "fairgrad",  # Gw = w^{-1/a}: the update scales as k^{(1-a)/(1+a)} (scale-invariant at a = 1)
    "gradvac",  # torchjd's absolute eps = 1e-8 in the cosine: equivariant only for norms >> 1e-4 (or eps = 0)
    "pcd",  # torchjd's absolute eps = 1e-8 in 1/sqrt(v + eps): equivariant for norms >> 1e-4 (or eps = 0)
}
# Methods whose coefficients do not follow a permutation of the tasks here, by design.
NOT_PERMUTATION_INVARIANT: set[str] = {
    "rlw",  # the i-th random draw goes to task i: permutation invariant in distribution only
    "pcgrad",  # random projection order drawn per (row, task index): invariant in distribution only
    "gradvac",  # random visiting order drawn per (row, task index), as pcgrad: invariant in distribution only
}
# Methods for which batched != a loop over rows calling the method on each row alone, by design (e.g. global
# weights from the whole step: gradient norms over all rows, the tasks present on any row, one random draw).
NOT_ROW_SEPARABLE: set[str] = {
    "rlw",  # the softmax runs over the tasks present in the step, not in the row
    "gradnorm",  # w learns from each task's gradient norm over all rows (equal to the loop at step 1 only)
    "famo",  # the normaliser c runs over the tasks present in the step
    "dbmtl",  # α reads each task's gradient norm over all rows
    "pcgrad",  # a row's random order depends on its position in the batch (equal in distribution only)
    "gradvac",  # as pcgrad; with the order fixed it is separable (tests/aggregators/test_methods_more.py)
}


def losses(n_tasks: int) -> torch.Tensor:
    """[T] positive task losses over two orders of magnitude (what loss-based methods read)."""
    return torch.logspace(-1, 1, n_tasks)


def info(epoch: int = 3, n_tasks: int = 4, task_order: torch.Tensor | None = None) -> StepInfo:
    step_losses = losses(n_tasks) if task_order is None else losses(n_tasks)[task_order]
    return StepInfo(epoch=epoch, step=11, losses=step_losses, generator=torch.Generator().manual_seed(7))


def run(agg, grads, present, epoch: int = 3, task_order: torch.Tensor | None = None) -> Aggregation:
    """``agg`` on a dense row-mode call (global mode is R = 1 of it); ``task_order`` permutes the losses
    as the caller permuted the tasks."""
    R, T, _ = grads.shape
    return agg(grads, present, agg.init_state(T, R), info(epoch, T, task_order))


def close(a: torch.Tensor, b: torch.Tensor, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    # atol relative to the magnitude of the reference, so the global-mode case (large D) is judged fairly
    scale = float(b.abs().max()) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(scale, 1.0))


def test_every_registered_aggregator_is_in_the_contract():
    assert {name for name, _ in CONFIGS} == set(AGGREGATORS)
    for name, cls in AGGREGATORS.items():
        assert cls.name == name
        assert cls.modes and cls.modes <= MODES


@pytest.fixture(params=MODE_LIST)
def mode(request, aggregator):
    if request.param not in aggregator.modes:
        pytest.skip(f"{aggregator.name} does not support {request.param} mode")
    return request.param


def test_shapes_dtypes_and_finite(aggregator, mode):
    grads, present = random_case(mode)
    out = run(aggregator, grads, present)
    R, T, D = grads.shape
    assert out.update.shape == (R, D)
    assert out.update.dtype == grads.dtype
    assert torch.isfinite(out.update).all()
    if out.coefficients is not None:
        assert out.coefficients.shape == (R, T)
        assert torch.isfinite(out.coefficients).all()
        assert (out.coefficients[~present] == 0).all(), "absent tasks must get coefficient 0"
    if out.logged_weights is not None:
        assert out.logged_weights.shape == (R, T) and torch.isfinite(out.logged_weights).all()


def test_coefficients_reproduce_the_update(aggregator, mode):
    grads, present = random_case(mode, seed=1, dtype=torch.float64)
    out = run(aggregator, grads, present)
    if out.coefficients is None:
        pytest.skip("not linear")
    close(out.update, torch.einsum("rt,rtd->rd", out.coefficients, grads), rtol=1e-10, atol=1e-12)


def test_rows_without_present_task_get_zero(aggregator):
    grads, present = random_case("row", seed=2)
    present[10:20] = False
    grads[10:20] = 0.0
    out = run(aggregator, grads, present)
    assert (out.update[~present.any(1)] == 0).all()
    assert out.coefficients is None or (out.coefficients[~present.any(1)] == 0).all()


@pytest.mark.parametrize("what", ["all zero", "no task present", "present but zero"])
def test_degenerate_inputs_stay_finite(aggregator, mode, what):
    R, T, D = (9, 3, 8) if mode == "row" else (1, 3, 4096)
    grads = torch.randn(R, T, D, generator=torch.Generator().manual_seed(3))
    present = torch.ones(R, T, dtype=torch.bool)
    if what == "all zero":
        grads.zero_()
    elif what == "no task present":
        present.zero_()
        grads.zero_()
    else:
        grads[:, 1] = 0.0
    for epoch in (0, 10_000):
        out = run(aggregator, grads, present, epoch=epoch)
        assert torch.isfinite(out.update).all()
        assert out.coefficients is None or torch.isfinite(out.coefficients).all()
        if what != "present but zero":
            assert (out.update == 0).all()


def test_absent_tasks_are_ignored(aggregator, mode):
    grads, present = random_case(mode, seed=4)
    noise = 100.0 * torch.randn(grads.shape, generator=torch.Generator().manual_seed(5))
    polluted = torch.where(present.unsqueeze(-1), grads, noise)
    assert not torch.equal(polluted, grads)
    a, b = run(aggregator, grads, present), run(aggregator, polluted, present)
    close(b.update, a.update, rtol=1e-6, atol=1e-7)
    if a.coefficients is not None:
        close(b.coefficients, a.coefficients, rtol=1e-6, atol=1e-7)


def test_permuting_non_main_tasks_changes_nothing(aggregator, mode):
    if aggregator.name in NOT_PERMUTATION_INVARIANT:
        pytest.skip("not permutation invariant here by design")
    grads, present = random_case(mode, seed=6)
    T = grads.shape[1]
    perm = torch.tensor([0, *range(T - 1, 0, -1)])  # main stays first, the others reversed
    assert T > 2 and not torch.equal(perm, torch.arange(T))
    a = run(aggregator, grads, present)
    b = run(aggregator, grads[:, perm], present[:, perm], task_order=perm)
    close(b.update, a.update)
    if a.coefficients is not None:
        close(b.coefficients, a.coefficients[:, perm])


@pytest.mark.parametrize("k", [1e-3, 0.5, 7.0, 1e3])
def test_scale_equivariance(aggregator, mode, k):
    if aggregator.name in NOT_SCALE_EQUIVARIANT:
        pytest.skip("not scale equivariant by design")
    # float64: the property is the method's; in float32 a cancelling update (dbmtl's equal-norm terms) is
    # off by one rounding step of its largest term, which atol = 1e-6 · k does not allow at k = 1e-3
    grads, present = random_case(mode, seed=9, dtype=torch.float64)
    a = run(aggregator, grads, present)
    b = run(aggregator, grads * k, present)
    close(b.update, a.update * k, rtol=1e-4, atol=1e-6 * k)


def test_batched_equals_loop_over_rows(aggregator, mode):
    if aggregator.name in NOT_ROW_SEPARABLE:
        pytest.skip("batched != loop over rows by design (see NOT_ROW_SEPARABLE)")
    shape = (40, 4, 16) if mode == "row" else (3, 4, SHAPES["global"][2])
    grads, present = random_case("row", seed=10, shape=shape)
    batched = run(aggregator, grads, present)
    for r in range(grads.shape[0]):
        single = run(aggregator, grads[r : r + 1], present[r : r + 1])
        close(single.update[0], batched.update[r])
        if batched.coefficients is not None:
            close(single.coefficients[0], batched.coefficients[r])


def test_deterministic(aggregator, mode):
    grads, present = random_case(mode, seed=11)
    a, b = run(aggregator, grads, present), run(aggregator, grads.clone(), present.clone())
    assert torch.equal(a.update, b.update)
    assert (a.coefficients is None) == (b.coefficients is None)
    if a.coefficients is not None:
        assert torch.equal(a.coefficients, b.coefficients)


def test_inputs_untouched_and_no_autograd_graph(aggregator, mode):
    grads, present = random_case(mode, seed=12)
    grads.requires_grad_(True)
    before, before_present = grads.detach().clone(), present.clone()
    out = run(aggregator, grads, present)
    assert not out.update.requires_grad
    assert torch.equal(grads.detach(), before) and torch.equal(present, before_present)


FIXED = [c for c in CONFIGS if make_aggregator(c[0], **c[1]).fixed_weights]


@pytest.mark.parametrize("config", FIXED, ids=[config_id(c) for c in FIXED])
def test_fixed_weights_are_constant_zero_one(config, mode):
    aggregator = make_aggregator(config[0], **config[1])
    grads, present = random_case(mode, seed=13)
    out = run(aggregator, grads, present)
    fixed = aggregator.fixed_task_weights(grads.shape[1])
    assert fixed is not None and set(fixed.tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out.coefficients, present.float() * fixed)


@pytest.mark.parametrize(
    "grads, present",
    [
        (torch.zeros(4, 3), torch.ones(4, 3, dtype=torch.bool)),  # not 3-D
        (torch.zeros(4, 3, 2), torch.ones(4, 3)),  # mask not bool
        (torch.zeros(4, 3, 2), torch.ones(4, 2, dtype=torch.bool)),  # mask shape
        (torch.zeros(4, 3, 2, dtype=torch.int64), torch.ones(4, 3, dtype=torch.bool)),  # not float
    ],
)
def test_malformed_inputs_raise(aggregator, grads, present):
    with pytest.raises(ValueError):
        aggregator(grads, present, {}, info(3, 3))


IDENTITY = [c for c in CONFIGS if make_aggregator(c[0], **c[1]).identity_on_single_task]


@pytest.mark.parametrize("config", IDENTITY, ids=[config_id(c) for c in IDENTITY])
@pytest.mark.parametrize("epoch", [0, 3, 10_000])
def test_identity_on_single_task_rows(config, epoch):
    """What the trainer's shortcut relies on: a row with one present task passes its gradient through."""
    aggregator = make_aggregator(config[0], **config[1])
    gen = torch.Generator().manual_seed(epoch)
    grads = torch.randn(24, 3, 5, generator=gen) * torch.rand(24, 3, 1, generator=gen) * 10
    present = torch.zeros(24, 3, dtype=torch.bool)
    present[torch.arange(24), torch.arange(24) % 3] = True  # exactly one task per row, each task in turn
    grads[5, 2] = 0.0  # a zero gradient too
    out = aggregator(grads, present, aggregator.init_state(3, 24), info(epoch, 3))
    torch.testing.assert_close(out.update, grads[present], rtol=1e-6, atol=1e-7)
    logged = out.logged_weights
    nonzero_rows = grads.norm(dim=2)[present] > 0
    assert torch.equal(out.coefficients[present][nonzero_rows], torch.ones(int(nonzero_rows.sum())))
    assert torch.equal(logged[present], torch.ones(24))
