"""What the step hands the aggregator: the de-duplicated rows and their per-task gradients, against a loop.

(The aggregation itself, compact against dense, is tested over the whole registry in
tests/aggregators/test_task_grads.py; the fixed-weight path against the per-task path in test_tasks.py.)
"""

from __future__ import annotations

import torch

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
    rows, grads = scatter_rows(parts, 3, RowWorkspace(40, torch.device("cpu")))
    g, present = _reference_dense(parts, 40, 3, 5)
    touched = present.any(1).nonzero().squeeze(1)
    assert torch.equal(rows, touched)
    torch.testing.assert_close(grads.dense, g[touched])
    assert torch.equal(grads.present, present[touched])
    torch.testing.assert_close(grads.summed(), g[touched].sum(1))


def test_scatter_in_global_mode_flattens_each_task():
    parts = _gathered(seed=1)
    rows, grads = scatter_rows(parts, 3, RowWorkspace(40, torch.device("cpu")), mode="global")
    g, present = _reference_dense(parts, 40, 3, 5)
    touched = present.any(1).nonzero().squeeze(1)
    flat = torch.stack([g[touched, t].reshape(-1) for t in range(3)]).unsqueeze(0)
    torch.testing.assert_close(grads.dense, flat)
    assert grads.present.tolist() == [[True, True, True]]


def test_workspace_is_clean_after_use():
    ws = RowWorkspace(50, torch.device("cpu"))
    rows, inverse = ws.unique(torch.tensor([7, 3, 7, 49, 0]))
    assert rows.tolist() == [0, 3, 7, 49] and rows[inverse].tolist() == [7, 3, 7, 49, 0]
    assert not ws.mark.any()
    rows2, _ = ws.unique(torch.tensor([5]))
    assert rows2.tolist() == [5]
