"""MGDA-UB, PCGrad, CAGrad and IMTL-G (METHODS.md §6) against torchjd and independent references.

Global mode (R = 1, all tasks present) is compared with torchjd's aggregators on random Jacobians (T ∈ {2, 3,
5}, D from T − 1 to 10 000, norms over 3-5 orders of magnitude, aligned and conflicting); per-row mode with
hypothesis property tests (scale, permutation, degenerate gradients, batched == a loop over rows). Conventions
that differ from torchjd are applied explicitly where they matter (see each method's module docstring).
"""

from __future__ import annotations

import itertools
import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchjd.aggregation import IMTLG as TorchjdIMTLG
from torchjd.aggregation import MGDA as TorchjdMGDA
from torchjd.aggregation import CAGrad as TorchjdCAGrad
from torchjd.aggregation import PCGrad as TorchjdPCGrad

from recmtl.aggregators import StepInfo, TaskGrads, make_aggregator, method_options
from recmtl.aggregators.cagrad import cagrad_simplex_weights
from recmtl.errors import ConfigError
from tests.aggregators.method_inputs import F64, SHAPES, batch, jacobian

NAMES = ["mgda", "pcgrad", "cagrad", "imtl"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/aggregators/conftest.py


def info(T: int, seed: int = 0, losses: torch.Tensor | None = None) -> StepInfo:
    losses = torch.logspace(-1, 1, T) if losses is None else losses
    return StepInfo(epoch=1, losses=losses, generator=torch.Generator().manual_seed(seed))


def ours(
    name: str, J: torch.Tensor, step: StepInfo | None = None, **params
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mode on the Jacobian [T, D], all tasks present: (update [D], coefficients [T])."""
    agg = make_aggregator(name, **params)
    T = J.shape[0]
    grads = TaskGrads.from_dense(J.unsqueeze(0), torch.ones(1, T, dtype=torch.bool), mode="global")
    out = agg.aggregate(grads, agg.init_state(T, 1, "global"), step or info(T))
    return out.update[0], out.coefficients[0]


def rows(name: str, g: torch.Tensor, present: torch.Tensor, seed: int = 0, **params):
    agg = make_aggregator(name, **params)
    R, T, _ = g.shape
    return agg(g, present, agg.init_state(T, R), info(T, seed))


def close_to(a: torch.Tensor, b: torch.Tensor, rtol: float, scale: float | None = None) -> None:
    """``a`` ≈ ``b`` to ``rtol`` relative to ``scale`` (default: ``b``'s largest entry, the vectors' size)."""
    if scale is None:
        scale = float(b.abs().max()) if b.numel() else 0.0
    torch.testing.assert_close(a, b, rtol=0.0, atol=rtol * max(scale, 1e-300))


ORACLE_CASES = [(T, D, seed, conflict) for seed, (T, D) in enumerate(SHAPES) for conflict in (False, True)]


def case_id(case) -> str:
    T, D, seed, conflict = case
    return f"T{T}-D{D}-{'conflict' if conflict else 'aligned'}"


# --- MGDA ---------------------------------------------------------------------------------------------------
def quad(G: torch.Tensor, w: torch.Tensor) -> float:
    return float(w @ G @ w)


def simplex_qp(G: np.ndarray) -> np.ndarray:
    """min wᵀGw on the simplex by scipy's SLSQP (several starts, the best kept), on G scaled to unit max."""
    T = G.shape[0]
    A = G / G.diagonal().max()
    best, best_f = None, np.inf
    for start in [np.full(T, 1 / T), *np.eye(T)]:
        res = scipy.optimize.minimize(
            lambda w: w @ A @ w,
            start,
            jac=lambda w: 2 * A @ w,
            bounds=[(0, 1)] * T,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(T)}],
            method="SLSQP",
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        w = np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()
        if w @ A @ w < best_f:
            best, best_f = w, w @ A @ w
    return best


@pytest.mark.parametrize("case", ORACLE_CASES, ids=[case_id(c) for c in ORACLE_CASES])
def test_mgda_matches_torchjd_within_its_stopping_tolerance(case):
    """torchjd's MGDA stops once its Frank-Wolfe step is below 1e-3, so its α is approximate. Its own
    Frank-Wolfe gap bounds how far it is from the optimum: f(α) − f* ≤ 2(αᵀGα − min_t (Gα)_t) for
    f(w) = wᵀGw. Ours must be at least as good, within that gap, and the updates within the distance the
    min-norm geometry allows: ‖d_α − d*‖² ≤ ‖d_α‖² − ‖d*‖² for the min-norm point d* of a convex set."""
    T, D, seed, conflict = case
    J = jacobian(T, D, seed, conflict=conflict)
    G = J @ J.T
    update, w = ours("mgda", J)
    alpha = TorchjdMGDA().weighting(J)
    tj_update = TorchjdMGDA()(J)
    scale = float(G.diagonal().max())
    f_ours, f_tj = quad(G, w), quad(G, alpha)
    gap = 2 * (f_tj - float((G @ alpha).min()))
    assert f_ours <= f_tj + 1e-12 * scale
    assert f_tj - f_ours <= gap + 1e-12 * scale
    assert float((update - tj_update).square().sum()) <= f_tj - f_ours + 1e-11 * scale
    torch.testing.assert_close(update, w @ J, rtol=1e-12, atol=1e-14 * math.sqrt(scale))


@pytest.mark.parametrize("T, D, seed", [(2, 3, 0), (3, 2, 1), (3, 8, 2), (4, 3, 3), (5, 4, 4), (5, 12, 5)])
@pytest.mark.parametrize("conflict", [False, True])
def test_mgda_is_the_min_norm_point_of_a_direct_qp(T, D, seed, conflict):
    """The issue's check: the min-norm point against a direct QP (scipy SLSQP) on small cases."""
    J = jacobian(T, D, seed, orders=3, conflict=conflict)
    G = (J @ J.T).numpy()
    _, w = ours("mgda", J)
    ref = simplex_qp(G)
    unit = G / G.diagonal().max()
    f_ours, f_ref = w.numpy() @ unit @ w.numpy(), ref @ unit @ ref
    assert f_ours <= f_ref + 1e-13  # never worse than the QP solver
    assert f_ours >= f_ref - 1e-8 * max(f_ref, 1e-6)  # and SLSQP (ftol 1e-16) agrees to ~1e-8
    if f_ref > 1e-6:  # a unique min-norm point: the updates agree
        close_to(torch.as_tensor(w.numpy() @ J.numpy()), torch.as_tensor(ref @ J.numpy()), 1e-4)


@pytest.mark.parametrize("normalize", ["none", "l2", "loss", "loss+"])
def test_mgda_normalisations_against_the_vector_definition(normalize):
    """γ from the vectors and the losses (LibMTL's gradient_normalizers); weights found on J / γ, applied to
    the raw J (the authors' convention; LibMTL's rep_grad=False applies them to J / γ: ×1/γ_t)."""
    T, D = 4, 6
    J = jacobian(T, D, 7, orders=3, conflict=True)
    losses = torch.tensor([0.5, 2.0, -0.3, 4.0])  # a negative loss (e.g. uniformity) is not a normaliser
    loss = torch.where(losses > 0, losses, 1.0).to(F64)
    norms = J.norm(dim=1)
    gamma = {"none": torch.ones(T, dtype=F64), "l2": norms, "loss": loss, "loss+": loss * norms}[normalize]
    Jn = J / gamma.unsqueeze(1)
    ref = torch.as_tensor(simplex_qp((Jn @ Jn.T).numpy()))
    update, w = ours("mgda", J, info(T, losses=losses), normalize=normalize)
    unit = Jn @ Jn.T / (Jn @ Jn.T).diagonal().max()
    assert quad(unit, w) <= quad(unit, ref) + 1e-13
    close_to(w, ref, 1e-4)
    torch.testing.assert_close(update, w @ J, rtol=1e-12, atol=1e-15)


def test_mgda_loss_normalisation_needs_the_losses():
    J = jacobian(3, 4, 0)
    step = StepInfo(generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="losses"):
        ours("mgda", J, step, normalize="loss")
    ours("mgda", J, step, normalize="l2")  # the norms need no losses
    with pytest.raises(ConfigError, match="normalize"):
        make_aggregator("mgda", normalize="l1")


def test_mgda_known_cases():
    """Hand-checkable: orthogonal unit vectors (1/2, 1/2); opposite vectors (0 in the hull: update 0); the
    third vector the min-norm vertex; a zero gradient (update 0)."""
    cases = [
        ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5]),
        ([[2.0, 1.0], [-2.0, -1.0]], [0.5, 0.5]),
        ([[1.0, 0.0], [0.0, 1.0], [0.4, 0.4]], [0.0, 0.0, 1.0]),
        ([[3.0, 0.0], [0.0, 0.0]], [0.0, 1.0]),
    ]
    for vectors, expected in cases:
        J = torch.tensor(vectors, dtype=F64)
        update, w = ours("mgda", J)
        torch.testing.assert_close(w, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-14)
        torch.testing.assert_close(update, torch.tensor(expected, dtype=F64) @ J, rtol=0, atol=1e-14)


