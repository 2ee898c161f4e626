"""FairGrad, GradVac and PCD (METHODS.md §6) against torchjd and independent references.

Global mode (R = 1, all tasks present) is compared with torchjd's aggregators on random Jacobians (T ∈ {2, 3,
5}, D from T − 1 to 10 000, norms over 3-5 orders of magnitude, aligned and conflicting), over sequences of
steps for the stateful GradVac and PCD (their state too); per-row mode with hypothesis property tests (scale,
permutation, degenerate gradients, batched == a loop over rows) and, for the per-row state, against a loop
over the rows calling global mode with each row's own state. Conventions that differ from torchjd are applied
explicitly where they matter (see each method's module docstring).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchjd.aggregation import PCD as TorchjdPCD
from torchjd.aggregation import FairGrad as TorchjdFairGrad
from torchjd.aggregation import GradVac as TorchjdGradVac

from recmtl.aggregators import StepInfo, TaskGrads, make_aggregator
from recmtl.aggregators._math import conflict_projection_in_order
from recmtl.aggregators.fairgrad import fairgrad_weights
from recmtl.aggregators.gradvac import gradvac_in_order, visiting_order
from recmtl.aggregators.pcd import pcd_qp
from recmtl.errors import ConfigError
from tests.aggregators.method_inputs import F64, SHAPES, batch, jacobian

NAMES = ["fairgrad", "gradvac", "pcd"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/aggregators/conftest.py


def global_step(agg, J: torch.Tensor, state: dict, generator: torch.Generator | None = None):
    """One global-mode call (R' = 1) on the Jacobian [T, D]: (aggregation, new state)."""
    T = J.shape[0]
    grads = TaskGrads.from_dense(J.unsqueeze(0), torch.ones(1, T, dtype=torch.bool), mode="global")
    out = agg.aggregate(grads, state, StepInfo(mode="global", generator=generator))
    return out, out.state


def row_call(agg, g: torch.Tensor, present: torch.Tensor, state=None, row_ids=None, generator=None):
    """One row-mode call on dense [R, T, D] gradients (fresh state unless given)."""
    R, T, _ = g.shape
    state = agg.init_state(T, R) if state is None else state
    return agg(g, present, state, StepInfo(row_ids=row_ids, generator=generator))


def close(a: torch.Tensor, b: torch.Tensor, *, rtol: float, atol: float = 0.0) -> None:
    """assert_close with atol relative to the reference's largest entry."""
    scale = float(b.abs().max()) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(scale, 1e-300))


def min_norm_in_hull(J: np.ndarray) -> float:
    """‖min-norm point of conv{rows of J}‖ / max row norm, by scipy's NNLS with a heavy Σλ = 1 row."""
    big = 1e6 * np.abs(J).max()
    A = np.vstack([J.T, big * np.ones((1, J.shape[0]))])
    b = np.concatenate([np.zeros(J.shape[1]), [big]])
    lam, _ = scipy.optimize.nnls(A, b)
    return float(np.linalg.norm(J.T @ lam) / np.linalg.norm(J, axis=1).max())


# ============================================================================================================
# FairGrad
# ============================================================================================================
def fixed_point_error(G: torch.Tensor, w: torch.Tensor, a: float) -> float:
    """max_t |G w − w^{-1/a}|_t / (|G| w + w^{-1/a})_t: the backward error of the FairGrad equation."""
    power = w ** (-1.0 / a)
    return float(((G @ w - power).abs() / (G.abs() @ w + power)).max())


def torchjd_fairgrad_error(J: torch.Tensor, a: float) -> tuple[torch.Tensor, float]:
    w = TorchjdFairGrad(alpha=a).gramian_weighting(J @ J.T)
    return w, fixed_point_error(J @ J.T, w, a)


