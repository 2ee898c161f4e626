"""TaskGrads, the compact per-(row, task) gradients every aggregator receives, against plain loops; and, for
every registered method in both modes, the compact aggregation (single-task shortcut, scaled scatter)
equal to the dense reference: ``weigh`` on the full [R, T, D] tensor and ``einsum`` of its coefficients."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmtl.aggregators import AGGREGATORS, StepInfo, TaskGrads, make_aggregator
from tests.aggregators.aggregator_cases import CONFIGS, config_id


def entries(n_rows: int, n_tasks: int, dim: int, n: int, seed: int, dtype=torch.float64):
    """``n`` random entries (duplicates likely) over ``n_rows`` rows; the last row gets none if n_rows > 1."""
    gen = torch.Generator().manual_seed(seed)
    rows_with_entries = max(n_rows - 1, 1)
    row_of = torch.randint(rows_with_entries, (n,), generator=gen)
    task_of = torch.randint(n_tasks, (n,), generator=gen)
    scales = torch.logspace(-2, 1, n_tasks, dtype=dtype)[task_of].unsqueeze(1)
    values = torch.randn(n, dim, generator=gen, dtype=dtype) * scales
    return values, row_of, task_of


def loop_dense(values, row_of, task_of, n_rows, n_tasks):
    """The independent reference: G [R, T, D] and P [R, T] by a plain loop over the entries."""
    g = torch.zeros(n_rows, n_tasks, values.shape[1], dtype=values.dtype)
    present = torch.zeros(n_rows, n_tasks, dtype=torch.bool)
    for n in range(values.shape[0]):
        g[row_of[n], task_of[n]] += values[n]
        present[row_of[n], task_of[n]] = True
    return g, present


def test_views_match_loops_in_row_mode():
    values, row_of, task_of = entries(9, 3, 5, 40, seed=0)
    grads = TaskGrads.from_entries(values, row_of, task_of, 9, 3)
    g, present = loop_dense(values, row_of, task_of, 9, 3)
    assert torch.equal(grads.present, present) and not present[8].any()
    torch.testing.assert_close(grads.dense, g)
    torch.testing.assert_close(grads.norms(), g.norm(dim=-1))
    torch.testing.assert_close(grads.gram(), torch.stack([x @ x.T for x in g]))
    c = torch.randn(9, 3, dtype=torch.float64) * present
    torch.testing.assert_close(grads.combine(c), torch.einsum("rt,rtd->rd", c, g))
    torch.testing.assert_close(grads.summed(), g.sum(1))


def test_views_match_loops_in_global_mode():
    values, row_of, task_of = entries(7, 4, 3, 30, seed=1)
    grads = TaskGrads.from_entries(values, row_of, task_of, 7, 4, mode="global")
    g, present = loop_dense(values, row_of, task_of, 7, 4)
    flat = torch.stack([g[:, t].reshape(-1) for t in range(4)]).unsqueeze(0)  # task t: its rows in order
    assert torch.equal(grads.present, present.any(0, keepdim=True))
    torch.testing.assert_close(grads.dense, flat)
    torch.testing.assert_close(grads.norms(), flat.norm(dim=-1))
    torch.testing.assert_close(grads.gram()[0], flat[0] @ flat[0].T)
    c = torch.randn(1, 4, dtype=torch.float64)
    torch.testing.assert_close(grads.combine(c), torch.einsum("t,rtd->rd", c[0], g))


def test_select_keeps_the_chosen_rows_only():
    values, row_of, task_of = entries(10, 3, 4, 50, seed=2)
    grads = TaskGrads.from_entries(values, row_of, task_of, 10, 3)
    rows = torch.tensor([1, 4, 5, 9])
    sub = grads.select(rows)
    assert sub.n_rows == 4 and torch.equal(sub.present, grads.present[rows])
    torch.testing.assert_close(sub.dense, grads.dense[rows])


def test_from_dense_never_reads_absent_entries():
    g = torch.randn(4, 3, 2)
    present = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    polluted = torch.where(present.unsqueeze(-1), g, torch.full_like(g, float("nan")))
    grads = TaskGrads.from_dense(polluted, present)
    assert torch.isfinite(grads.dense).all()
    torch.testing.assert_close(grads.dense, g * present.unsqueeze(-1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: TaskGrads(
            torch.zeros(3, 2),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            torch.ones(1, 2, dtype=torch.bool),
        ),  # task_of length
        lambda: TaskGrads(
            torch.zeros(3),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.ones(1, 2, dtype=torch.bool),
        ),  # values not [N, D]
        lambda: TaskGrads(
            torch.zeros(3, 2),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.ones(1, 2),
        ),  # present not bool
        lambda: TaskGrads.from_dense(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)),
        lambda: TaskGrads.from_dense(torch.zeros(2, 3, 4), torch.ones(2, 2, dtype=torch.bool)),
        lambda: TaskGrads.from_dense(torch.zeros(2, 0, 4), torch.ones(2, 0, dtype=torch.bool)),
        lambda: TaskGrads(
            torch.zeros(0, 2),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            torch.ones(1, 2, dtype=torch.bool),
            mode="rows",
        ),
    ],
)
def test_malformed_task_grads_raise(make):
    with pytest.raises(ValueError):
        make()


# --- the whole registry: compact aggregation == dense reference --------------------------------------------


# Methods that draw random numbers per row (the draws differ once the single-task rows are skipped)
RANDOMISED = {"pcgrad", "gradvac"}


def dense_reference(agg, g, present, mode, info):
    """weigh() on the full dense view (no single-task shortcut) and an einsum combination."""
    n_rows, n_tasks, dim = g.shape
    if mode == "global":
        g_view = g.transpose(0, 1).reshape(1, n_tasks, n_rows * dim)
        p_view = present.any(0, keepdim=True)
    else:
        g_view, p_view = g, present
    state = agg.init_state(n_tasks, n_rows)
    out = agg.weigh(TaskGrads.from_dense(g_view, p_view), state, info)
    update = torch.einsum("rt,rtd->rd", out.coefficients.to(g.dtype), g_view).reshape(n_rows, dim)
    logged = out.coefficients if out.task_weights is None else out.task_weights
    return update, logged


@pytest.mark.parametrize("mode", ["row", "global"])
@pytest.mark.parametrize("config", CONFIGS, ids=[config_id(c) for c in CONFIGS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_rows=st.integers(1, 12),
    n_tasks=st.integers(1, 4),
    dim=st.integers(1, 6),
    n=st.integers(0, 40),
    seed=st.integers(0, 2**16),
    epoch=st.sampled_from([0, 3, 10_000]),
)
def test_compact_aggregation_equals_the_dense_reference(config, mode, n_rows, n_tasks, dim, n, seed, epoch):
    agg = make_aggregator(config[0], **config[1])
    if mode not in agg.modes:
        return
    if mode == "row" and agg.identity_on_single_task and config[0] in RANDOMISED:
        return  # aggregate() draws only for the rows where tasks meet, the reference for every row
    values, row_of, task_of = entries(n_rows, n_tasks, dim, n, seed)
    g, present = loop_dense(values, row_of, task_of, n_rows, n_tasks)
    grads = TaskGrads.from_entries(values, row_of, task_of, n_rows, n_tasks, mode)
    losses = torch.logspace(-1, 1, n_tasks)
    info = StepInfo(epoch=epoch, mode=mode, losses=losses, generator=torch.Generator().manual_seed(seed))
    out = agg.aggregate(grads, agg.init_state(n_tasks, n_rows), info)
    # the reference draws from a generator in the same state (a randomised method draws the same numbers)
    fresh = dataclasses.replace(info, generator=torch.Generator().manual_seed(seed))
    expected, logged = dense_reference(agg, g, present, mode, fresh)
    # atol: a sum that cancels to ~0 differs by float64 rounding (hypothesis found 3e-12 against an exact 0)
    torch.testing.assert_close(out.update, expected, rtol=1e-9, atol=1e-10)
    view = grads.present
    torch.testing.assert_close(out.logged_weights[view], logged.to(out.logged_weights.dtype)[view])


def test_the_compact_test_covers_the_whole_registry():
    assert {name for name, _ in CONFIGS} == set(AGGREGATORS)