# --- PCGrad -------------------------------------------------------------------------------------------------
def drawn_orders(R: int, T: int, seed: int) -> torch.Tensor:
    """The projection orders pcgrad draws from a generator seeded ``seed``: [R, T, T]."""
    return torch.rand(R, T, T, generator=torch.Generator().manual_seed(seed)).argsort(dim=-1)


def pcgrad_vectors(J: torch.Tensor, present: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """PCGrad on the vectors of one row (the paper's Algorithm 1 with a given order): Σ_i ĝ_i [D]."""
    total = torch.zeros(J.shape[1], dtype=J.dtype)
    for i in range(J.shape[0]):
        if not present[i]:
            continue
        g = J[i].clone()
        for j in order[i].tolist():
            dot, norm2 = g @ J[j], J[j] @ J[j]
            if j != i and present[j] and norm2 > 0 and dot < 0:
                g = g - dot / norm2 * J[j]
        total += g
    return total


@pytest.mark.parametrize("case", ORACLE_CASES, ids=[case_id(c) for c in ORACLE_CASES])
def test_pcgrad_matches_torchjd_with_the_same_orders(case, monkeypatch):
    """torchjd draws ``torch.randperm(T)`` for each task i in turn from the global RNG; we feed it the orders
    our generator draws (same sum convention, j = i skipped in both), so the updates must agree."""
    T, D, seed, conflict = case
    J = jacobian(T, D, seed, conflict=conflict)
    update, _ = ours("pcgrad", J, info(T, seed))
    queue = list(drawn_orders(1, T, seed)[0])
    monkeypatch.setattr(torch, "randperm", lambda n, *a, **k: queue.pop(0))
    expected = TorchjdPCGrad()(J)
    assert not queue
    close_to(update, expected, 1e-10)
    close_to(update, pcgrad_vectors(J, torch.ones(T, dtype=torch.bool), drawn_orders(1, T, seed)[0]), 1e-10)


def test_pcgrad_rows_follow_their_drawn_orders():
    """Per-row mode: every row where tasks meet is PCGrad on its own vectors with the order drawn for it (the
    draws cover those rows only, in order: the single-task shortcut skips the others, which pass through)."""
    g, present = batch(30, 4, 6, seed=3)
    out = rows("pcgrad", g, present, seed=11)
    meet = (present.sum(dim=1) > 1).nonzero().flatten()
    orders = drawn_orders(len(meet), 4, 11)
    for k, r in enumerate(meet.tolist()):
        close_to(out.update[r], pcgrad_vectors(g[r], present[r], orders[k]), 1e-10)
    alone = present.sum(dim=1) <= 1
    torch.testing.assert_close(out.update[alone], g[alone].sum(dim=1), rtol=0, atol=0)


def test_pcgrad_order_is_random_and_uniform():
    """The distribution of the update over many identical rows (T = 3, results that depend on the orders):
    every outcome of the 2³ equally likely order combinations (task i's order of the two others), with its
    probability, within 5 standard deviations."""
    J = torch.tensor([[1.0, 0.0], [-0.6, 1.0], [-0.6, -0.3]], dtype=F64)
    everyone = torch.ones(3, dtype=torch.bool)
    expected: dict[tuple, float] = {}
    others = [list(itertools.permutations([j for j in range(3) if j != i])) for i in range(3)]
    for combo in itertools.product(*others):
        order = torch.tensor([[*rest, i] for i, rest in enumerate(combo)])
        key = tuple(np.round(pcgrad_vectors(J, everyone, order).numpy(), 9))
        expected[key] = expected.get(key, 0.0) + 1 / 8
    assert len(expected) >= 3
    R = 4000
    out = rows("pcgrad", J.expand(R, 3, 2).clone(), torch.ones(R, 3, dtype=torch.bool), seed=5)
    observed: dict[tuple, int] = {}
    for u in out.update:
        key = tuple(np.round(u.numpy(), 9))
        observed[key] = observed.get(key, 0) + 1
    assert set(observed) <= set(expected)
    for key, p in expected.items():
        assert abs(observed.get(key, 0) / R - p) < 5 * math.sqrt(p * (1 - p) / R), (key, p)


def test_pcgrad_two_tasks_closed_form():
    """Two conflicting tasks: ĝ_1 = g_1 − (g_1·g_2/‖g_2‖²) g_2 and symmetrically (order-free); aligned:
    the sum."""
    g1, g2 = torch.tensor([2.0, 1.0], dtype=F64), torch.tensor([-1.0, 1.0], dtype=F64)
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g1 @ g2) / (g1 @ g1) * g1)
    update, _ = ours("pcgrad", torch.stack([g1, g2]))
    torch.testing.assert_close(update, expected, rtol=1e-14, atol=1e-15)
    update, w = ours("pcgrad", torch.stack([g1, g1 * 3]))
    torch.testing.assert_close(w, torch.ones(2, dtype=F64))