def check_fairgrad_against_torchjd(J: torch.Tensor, a: float) -> bool:
    """Ours (global mode) against torchjd's FairGrad on the Jacobian J; True when torchjd had converged.

    torchjd solves G w = w^{-1/a} with scipy's ``least_squares`` (default tolerances, start 1/T), which
    often stops early when the norms are spread over orders of magnitude. Its accuracy: where its backward
    error (``fixed_point_error``) is ≤ 1e-6, its weights are off the solution by about the Newton correction
    δ = (G + diag(w^{-1/a-1}) / a)⁻¹ (G w − w^{-1/a}) at its w; ours must agree to 3|δ| + 1e-9 |w| per task.
    Where its error is larger it has not converged, and ours must solve the equation better. Ours always
    solves it to 1e-10 where a solution exists; where none exists (0 in the convex hull of the gradients:
    only if D < T here) ours returns 0. Same convention as torchjd: update = Σ_t w_t g_t (no factor T, no
    clipping).
    """
    out, _ = global_step(make_aggregator("fairgrad", alpha=a), J, {})
    ours = out.coefficients[0].double()
    theirs, their_error = torchjd_fairgrad_error(J, a)
    T, D = J.shape
    if D < T and min_norm_in_hull(J.numpy()) < 1e-9:
        assert (ours == 0).all() and (out.update == 0).all()
        return False
    G = J @ J.T
    our_error = fixed_point_error(G, ours, a)
    assert our_error < 1e-10
    if their_error > 1e-6:
        assert our_error < their_error
        return False
    power = theirs ** (-1.0 / a)
    delta = torch.linalg.solve(G + torch.diag(power / theirs / a), G @ theirs - power)
    assert ((ours - theirs).abs() <= 3 * delta.abs() + 1e-9 * ours).all(), (ours, theirs, delta)
    assert ((out.update[0] - theirs @ J).abs() <= (3 * delta.abs() + 1e-9 * ours) @ J.abs()).all()
    return True


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("T, D", SHAPES)
@pytest.mark.parametrize("conflict", [False, True])
def test_fairgrad_matches_torchjd(a, T, D, conflict):
    """Norms over 3, 4 and 5 orders of magnitude (see ``check_fairgrad_against_torchjd``)."""
    for seed in range(3):
        check_fairgrad_against_torchjd(jacobian(T, D, seed, orders=3.0 + seed, conflict=conflict), a)


def test_fairgrad_torchjd_comparison_is_not_vacuous():
    """On the aligned cases with norms over 3 orders of magnitude torchjd does converge, mostly: those
    comparisons must actually happen."""
    converged = [
        check_fairgrad_against_torchjd(jacobian(T, D, 0, orders=3.0), a)
        for a in (0.5, 1.0, 2.0)
        for T, D in SHAPES
        if D >= T
    ]
    assert sum(converged) >= 0.5 * len(converged)


def test_fairgrad_alpha_zero_is_uniform_as_torchjd():
    J = jacobian(4, 32, 0)
    out, _ = global_step(make_aggregator("fairgrad", alpha=0.0), J, {})
    close(out.update[0], TorchjdFairGrad(alpha=0.0)(J), rtol=1e-12)
    assert torch.equal(out.coefficients[0], torch.full((4,), 0.25, dtype=F64))


@pytest.mark.parametrize("a", [0.25, 1.0, 3.0])
def test_fairgrad_single_task_and_orthogonal_closed_form(a):
    """Orthogonal gradients decouple: w_t = ‖g_t‖^{-2a/(a+1)} (also a row with one task)."""
    norms = torch.tensor([1e-3, 0.5, 20.0], dtype=F64)
    g = torch.diag(norms).unsqueeze(0)  # [1, 3, 3] orthogonal
    expected = norms ** (-2 * a / (a + 1))
    out = row_call(make_aggregator("fairgrad", alpha=a), g, torch.ones(1, 3, dtype=torch.bool))
    close(out.coefficients[0], expected, rtol=1e-12)
    one = row_call(make_aggregator("fairgrad", alpha=a), g[:, 1:2], torch.ones(1, 1, dtype=torch.bool))
    close(one.coefficients[0], expected[1:2], rtol=1e-12)


