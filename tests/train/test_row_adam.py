"""RowAdam (recmtl.train.row_adam) against independent oracles: ``torch.optim.SparseAdam`` (the same lazy
row-sparse Adam with a global step count) over several steps on changing row subsets, and Adam written out
by hand for one row.

SparseAdam adds eps to sqrt(v) *before* the bias correction (update lr·√bc2/bc1 · m / (√v + eps)), while
RowAdam adds it after, as torch.optim.Adam does (lr/bc1 · m / (√(v/bc2) + eps)). The two coincide when
SparseAdam's eps at step t is eps·√bc2(t); the comparisons below either use that per-step eps or an eps too
small to matter."""

from __future__ import annotations

import math

import torch

from recmtl.train.row_adam import RowAdam

N, D = 12, 5
LR, BETAS = 0.03, (0.8, 0.95)
NEVER = [10, 11]  # rows no step touches


def schedule() -> list[torch.Tensor]:
    """10 steps of unique, unsorted rows: step 1 touches row 7, which then waits until step 7; step 2 touches
    a single row; rows 10 and 11 are never touched."""
    gen = torch.Generator().manual_seed(0)
    steps = [torch.tensor([5, 0, 7, 3]), torch.tensor([3])]
    pool = torch.tensor([r for r in range(N) if r != 7 and r not in NEVER])
    for t in range(3, 11):
        k = int(torch.randint(2, 7, (1,), generator=gen))
        rows = pool[torch.randperm(pool.numel(), generator=gen)[:k]]
        if t == 7:
            rows = torch.cat([rows[:2], torch.tensor([7]), rows[2:]])
        steps.append(rows)
    return steps


def gradients(steps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Row gradients with magnitudes from 1e-3 to 1 (so eps is not negligible everywhere)."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for rows in steps:
        scale = 10 ** -torch.randint(0, 4, (rows.numel(), 1), generator=gen).float()
        out.append(torch.randn(rows.numel(), D, generator=gen) * scale)
    return out


def init_weight() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(2))


def run_both(eps: float, *, translate_eps: bool):
    """Run RowAdam and SparseAdam over the schedule; return (row_adam, sparse param, sparse state)."""
    steps = schedule()
    grads = gradients(steps)
    assert [s.numel() for s in steps][:2] == [4, 1]
    assert all(7 not in s.tolist() for s in steps[1:6]) and 7 in steps[6].tolist()

    row_adam = RowAdam.wrap(init_weight(), LR)
    row_adam.beta1, row_adam.beta2, row_adam.eps = *BETAS, eps
    param = torch.nn.Parameter(init_weight())
    opt = torch.optim.SparseAdam([param], lr=LR, betas=BETAS, eps=eps)
    for t, (rows, grad) in enumerate(zip(steps, grads, strict=True), start=1):
        before = row_adam.storage.clone()
        row_adam.step(rows, grad)
        untouched = torch.ones(N, dtype=torch.bool)
        untouched[rows] = False
        assert torch.equal(row_adam.storage[untouched], before[untouched]), t  # lazy: other rows untouched

        if translate_eps:
            opt.param_groups[0]["eps"] = eps * math.sqrt(1 - BETAS[1] ** t)
        param.grad = torch.sparse_coo_tensor(rows[None], grad, (N, D), check_invariants=True)
        opt.step()
    return row_adam, param.detach(), opt.state[param]


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    diff = (a - b).abs().max().item()
    assert torch.allclose(a, b, rtol=1e-6, atol=2e-7), (what, diff)


def test_row_adam_equals_sparse_adam_with_a_tiny_eps():
    row_adam, param, state = run_both(1e-10, translate_eps=False)
    assert row_adam.steps == 10 and int(state["step"]) == 10
    assert_close(row_adam.param, param, "value")
    assert_close(row_adam.exp_avg, state["exp_avg"], "exp_avg")
    assert_close(row_adam.exp_avg_sq, state["exp_avg_sq"], "exp_avg_sq")
    assert not torch.allclose(row_adam.param, init_weight())  # the steps did move rows


def test_row_adam_equals_sparse_adam_with_eps_moved_inside_the_bias_correction():
    eps = 1e-3  # large against the 1e-3 gradients: the placement of eps matters here
    row_adam, param, state = run_both(eps, translate_eps=True)
    assert_close(row_adam.param, param, "value")
    assert_close(row_adam.exp_avg, state["exp_avg"], "exp_avg")
    assert_close(row_adam.exp_avg_sq, state["exp_avg_sq"], "exp_avg_sq")

    # the translation is needed: SparseAdam with the same eps takes visibly different steps
    _, plain, _ = run_both(eps, translate_eps=False)
    assert (plain - row_adam.param).abs().max().item() > 1e-4


def test_never_touched_rows_stay_bit_identical_with_zero_moments():
    row_adam, _, _ = run_both(1e-6, translate_eps=True)
    assert torch.equal(row_adam.param[NEVER], init_weight()[NEVER])
    assert torch.equal(row_adam.exp_avg[NEVER], torch.zeros(len(NEVER), D))
    assert torch.equal(row_adam.exp_avg_sq[NEVER], torch.zeros(len(NEVER), D))
    touched = torch.tensor([r for r in range(N) if r not in NEVER])
    assert (row_adam.param[touched] != init_weight()[touched]).any(1).all()


def test_row_first_touched_at_step_3_follows_the_adam_formula_with_the_global_step():
    # Two steps on other rows, then row 4's first step at global t = 3:
    # m = (1 − β1) g, v = (1 − β2) g², x ← x − lr · (m / (1 − β1³)) / (√(v / (1 − β2³)) + eps)
    b1, b2, eps, lr = 0.7, 0.9, 1e-2, 0.05
    weight = torch.tensor(
        [[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 1.0, -1.0], [0.2, 0.2, 0.2], [2.0, -1.0, 0.25]]
    )
    row_adam = RowAdam.wrap(weight, lr)
    row_adam.beta1, row_adam.beta2, row_adam.eps = b1, b2, eps
    row_adam.step(torch.tensor([0, 2]), torch.ones(2, 3))
    row_adam.step(torch.tensor([1]), torch.ones(1, 3))
    g = [0.5, -0.02, 4.0]
    row_adam.step(torch.tensor([4]), torch.tensor([g]))

    m = [(1 - b1) * x for x in g]
    v = [(1 - b2) * x * x for x in g]
    expected = [
        w - lr * (mi / (1 - b1**3)) / (math.sqrt(vi / (1 - b2**3)) + eps)
        for w, mi, vi in zip(weight[4].tolist(), m, v, strict=True)
    ]
    assert row_adam.steps == 3
    assert torch.allclose(row_adam.param[4], torch.tensor(expected), rtol=1e-6, atol=1e-7)
    assert torch.allclose(row_adam.exp_avg[4], torch.tensor(m), rtol=1e-6, atol=1e-9)
    assert torch.allclose(row_adam.exp_avg_sq[4], torch.tensor(v), rtol=1e-6, atol=1e-12)
    assert torch.equal(row_adam.param[3], weight[3])  # never touched
    # with a per-row step count (1 for row 4) the bias correction would differ: not what RowAdam does
    per_row = [w - lr * g_ / (abs(g_) + eps) for w, g_ in zip(weight[4].tolist(), g, strict=True)]
    assert not torch.allclose(row_adam.param[4], torch.tensor(per_row), rtol=1e-4, atol=1e-5)