def test_pcgrad_needs_a_generator():
    with pytest.raises(ValueError, match="generator"):
        ours("pcgrad", jacobian(2, 3, 0), StepInfo())


# --- CAGrad -------------------------------------------------------------------------------------------------
def cagrad_objective(G: torch.Tensor, w: torch.Tensor, c: float = 0.4) -> float:
    b = torch.full((G.shape[0],), 1.0 / G.shape[0], dtype=F64)
    return float(w @ G @ b + c * (b @ G @ b).sqrt() * (w @ G @ w).clamp(min=0).sqrt())


def cagrad_reference(J: torch.Tensor, c: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """CAGrad by cvxpy (Clarabel, tolerances 1e-14) on the vectors: (w*, d) with d = g_0 + √φ g_w/‖g_w‖."""
    T = J.shape[0]
    A = (J / J.norm(dim=1).max()).numpy()
    g0 = A.mean(axis=0)
    w = cp.Variable(T)
    cost = (A @ g0) @ w + c * np.linalg.norm(g0) * cp.norm(A.T @ w, 2)
    problem = cp.Problem(cp.Minimize(cost), [w >= 0, cp.sum(w) == 1])
    with warnings.catch_warnings():  # "solution may be inaccurate": Clarabel near its 1e-14 targets
        warnings.simplefilter("ignore")
        problem.solve(cp.CLARABEL, tol_gap_abs=1e-14, tol_gap_rel=1e-14, tol_feas=1e-14, max_iter=400)
    w_opt = torch.as_tensor(np.clip(w.value, 0, None) / np.clip(w.value, 0, None).sum())
    g_w = w_opt @ J
    return w_opt, J.mean(dim=0) + c * J.mean(dim=0).norm() / g_w.norm() * g_w


def torchjd_cagrad_zeroes(J: torch.Tensor, w: torch.Tensor) -> bool:
    """Where torchjd's norm_eps fires: ‖g_w‖ < 1e-4 after dividing J by its Frobenius norm."""
    return float((w @ J).norm() / J.norm()) < 1e-4


@pytest.mark.parametrize("case", ORACLE_CASES, ids=[case_id(c) for c in ORACLE_CASES])
def test_cagrad_matches_torchjd(case):
    """torchjd solves the simplex problem with cvxpy/Clarabel at its default tolerances (~1e-8): our
    objective must be at least as good and within 1e-7 relative, and the updates within 1e-3 relative (the
    direction g_w/‖g_w‖ amplifies the solver's error where ‖g_w‖ is small). Against a tight cvxpy solve the
    updates agree to 1e-6. Where torchjd's absolute norm_eps fires (its update is then 0) we follow the
    formula instead (documented): that case is checked against the tight reference only."""
    T, D, seed, conflict = case
    J = jacobian(T, D, seed, conflict=conflict)
    G = J @ J.T
    update, coefficients = ours("cagrad", J)
    w = (coefficients - 1 / T) / (coefficients - 1 / T).sum()
    ref_w, ref_update = cagrad_reference(J)
    scale = float(G.diagonal().max())
    assert cagrad_objective(G, w) <= cagrad_objective(G, ref_w) + 1e-12 * scale
    close_to(update, ref_update, 1e-6)
    expected = TorchjdCAGrad(c=0.4)(J)
    if torchjd_cagrad_zeroes(J, w):
        assert torch.equal(expected, torch.zeros_like(expected))
        return
    tj_coefficients = TorchjdCAGrad(c=0.4).weighting(J)
    tj_w = (tj_coefficients - 1 / T) / (tj_coefficients - 1 / T).sum()
    f_ours, f_tj = cagrad_objective(G, w), cagrad_objective(G, tj_w)
    assert f_ours <= f_tj + 1e-12 * scale
    assert f_tj - f_ours <= 1e-7 * abs(f_tj) + 1e-12 * scale
    close_to(update, expected, 1e-3)


def test_cagrad_torchjd_norm_eps_case():
    """Norms over five orders of magnitude: the optimum sits on the tiny gradient, ‖g_w‖ ≈ 1e-5 ‖J‖_F, and
    torchjd returns 0 (its norm_eps); ours is the formula, equal to the tight reference."""
    J = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1e-5, 0.0]], dtype=F64)
    update, coefficients = ours("cagrad", J)
    assert torch.equal(TorchjdCAGrad(c=0.4)(J), torch.zeros(3, dtype=F64))
    _, ref_update = cagrad_reference(J)
    close_to(update, ref_update, 1e-8)
    # d = g_0 + √φ u_1 with g_0 = (1/2, 1e-5/2) and √φ = 0.4 ‖g_0‖
    g0 = J.mean(dim=0)
    torch.testing.assert_close(update, g0 + 0.4 * g0.norm() * torch.tensor([0.0, 1.0, 0.0], dtype=F64))