def test_fairgrad_fixed_point_on_many_rows():
    """The batched solver on rows of every kind (wide norm spreads, conflicts): every row that has a solution
    (independent gradients) satisfies G w = w^{-1/a} to ~1e-12, absent tasks get 0."""
    g, present = batch(400, 5, 8, seed=1, spread=3.0)
    for a in (0.5, 1.0, 4.0):
        w = fairgrad_weights(g @ g.transpose(1, 2), present, a)
        assert (w[~present] == 0).all()
        for r in range(g.shape[0]):
            tasks = present[r].nonzero().squeeze(1)
            if tasks.numel():
                G = g[r, tasks] @ g[r, tasks].T
                assert fixed_point_error(G, w[r, tasks], a) < 1e-10, (a, r)


@pytest.mark.parametrize(
    "J", [[[1.0, 0.0], [-2.0, 0.0]], [[1.0], [2.0], [-0.5]], [[1.0, 1.0], [1.0, 1.0], [-3.0, -3.0]]]
)
def test_fairgrad_without_solution_gives_zero(J):
    """0 in the convex hull of the gradients: no direction helps every task; the row gets coefficients 0."""
    J = torch.tensor(J, dtype=F64)
    out = row_call(make_aggregator("fairgrad"), J.unsqueeze(0), torch.ones(1, J.shape[0], dtype=torch.bool))
    assert (out.coefficients == 0).all() and (out.update == 0).all()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.sampled_from([1e-3, 0.3, 8.0, 1e4]),
    a=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_fairgrad_scaling_law(seed, k, a):
    """Gradients × k: weights × k^{-2a/(a+1)}, update × k^{(1−a)/(1+a)} (not scale-equivariant by design)."""
    g, present = batch(16, 4, 6, seed)
    agg = make_aggregator("fairgrad", alpha=a)
    base, scaled = row_call(agg, g, present), row_call(agg, g * k, present)
    close(scaled.coefficients, base.coefficients * k ** (-2 * a / (a + 1)), rtol=1e-7, atol=1e-9)
    close(scaled.update, base.update * k ** ((1 - a) / (1 + a)), rtol=1e-7, atol=1e-9)


# ============================================================================================================
# GradVac
# ============================================================================================================
def torchjd_order(monkeypatch, order: torch.Tensor) -> None:
    """Make torchjd's per-task ``torch.randperm`` of the other tasks follow ``order`` [T, T] (one call per
    task i, in order; order[i] lists every task, i included, which torchjd skips)."""
    T = order.shape[0]
    calls = iter(range(T))

    def randperm(n, *args, **kwargs):
        i = next(calls)
        others = [j for j in range(T) if j != i]
        return torch.tensor([others.index(int(j)) for j in order[i] if int(j) != i])

    monkeypatch.setattr(torch, "randperm", randperm)


