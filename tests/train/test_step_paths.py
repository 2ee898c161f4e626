"""The step's three execution paths (fixed weights, norm-based slots, dense G) compute the same update."""

from __future__ import annotations

import copy

import pytest
import torch

from recmtl.aggregators import make_aggregator
from recmtl.aggregators.base import StepInfo
from recmtl.train import step as step_mod
from recmtl.train.step import RowWorkspace, scatter_rows


def _gathered(n_rows=40, dim=5, seed=0):
    """Three tasks' gathered rows with duplicates, as the step sees them after backward."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for t, n in enumerate((30, 25, 12)):
        ids = torch.randint(n_rows if t != 2 else 10, (n,), generator=gen)
        leaf = torch.zeros(n, dim, requires_grad=True)
        leaf.grad = torch.randn(n, dim, generator=gen)
        parts.append((t, ids, leaf))
    return parts


def _reference_dense(parts, n_rows, n_tasks, dim):
    g = torch.zeros(n_rows, n_tasks, dim)
    present = torch.zeros(n_rows, n_tasks, dtype=torch.bool)
    for t, ids, leaf in parts:
        for j in range(ids.numel()):  # a plain loop: the independent reference
            g[ids[j], t] += leaf.grad[j]
            present[ids[j], t] = True
    return g, present


def test_scatter_matches_a_loop():
    parts = _gathered()
    sc = scatter_rows(parts, 3, RowWorkspace(40, torch.device("cpu")))
    g, present = _reference_dense(parts, 40, 3, 5)
    touched = present.any(1).nonzero().squeeze(1)
    assert torch.equal(sc.rows, touched)
    torch.testing.assert_close(sc.dense(3), g[touched])
    assert torch.equal(sc.present, present[touched])
    torch.testing.assert_close(sc.summed(), g[touched].sum(1))


def test_workspace_is_clean_after_use():
    ws = RowWorkspace(50, torch.device("cpu"))
    rows, inverse = ws.unique(torch.tensor([7, 3, 7, 49, 0]))
    assert rows.tolist() == [0, 3, 7, 49] and rows[inverse].tolist() == [7, 3, 7, 49, 0]
    assert not ws.mark.any()
    rows2, _ = ws.unique(torch.tensor([5]))
    assert rows2.tolist() == [5]


@pytest.mark.parametrize("mode", ["row", "global"])
@pytest.mark.parametrize(
    "name,params",
    [
        ("pmtrec", {}),
        ("pmtrec", {"alpha": 1.5, "tau": 0.3}),
        ("pmtrec", {"combine": "raw", "focus": "logit"}),
        ("ew", {}),
    ],
)
def test_slot_path_equals_dense_aggregator_call(name, params, mode):
    agg = make_aggregator(name, **params)
    parts = _gathered(seed=3)
    sc = scatter_rows(parts, 3, RowWorkspace(40, torch.device("cpu")))
    info = StepInfo(epoch=4)
    slot_update, _, slot_logged, _ = step_mod.aggregate_slots(agg, mode, sc, info, None)
    # only the aggregator and the mode of the plan are read
    plan = step_mod.StepPlan([None] * 3, agg, mode, None, None, None, None, None)
    dense_update, _, dense_logged, _ = step_mod.aggregate(plan, sc.dense(3), sc.present, info, None)
    torch.testing.assert_close(slot_update, dense_update, rtol=1e-5, atol=1e-6)
    # the logged task weights agree too (the slot path computes them only where several tasks meet)
    torch.testing.assert_close(slot_logged.expand_as(dense_logged), dense_logged, rtol=1e-5, atol=1e-6)


def test_pmtrec_slot_path_keeps_main_only_rows_exact():
    agg = make_aggregator("pmtrec")
    parts = [copy.copy(p) for p in _gathered(seed=5)]
    sc = scatter_rows(parts, 3, RowWorkspace(40, torch.device("cpu")))
    update, *_ = step_mod.aggregate_slots(agg, "row", sc, StepInfo(epoch=2), None)
    main_only = sc.present[:, 0] & ~sc.present[:, 1:].any(1)
    assert main_only.any()
    torch.testing.assert_close(update[main_only], sc.dense(3)[main_only, 0], rtol=1e-6, atol=1e-7)