@pytest.mark.parametrize("T, D, seed", [(3, 2, 0), (4, 3, 1), (4, 8, 2), (5, 4, 3), (5, 20, 4)])
def test_cagrad_solver_reaches_the_tight_reference(T, D, seed):
    """The enumeration solver on the simplex problem itself, several rows at once with mixed masks."""
    g, present = batch(12, T, D, seed, spread=1.5)
    G = g @ g.transpose(1, 2)
    w, _ = cagrad_simplex_weights(G, present, 0.4)
    assert torch.equal(w[~present], torch.zeros_like(w[~present]))
    for r in range(12):
        tasks = present[r].nonzero().flatten()
        if len(tasks) == 0:
            assert (w[r] == 0).all()
            continue
        torch.testing.assert_close(w[r].sum(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-12)
        assert (w[r] >= 0).all()
        Gr = G[r][tasks][:, tasks]
        ref_w, _ = cagrad_reference(g[r, tasks])
        scale = float(Gr.diagonal().max())
        f_ours, f_ref = cagrad_objective(Gr, w[r, tasks]), cagrad_objective(Gr, ref_w)
        assert f_ours <= f_ref + 1e-12 * scale
        assert f_ours >= f_ref - 1e-9 * scale


def test_cagrad_rescale_and_c():
    J = jacobian(3, 5, 4, conflict=True)
    base, _ = ours("cagrad", J)
    for rescale, factor in [(1, 1 / (1 + 0.4**2)), (2, 1 / 1.4)]:
        close_to(ours("cagrad", J, rescale=rescale)[0], base * factor, 1e-14)
    close_to(ours("cagrad", J, c=0.0)[0], J.mean(dim=0), 1e-14)  # c = 0: the mean gradient
    single, w = ours("cagrad", J[:1])
    close_to(single, 1.4 * J[0], 1e-12)  # one task: (1 + c) g, not the identity
    with pytest.raises(ConfigError, match="rescale"):
        make_aggregator("cagrad", rescale=3)


def test_cagrad_pareto_stationary_gives_zero_like_torchjd():
    """0 in the hull at the optimum (g_1 = −g_2 orthogonal to g_3): torchjd and ours return 0."""
    J = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=F64)
    update, _ = ours("cagrad", J)
    assert torch.equal(update, torch.zeros(2, dtype=F64))
    assert torch.equal(TorchjdCAGrad(c=0.4)(J), torch.zeros(2, dtype=F64))