@pytest.mark.parametrize("T, D", SHAPES)
@pytest.mark.parametrize("conflict", [False, True])
def test_gradvac_matches_torchjd_over_steps(monkeypatch, T, D, conflict):
    """Stateful: the same sequence of 5 Jacobians through torchjd's GradVac (β = 0.5, ε = 1e-8, as ours) and
    ours in global mode, torchjd's random order forced to the one our generator draws; the updates and the
    EMA targets φ̂ must agree (both computed from the Gram; ours in float64 like the input)."""
    agg, theirs = make_aggregator("gradvac"), TorchjdGradVac()
    state = agg.init_state(T, 1, "global")
    corrected = False
    for step in range(5):
        J = jacobian(T, D, seed=10 * step + T, orders=3.0, conflict=conflict if step % 2 else not conflict)
        order = visiting_order(1, T, torch.Generator().manual_seed(step), torch.device("cpu"))[0]
        with monkeypatch.context() as m:
            torchjd_order(m, order)
            expected = theirs(J)
        out, state = global_step(agg, J, state, torch.Generator().manual_seed(step))
        close(out.update[0], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(state["target"], theirs.gramian_weighting._phi_t, rtol=1e-9, atol=1e-12)
        corrected |= not torch.equal(out.coefficients[0], torch.ones(T, dtype=F64))
    assert T == 1 or corrected  # some step did correct a gradient (the comparison is not vacuous)


def test_gradvac_with_zero_targets_and_eps_zero_is_pcgrad():
    """φ̂ = 0 and ε = 0: the correction w = −<ĝ_i, g_j> / ‖g_j‖² when φ < 0 is PCGrad's projection, so the
    first step equals the PCGrad solver of _math for the same order."""
    g, present = batch(64, 4, 5, seed=3)
    gram = g @ g.transpose(1, 2)
    order = visiting_order(64, 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    c, _ = gradvac_in_order(gram, present, torch.zeros(64, 4, 4), order, beta=0.5, eps=0.0)
    torch.testing.assert_close(c, conflict_projection_in_order(gram, present, order), rtol=1e-10, atol=1e-12)


def test_gradvac_per_row_state_equals_a_loop_of_global_calls():
    """Per-row (ours): each touched row runs global GradVac with its own targets. Over 6 steps with changing
    touched rows (row_ids) and masks, the batched per-row state equals a loop over rows calling global mode
    on each row alone with that row's state (tasks visited in index order: no generator, so both orders
    agree); untouched rows and unseen pairs keep their targets; keys, shapes and dtype never change."""
    n_rows, T, D = 30, 4, 5
    agg = make_aggregator("gradvac", beta=0.3)
    state = agg.init_state(T, n_rows)
    ref = [agg.init_state(T, 1, "global") for _ in range(n_rows)]
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        rows = torch.randperm(n_rows, generator=gen)[:12].sort().values
        g, present = batch(12, T, D, seed=100 + step)
        before = state["target"].clone()
        out = agg(g, present, state, StepInfo(row_ids=rows))
        state = out.state
        assert set(state) == {"target"} and state["target"].shape == (n_rows, T, T)
        assert state["target"].dtype == torch.float32
        untouched = torch.ones(n_rows, dtype=torch.bool)
        untouched[rows] = False
        assert torch.equal(state["target"][untouched], before[untouched])
        for k, r in enumerate(rows.tolist()):
            tasks = present[k].nonzero().squeeze(1)
            if tasks.numel() == 0:
                continue
            sub = {"target": ref[r]["target"][tasks][:, tasks]}
            single, sub = global_step(agg, g[k, tasks], sub)
            full = ref[r]["target"].clone()
            full[tasks.unsqueeze(1), tasks.unsqueeze(0)] = sub["target"]
            ref[r] = {"target": full}
            close(out.update[k], single.update[0], rtol=1e-5, atol=1e-6)
            close(out.coefficients[k, tasks].double(), single.coefficients[0], rtol=1e-5, atol=1e-6)
        for r in range(n_rows):  # per-row state float32, the loop's float64: equal up to float32 rounding
            torch.testing.assert_close(state["target"][r].double(), ref[r]["target"], rtol=1e-6, atol=1e-6)
    assert state["target"].abs().sum() > 0


def test_gradvac_single_task_rows_pass_through_and_keep_their_state():
    g, _ = batch(9, 3, 4, seed=5)
    present = torch.zeros(9, 3, dtype=torch.bool)
    present[torch.arange(9), torch.arange(9) % 3] = True
    agg = make_aggregator("gradvac")
    state = {"target": torch.rand(9, 3, 3, generator=torch.Generator().manual_seed(1))}
    out = agg(g, present, state, StepInfo(generator=torch.Generator().manual_seed(2)))
    assert torch.equal(out.update, g[present])
    assert torch.equal(out.state["target"], state["target"])


@settings(max_examples=30, deadline=None)
@given(R=st.integers(1, 8), T=st.integers(1, 4), D=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_gradvac_batched_equals_loop_for_a_fixed_order(R, T, D, seed):
    g, present = batch(R, T, D, seed)
    gram = g @ g.transpose(1, 2)
    target = torch.rand(R, T, T, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1
    order = visiting_order(R, T, torch.Generator().manual_seed(seed), torch.device("cpu"))
    c, new = gradvac_in_order(gram, present, target, order, beta=0.4, eps=1e-8)
    for r in range(R):
        one = slice(r, r + 1)
        c_r, new_r = gradvac_in_order(gram[one], present[one], target[one], order[one], beta=0.4, eps=1e-8)
        torch.testing.assert_close(c[r : r + 1], c_r, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new[r : r + 1], new_r, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1e-6, 1e-2, 7.0, 1e5]))
def test_gradvac_eps_zero_is_scale_equivariant(seed, k):
    g, present = batch(20, 4, 6, seed)
    agg = make_aggregator("gradvac", eps=0.0)
    target = {"target": torch.rand(20, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1}
    a = agg(g, present, target, StepInfo(generator=torch.Generator().manual_seed(seed)))
    b = agg(g * k, present, target, StepInfo(generator=torch.Generator().manual_seed(seed)))
    close(b.update, a.update * k, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(b.state["target"], a.state["target"], rtol=1e-5, atol=1e-6)


# ============================================================================================================
# PCD
# ============================================================================================================
@pytest.mark.parametrize("T, D", SHAPES)
@pytest.mark.parametrize("conflict", [False, True])
def test_pcd_matches_torchjd_over_steps(T, D, conflict):
    """Stateful: the same sequence of 5 Jacobians through torchjd's PCD (τ = 0.02, β = 0.999, ε = 1e-8, as
    ours) and ours in global mode; updates equal up to the rounding of the (differently solved) QP, and the
    moving average of the squared norms equal. Norms over 3-5 orders of magnitude (ε absolute, as torchjd)."""
    agg, theirs = make_aggregator("pcd"), TorchjdPCD()
    state = agg.init_state(T, 1, "global")
    for step in range(5):
        J = jacobian(T, D, seed=7 * step + D, orders=3.0 + step % 3, conflict=conflict != bool(step % 2))
        J = J * 10.0  # norms 10 .. 1e-4 · 10
        expected = theirs(J)
        out, state = global_step(agg, J, state)
        # both read d̃ from the Gram: a cancelling combination (1-D anti-parallel gradients: coefficients ~1e9
        # for an update ~10) loses eps · κ, κ = |c|ᵀ|G||c| / cᵀGc, in either computation
        c, G = out.coefficients[0], J @ J.T
        kappa = float((c.abs() @ G.abs() @ c.abs()) / (c @ G @ c).clamp(min=1e-300))
        close(out.update[0], expected, rtol=1e-9 + 1e-14 * kappa, atol=1e-12)
        torch.testing.assert_close(
            state["sq_norm_ema"], theirs.gramian_weighting._sq_norm_ema, rtol=1e-12, atol=0
        )
        debias = 1 - 0.999 ** (step + 1)
        torch.testing.assert_close(state["debias"], torch.full((T,), debias, dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "J",
    [
        [[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]],  # opposite secondaries: infeasible -> g_1
        [[0.0, 0.0], [1.0, 2.0]],  # zero primary -> 0
        [[1.0, 0.0], [-1.0, 0.0]],  # anti-parallel primary and secondary
        [[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]],  # a zero secondary
        [[2.0, 1.0], [2.0, 1.0], [2.0, 1.0]],  # duplicates
    ],
)
def test_pcd_special_cases_as_torchjd(J):
    J = torch.tensor(J, dtype=F64)
    out, _ = global_step(
        make_aggregator("pcd"), J, make_aggregator("pcd").init_state(J.shape[0], 1, "global")
    )
    close(out.update[0], TorchjdPCD()(J), rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(2, 5), D=st.integers(1, 6), seed=st.integers(0, 10_000), tau=st.sampled_from([0.02, 0.5])
)
def test_pcd_qp_solution_satisfies_kkt(T, D, seed, tau):
    """Independent of torchjd: w = e_1 + μ solves min ½‖d − g_1‖² s.t. g_jᵀd ≥ τ‖g_j‖² (d = Σ w_i g_i) iff
    μ ≥ 0, every constraint holds, and μ_j > 0 only on active constraints; or, when no KKT point exists,
    w = e_1 and the constraints cannot all hold (checked by an LP)."""
    g, _ = batch(1, T, D, seed, spread=1.5)
    J = g[0]
    J = torch.where(J.norm(dim=1, keepdim=True) > 0, J, torch.ones_like(J))  # every task present, nonzero
    G = J @ J.T
    w = pcd_qp(G.unsqueeze(0), torch.ones(1, T, dtype=torch.bool), tau, 0, 1e-9)[0]
    slack = G[1:] @ w - tau * G.diagonal()[1:]
    scale = float(G.diagonal().max())
    if torch.equal(w, torch.eye(T, dtype=F64)[0]) and (slack < -1e-9 * scale).any():
        # infeasible: no d with J[1:] d ≥ τ‖g_j‖² (LP), else the QP had a solution we missed
        res = scipy.optimize.linprog(
            np.zeros(D), A_ub=-J[1:].numpy(), b_ub=-tau * G.diagonal()[1:].numpy(), bounds=[(None, None)] * D
        )
        assert res.status == 2, "the constraints are feasible but the QP returned e_1"
        return
    assert w[0] == 1.0 and (w[1:] >= 0).all()
    assert (slack >= -1e-7 * scale).all()
    assert (w[1:] * slack).abs().max() <= 1e-7 * scale * max(1.0, float(w.abs().max()))


def test_pcd_per_row_state_equals_a_loop_of_global_calls():
    """Per-row (ours): each touched row runs global PCD with its own moving averages. Over 6 steps with
    changing rows and masks, the per-row state and updates equal a loop over rows calling global mode on
    each row alone (main task kept first) with that row's state; untouched rows keep theirs."""
    n_rows, T, D = 25, 4, 6
    agg = make_aggregator("pcd", beta=0.9)
    state = agg.init_state(T, n_rows)
    ref = [agg.init_state(T, 1, "global") for _ in range(n_rows)]
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        rows = torch.randperm(n_rows, generator=gen)[:10].sort().values
        g, present = batch(10, T, D, seed=200 + step)
        present[:, 0] |= torch.arange(10) % 3 != 0  # most rows have the main task; some do not
        g = torch.where(
            present.unsqueeze(2), g + (g == 0) * torch.randn(g.shape, generator=gen, dtype=F64), 0.0
        )
        before = {k: v.clone() for k, v in state.items()}
        out = agg(g, present, state, StepInfo(row_ids=rows))
        state = out.state
        assert set(state) == {"sq_norm_ema", "debias"}
        assert all(v.shape == (n_rows, T) and v.dtype == F64 for v in state.values())
        untouched = torch.ones(n_rows, dtype=torch.bool)
        untouched[rows] = False
        for key in state:
            assert torch.equal(state[key][untouched], before[key][untouched])
        for k, r in enumerate(rows.tolist()):
            tasks = present[k].nonzero().squeeze(1)
            if tasks.numel() == 0 or not present[k, 0]:  # no main task: update 0, only the state moves
                assert (out.update[k] == 0).all()
                ema, debias = ref[r]["sq_norm_ema"], ref[r]["debias"]
                ref[r] = {
                    "sq_norm_ema": torch.where(present[k], 0.9 * ema + 0.1 * g[k].square().sum(1), ema),
                    "debias": torch.where(present[k], 0.9 * debias + 0.1, debias),
                }
                continue
            sub = {key: value[tasks] for key, value in ref[r].items()}
            single, sub = global_step(agg, g[k, tasks], sub)
            ref[r] = {key: value.index_copy(0, tasks, sub[key]) for key, value in ref[r].items()}
            close(out.update[k], single.update[0], rtol=1e-9, atol=1e-12)
        for r in range(n_rows):
            for key in state:
                torch.testing.assert_close(state[key][r], ref[r][key], rtol=1e-12, atol=1e-300)


def test_pcd_without_main_option():
    g, present = batch(40, 3, 5, seed=9)
    orphan = ~present[:, 0] & present.any(1)
    assert orphan.any()
    zero = row_call(make_aggregator("pcd"), g, present)
    summed = row_call(make_aggregator("pcd", without_main="sum"), g, present)
    assert (zero.update[orphan] == 0).all()
    torch.testing.assert_close(summed.update[orphan], g[orphan].sum(1))
    torch.testing.assert_close(summed.update[~orphan], zero.update[~orphan])


def test_pcd_rejects_beta_one():
    with pytest.raises(ConfigError, match="beta"):
        make_aggregator("pcd", beta=1.0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1e-6, 1e-2, 7.0, 1e5]))
def test_pcd_eps_zero_is_scale_equivariant(seed, k):
    g, present = batch(20, 4, 6, seed)
    agg = make_aggregator("pcd", eps=0.0)
    close(row_call(agg, g * k, present).update, row_call(agg, g, present).update * k, rtol=1e-8, atol=1e-10)


# ============================================================================================================
# All three: properties in row mode
# ============================================================================================================
@pytest.mark.parametrize("name", ["fairgrad", "pcd"])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), R=st.integers(1, 10), T=st.integers(1, 4), D=st.integers(1, 8))
def test_batched_equals_a_loop_over_rows(name, seed, R, T, D):
    """(GradVac: with its order fixed, above; its draws depend on the row's position.)"""
    g, present = batch(R, T, D, seed)
    agg = make_aggregator(name)
    out = row_call(agg, g, present)
    for r in range(R):
        single = row_call(agg, g[r : r + 1], present[r : r + 1])
        close(single.update[0], out.update[r], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["fairgrad", "pcd"])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(2, 5), extra=st.integers(0, 4))