# --- IMTL-G -------------------------------------------------------------------------------------------------
def imtl_paper(J: torch.Tensor) -> torch.Tensor:
    """The paper's closed form on the vectors: α_{2..T} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α (LibMTL's code)."""
    U = J / J.norm(dim=1, keepdim=True)
    D_ = J[:1] - J[1:]
    U_ = U[:1] - U[1:]
    alpha = J[0] @ U_.T @ torch.linalg.inv(D_ @ U_.T)
    return torch.cat([1 - alpha.sum(dim=0, keepdim=True), alpha])


@pytest.mark.parametrize("case", ORACLE_CASES, ids=[case_id(c) for c in ORACLE_CASES])
def test_imtl_matches_torchjd(case):
    """torchjd's IMTLG: pinv(G) n, normalised. The tolerance is relative to Σ_t |α_t| ‖g_t‖, the size of the
    terms of the combination (α can be large with cancelling terms; the Gram's condition number reaches 1e8
    here, and torchjd's pinv of the unscaled G loses that much). On independent gradients also the paper's
    closed form (to 1e-10; ours solves on the cosine matrix and is the more accurate of the two) and its
    defining property: equal projections of the update on every u_t."""
    T, D, seed, conflict = case
    J = jacobian(T, D, seed, conflict=conflict)
    update, alpha = ours("imtl", J)
    size = float((alpha.abs() * J.norm(dim=1)).sum())
    close_to(update, TorchjdIMTLG()(J), 1e-9, scale=size)
    torch.testing.assert_close(alpha.sum(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-12)
    if D >= T:
        close_to(alpha, imtl_paper(J), 1e-10)
        projections = J @ update / J.norm(dim=1)
        close_to(projections, projections.mean().expand(T), 1e-10)


def test_imtl_singular_cases():
    """Duplicates share their weight, a zero gradient gets 0, opposite gradients give 0 (torchjd's v_sum ≈ 0),
    a single task 1, and all of it equal to torchjd."""
    g1, g2 = torch.tensor([3.0, 1.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    cases = [
        torch.stack([g1, g1, g2]),  # duplicate
        torch.stack([g1, torch.zeros(3, dtype=F64), g2]),  # zero gradient
        torch.stack([g1, -g1]),  # opposite
        torch.stack([g1, g2, g1 + g2, g1 - g2]),  # T = 4 > rank 2
    ]
    for J in cases:
        update, alpha = ours("imtl", J)
        assert torch.isfinite(alpha).all()
        close_to(update, TorchjdIMTLG()(J), 1e-9)
    _, alpha = ours("imtl", cases[0])
    torch.testing.assert_close(alpha[0], alpha[1])
    assert ours("imtl", cases[1])[1][1] == 0
    assert torch.equal(ours("imtl", cases[2])[0], torch.zeros(3, dtype=F64))
    assert torch.equal(ours("imtl", g1.unsqueeze(0))[1], torch.ones(1, dtype=F64))
    assert torch.equal(ours("imtl", torch.zeros(1, 3, dtype=F64))[1], torch.ones(1, dtype=F64))


# --- properties of all four, per row ------------------------------------------------------------------------
DEGENERATE = ["zero", "duplicate", "opposite", "tiny", "huge", "none"]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None)
@given(
    T=st.integers(1, 5),
    D=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    what=st.sampled_from(DEGENERATE),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_no_nan_on_degenerate_gradients(name, T, D, seed, what, dtype):
    g, present = batch(10, T, D, seed)
    if what == "zero":
        g[:, 0] = 0.0
    elif what == "duplicate" and T >= 2:
        g[:, 1] = g[:, 0]
    elif what == "opposite" and T >= 2:
        g[:, 1] = -g[:, 0]
    elif what == "tiny":
        g = g * 1e-30
    elif what == "huge":
        g = g * 1e30
    out = rows(name, g.to(dtype), present, seed)
    assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
    assert (out.coefficients[~present] == 0).all()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=6, deadline=None)
@given(
    T=st.integers(2, 5),
    D=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    k=st.sampled_from([1e-8, 0.3, 1e6]),
)
def test_scale_equivariance(name, T, D, seed, k):
    g, present = batch(8, T, D, seed)
    a, b = rows(name, g, present, seed), rows(name, g * k, present, seed)
    close_to(b.update, a.update * k, 1e-8)


@pytest.mark.parametrize("name", ["mgda", "cagrad", "imtl"])
@settings(max_examples=6, deadline=None)
@given(T=st.integers(2, 5), D=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_permutation_invariance(name, T, D, seed):
    g, present = batch(8, T, D, seed)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    a, b = rows(name, g, present), rows(name, g[:, perm], present[:, perm])
    close_to(b.update, a.update, 1e-8)
    if name == "imtl":  # the others' weights need not be unique (D < T), their update is
        close_to(b.coefficients, a.coefficients[:, perm], 1e-7)


@settings(max_examples=10, deadline=None)
@given(D=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_pcgrad_two_tasks_is_order_free(D, seed):
    """With two tasks the order does not matter: permutation invariance and batched == loop hold exactly."""
    g, present = batch(8, 2, D, seed)
    a = rows("pcgrad", g, present, seed=1)
    close_to(rows("pcgrad", g.flip(1), present.flip(1), seed=2).update, a.update, 1e-10)
    for r in range(8):
        close_to(rows("pcgrad", g[r : r + 1], present[r : r + 1], seed=3).update[0], a.update[r], 1e-10)


@pytest.mark.parametrize("name", ["mgda", "cagrad", "imtl"])
@settings(max_examples=5, deadline=None)
@given(T=st.integers(1, 5), D=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_batched_equals_loop_over_rows(name, T, D, seed):
    g, present = batch(7, T, D, seed)
    out = rows(name, g, present)
    for r in range(7):
        single = rows(name, g[r : r + 1], present[r : r + 1])
        close_to(single.update[0], out.update[r], 1e-10)
        close_to(single.coefficients[0], out.coefficients[r], 1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_single_task_rows(name):
    """identity_on_single_task is declared exactly where weigh gives coefficient 1 to a lone task."""
    g, present = batch(12, 3, 4, 0)
    present = torch.zeros_like(present)
    present[torch.arange(12), torch.arange(12) % 3] = True
    g[5] = 0.0
    agg = make_aggregator(name)
    out = agg.weigh(TaskGrads.from_dense(g, present), {}, info(3))
    is_one = torch.equal(out.coefficients[present], torch.ones(12, dtype=F64))
    assert is_one == agg.identity_on_single_task


def test_labels_and_options():
    for name in NAMES:
        agg = make_aggregator(name)
        assert agg.name == name
        assert agg.label("global") == "paper" and agg.label("row") == "per-row, ours"
    options = {name: [o.name for o in method_options(type(make_aggregator(name)))] for name in NAMES}
    assert options == {"mgda": ["normalize"], "pcgrad": [], "cagrad": ["c", "rescale"], "imtl": []}
    assert make_aggregator("mgda").normalize == "none"
    assert make_aggregator("cagrad").c == 0.4 and make_aggregator("cagrad").rescale == 0