def test_permuting_the_non_main_tasks(name, seed, T, extra):
    """Linearly independent gradients (D ≥ T; with D < T PCD's multipliers are not unique and FairGrad's
    rows can be arbitrarily ill-conditioned). GradVac: its random order is drawn per task index, so it is
    invariant in distribution only."""
    g, present = batch(12, T, T + extra, seed)
    rest = 1 + torch.randperm(T - 1, generator=torch.Generator().manual_seed(seed))
    perm = torch.cat([torch.zeros(1, dtype=torch.long), rest])
    agg = make_aggregator(name)
    a, b = row_call(agg, g, present), row_call(agg, g[:, perm], present[:, perm])
    close(b.update, a.update, rtol=1e-7, atol=1e-9)
    close(b.coefficients, a.coefficients[:, perm], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(
    dtype=st.sampled_from([torch.float32, torch.float64]),
    what=st.sampled_from(["zero", "duplicate", "opposite", "tiny", "huge", "single"]),
    seed=st.integers(0, 10_000),
)
def test_degenerate_gradients_stay_finite(name, dtype, what, seed):
    """Zero, duplicate, exactly opposite, tiny (1e-30) and huge (1e30: in float32 its Gram overflows, and the
    row gets 0) gradients, single-task rows: finite coefficients, update and state, 0 off the mask."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(6, 3, 5, generator=gen, dtype=F64)
    present = torch.ones(6, 3, dtype=torch.bool)
    if what == "zero":
        g[:, 1] = 0.0
        g[0] = 0.0
    elif what == "duplicate":
        g[:, 2] = g[:, 0]
    elif what == "opposite":
        g[:, 1] = -g[:, 0]
    elif what == "tiny":
        g[:, 0] *= 1e-30
    elif what == "huge":
        g[:, 1] *= 1e30
    else:
        present[:, 1:] = False
    g = torch.where(present.unsqueeze(2), g, 0.0).to(dtype)
    agg = make_aggregator(name)
    state = agg.init_state(3, 6)
    for step in range(3):  # stateful methods: the state must stay finite too
        out = agg(g, present, state, StepInfo(step=step, generator=torch.Generator().manual_seed(step)))
        state = out.state
        assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
        assert all(torch.isfinite(v).all() for v in state.values())
        assert (out.coefficients[~present] == 0).all()
