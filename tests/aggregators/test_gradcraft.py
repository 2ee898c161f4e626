"""GradCraft (Bai et al., KDD 2024; METHODS.md §5) against an independent per-row vector implementation.

torchjd has no GradCraft. The oracle here is :func:`reference_row`, written plainly on the gradient vectors
of one row (numpy, float64): step 1 scales the vectors, step 2 stacks the conflicting ĝ_j into an explicit
matrix A_i and solves ``(A_i A_iᵀ) λ_i = b_i − A_i ĝ_i`` with ``numpy.linalg.solve``, step 3 averages. Where
that system is singular (condition number of the ridged cosine block above 1e8) it uses a plain vector
PCGrad, most conflicting task first (the module's documented fallback). torchjd's PCGrad is the oracle for
the two-task reduction. Gradients are float64 unless a test says otherwise (then tolerances are float32's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recmtl.aggregators import GradCraft, StepInfo, TaskGrads, make_aggregator
from recmtl.aggregators import _math as solvers
from recmtl.aggregators.gradcraft import _small_systems, cosine_gram, craft_directions
from recmtl.errors import ConfigError

F64 = torch.float64


# --- the independent oracle ---------------------------------------------------------------------------------
def reference_row(
    g: np.ndarray, present: np.ndarray, *, tau: float, eps: float, cap: float | None, ridge: float = 0.0
) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, bool]]:
    """One row, vector form: ``g`` [T, D], ``present`` [T] → (update [D], crafted g̃_i, solved flag per i)."""
    tasks = [t for t in range(g.shape[0]) if present[t]]
    norms = {t: float(np.linalg.norm(g[t])) for t in tasks}
    if not tasks:
        return np.zeros(g.shape[1]), {}, {}
    top = max(norms.values())
    hat = {}
    for t in tasks:  # step 1
        factor = (1 - tau) + tau * top / norms[t] if norms[t] > 0 else 1.0
        hat[t] = (min(factor, cap) if cap is not None else factor) * g[t]
    crafted, solved = {}, {}
    for i in tasks:  # step 2
        conflicts = [j for j in tasks if j != i and hat[i] @ hat[j] < 0]
        solved[i] = True
        if not conflicts:
            crafted[i] = hat[i]
            continue
        A = np.stack([hat[j] for j in conflicts])  # [|C_i|, D]
        n_hat = np.linalg.norm(A, axis=1)
        cosine_block = (A @ A.T) / np.outer(n_hat, n_hat) + ridge * np.eye(len(conflicts))
        if np.linalg.cond(cosine_block) > 1e8:  # singular: PCGrad, most conflicting first
            solved[i] = False
            order = sorted(tasks, key=lambda j: hat[i] @ hat[j] / (np.linalg.norm(hat[j]) + 1e-300))
            v = hat[i].copy()
            for j in order:
                if j != i and norms[j] > 0 and v @ hat[j] < 0:
                    v = v - (v @ hat[j]) / (hat[j] @ hat[j]) * hat[j]
            crafted[i] = v
            continue
        b = eps * np.linalg.norm(hat[i]) * n_hat
        # the ridge is on the cosine block: (A Aᵀ + ρ N²) λ = b − A ĝ_i, N = diag(‖ĝ_j‖)
        lam = np.linalg.solve(A @ A.T + ridge * np.diag(n_hat**2), b - A @ hat[i])
        crafted[i] = hat[i] + A.T @ lam
    return np.mean([crafted[i] for i in tasks], axis=0), crafted, solved  # step 3


def reference(grads: torch.Tensor, present: torch.Tensor, **kw) -> torch.Tensor:
    rows = [reference_row(grads[r].numpy(), present[r].numpy(), **kw)[0] for r in range(grads.shape[0])]
    return torch.from_numpy(np.stack(rows))


def ours(grads, present=None, *, mode: str = "row", **params):
    grads = torch.as_tensor(grads)
    if present is None:
        present = torch.ones(grads.shape[:2], dtype=torch.bool)
    agg = GradCraft(**params)
    return agg.aggregate(TaskGrads.from_dense(grads, present, mode), {}, StepInfo(mode=mode))


def close(actual: torch.Tensor, expected: torch.Tensor, *, rtol: float = 1e-8, grads=None) -> None:
    """Relative to the largest entry of the reference, or of the gradients when given (an update may nearly
    cancel, e.g. two opposite collinear gradients)."""
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    if grads is not None:
        scale = max(scale, float(grads.abs().max()))
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=rtol * max(scale, 1e-300))


def random_grads(R: int, T: int, D: int, seed: int, orders: float = 4.0, common: float = 0.0) -> torch.Tensor:
    """[R, T, D] float64, norms spread over ``orders`` orders of magnitude; ``common`` > 0 adds a shared
    direction with alternating signs (more conflicts), < 0 with the same sign (aligned tasks)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(R, T, D, generator=gen, dtype=F64)
    signs = (
        (-1.0) ** torch.arange(T, dtype=F64).view(1, T, 1) if common > 0 else torch.ones(1, T, 1, dtype=F64)
    )
    g = g + abs(common) * signs * torch.randn(R, 1, D, generator=gen, dtype=F64)
    return g * 10 ** (torch.rand(R, T, 1, generator=gen, dtype=F64) * orders - orders / 2)


def random_present(R: int, T: int, seed: int) -> torch.Tensor:
    present = torch.rand(R, T, generator=torch.Generator().manual_seed(seed + 1)) < 0.75
    present[0] = True
    if R > 1:
        present[1] = False
    return present


# --- against the oracle -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(2, 5),
    extra_dim=st.integers(-1, 8),
    seed=st.integers(0, 2**31 - 1),
    tau=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    eps=st.sampled_from([0.0, 1e-10, 0.05, 0.3]),
    common=st.sampled_from([0.0, 2.0, -1.0]),
)
def test_row_mode_matches_the_vector_reference(T, extra_dim, seed, tau, eps, common):
    R, D = 6, T + extra_dim  # D = T − 1: rank-deficient rows
    grads, present = random_grads(R, T, D, seed, common=common), random_present(R, T, seed)
    grads = torch.where(present.unsqueeze(2), grads, 0.0)
    out = ours(grads, present, tau=tau, epsilon=eps, ridge=0.0)
    expected = reference(grads, present, tau=tau, eps=eps, cap=100.0)
    close(out.update, expected, rtol=1e-7, grads=grads)
    assert (out.coefficients[~present] == 0).all()


@pytest.mark.parametrize("T, D", [(2, 1), (2, 7), (3, 2), (3, 64), (5, 4), (5, 300), (3, 10_000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_mode_matches_the_vector_reference_without_cap(T, D, seed):
    """Global mode (the paper's): R' = 1, no cap on the magnitude factor; norms over 5 orders of magnitude,
    conflicting (seed 0, 2) and aligned (seed 1) cases; default ε and ridge (1e-10: the oracle has the same
    ridge on the same cosine block)."""
    common = {0: 1.5, 1: -3.0, 2: 0.0}[seed]
    J = random_grads(1, T, D, seed, orders=5.0, common=common)
    out = ours(J, mode="global")
    expected = reference(J, torch.ones(1, T, dtype=torch.bool), tau=0.1, eps=1e-10, cap=None, ridge=1e-10)
    close(out.update, expected, rtol=1e-8, grads=J)
    # float32 gradients: the cosines carry ~1e-7 relative error
    out32 = ours(J.float(), mode="global")
    close(out32.update, expected, rtol=2e-4, grads=J)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_large_conflict_sets_match_the_reference(eps):
    """|C_i| ≥ 3 (the batched ridge_solve path, not the closed forms): task 0 against four others."""
    gen = torch.Generator().manual_seed(5)
    a, rest = torch.randn(8, generator=gen, dtype=F64), torch.randn(4, 8, generator=gen, dtype=F64)
    J = torch.cat([a.unsqueeze(0), -a + 0.5 * rest]) * torch.logspace(-2, 1, 5, dtype=F64).unsqueeze(1)
    K, _ = cosine_gram(J.unsqueeze(0), torch.ones(1, 5, dtype=torch.bool))
    assert (K[0, 0] < 0).sum() == 4
    for mode in ("row", "global"):
        out = ours(J.unsqueeze(0), mode=mode, epsilon=eps, ridge=0.0)
        cap = 100.0 if mode == "row" else None
        expected = reference(J.unsqueeze(0), torch.ones(1, 5, dtype=torch.bool), tau=0.1, eps=eps, cap=cap)
        close(out.update, expected, rtol=1e-9, grads=J)


def test_global_mode_through_aggregate_flattens_rows():
    """A global TaskGrads (rows flattened) gives the oracle on the flattened [T, R·D] Jacobian."""
    g = random_grads(7, 3, 5, seed=4, common=1.0)
    grads = TaskGrads.from_dense(g, torch.ones(7, 3, dtype=torch.bool), mode="global")
    out = GradCraft(tau=0.3).aggregate(grads, {}, StepInfo(mode="global"))
    J = g.transpose(0, 1).reshape(1, 3, 35)
    expected = reference(J, torch.ones(1, 3, dtype=torch.bool), tau=0.3, eps=1e-10, cap=None, ridge=1e-10)
    close(out.update.reshape(1, 35), expected, grads=g)


# --- the PCGrad reduction -----------------------------------------------------------------------------------
@pytest.mark.parametrize("D", [2, 16, 5000])
@pytest.mark.parametrize("tau", [0.0, 0.4])
def test_two_tasks_one_conflict_equal_pcgrad(D, tau):
    """METHODS.md §5: "one conflict and ε = 0 reduces exactly to PCGrad". Exactly: step 2 is PCGrad's
    projection of the *magnitude-balanced* gradients, and the output is their mean where PCGrad sums, so
    GradCraft(J) = ½ PCGrad(S J) with S = diag(s_t) the step-1 factors; with τ = 0 (or equal norms) S = I
    and GradCraft(J) = ½ PCGrad(J). Two tasks: torchjd's PCGrad order is irrelevant (a fixed oracle)."""
    from torchjd.aggregation import PCGrad

    gen = torch.Generator().manual_seed(D)
    a = torch.randn(D, generator=gen, dtype=F64)
    b = torch.randn(D, generator=gen, dtype=F64)
    b = b - (a @ b) / (a @ a) * a  # ⟂ a
    J = torch.stack([3.0 * a, -0.02 * a + 0.05 * b])
    assert J[0] @ J[1] < 0  # one conflict each way
    n = J.norm(dim=1)
    S = ((1 - tau) + tau * n.max() / n).unsqueeze(1)
    expected = 0.5 * PCGrad()(S * J)
    exact = ours(J.unsqueeze(0), mode="global", tau=tau, epsilon=0.0, ridge=0.0).update[0]
    torch.testing.assert_close(exact, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    default_ridge = ours(J.unsqueeze(0), mode="global", tau=tau, epsilon=0.0).update[0]
    torch.testing.assert_close(default_ridge, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))
    if tau > 0:  # and the magnitude step matters: plain PCGrad is not it
        assert not torch.allclose(exact, 0.5 * PCGrad()(J), rtol=1e-3)


# --- step 2's constraints -----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(2, 5),
    extra_dim=st.integers(0, 6),
    seed=st.integers(0, 2**31 - 1),
    eps=st.sampled_from([0.0, 0.01, 0.2]),
)
def test_crafted_gradients_meet_the_conflict_constraints(T, extra_dim, seed, eps):
    """After step 2, for every j in C_i: ε = 0 → <g̃_i, ĝ_j> = 0 (orthogonal); ε > 0 →
    <g̃_i, ĝ_j> = ε ‖ĝ_i‖ ‖ĝ_j‖, i.e. cos(g̃_i, ĝ_j) = ε ‖ĝ_i‖ / ‖g̃_i‖ (the paper's b_ij uses the norm of ĝ_i,
    not of g̃_i, so the cosine equals ε exactly only up to that ratio). Checked on the unit vectors u_t the
    Gram form works with (g̃_i = ‖ĝ_i‖ Σ_k Q_ik u_k): <ũ_i, u_j> = ε. Tasks without conflict are unchanged,
    and only conflicting tasks enter a crafted gradient."""
    D = T + extra_dim
    g = random_grads(3, T, D, seed, common=1.0)
    present = torch.ones(3, T, dtype=torch.bool)
    K, _ = cosine_gram(g, present)
    Q, solved = craft_directions(K, present, epsilon=eps, ridge=0.0)
    u = g / g.norm(dim=2, keepdim=True)
    crafted = Q @ u  # [R, T, D] the unit-scaled crafted gradients ũ_i
    inner = crafted @ u.transpose(1, 2)  # <ũ_i, u_j>
    conflict = K < 0
    assert solved.all()
    for r in range(3):
        for i in range(T):
            for j in range(T):
                if conflict[r, i, j]:
                    assert abs(float(inner[r, i, j]) - eps) < 1e-9
                elif j != i:
                    assert Q[r, i, j] == 0
            if not conflict[r, i].any():
                torch.testing.assert_close(crafted[r, i], u[r, i], rtol=0, atol=0)


def test_small_systems_equal_ridge_solve():
    """The closed forms for |C_i| ≤ 2 are what ridge_solve returns on those systems, flag included
    (condition numbers on both sides of 1e8, and the exactly singular 2×2 block of duplicates)."""
    T = 4
    c_values = torch.tensor([0.0, 0.3, -0.7, 0.99, 1 - 1e-7, 1 - 1e-9, 1.0, -1.0], dtype=F64)
    R = c_values.numel()
    K = torch.eye(T, dtype=F64).repeat(R, 1, 1)
    K[:, 0, 1] = K[:, 1, 0] = -0.4  # task 0 conflicts with 1 and 2; task 3 conflicts with 1 only
    K[:, 0, 2] = K[:, 2, 0] = -0.2
    K[:, 1, 2] = K[:, 2, 1] = c_values
    K[:, 1, 3] = K[:, 3, 1] = -0.5
    conflict = K < 0
    for ridge in (0.0, 1e-10, 0.01):
        mu, ok = _small_systems(K, conflict, epsilon=0.05, ridge=ridge)
        for i in (0, 3):
            x, ok_ref = solvers.ridge_solve(K, 0.05 - K[:, i], conflict[:, i], ridge=ridge, max_condition=1e8)
            assert torch.equal(ok[:, i], ok_ref)
            torch.testing.assert_close(mu[:, i][ok_ref], x[ok_ref], rtol=1e-9, atol=1e-12)
    assert ok[:, 0].all()  # ridge 0.01: condition ≤ 2.01 / 0.01 for any cosine
    _, ok0 = _small_systems(K, conflict, epsilon=0.05, ridge=0.0)
    assert ok0[:, 0].tolist() == [True] * 5 + [False] * 3


# --- singular systems fall back to PCGrad -------------------------------------------------------------------
def singular_cases() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(3, 6, generator=gen, dtype=F64)
    return {
        # tasks 1 and 2 identical, both conflicting with task 0: A_0 A_0ᵀ singular
        "duplicates": torch.stack([a, -2.0 * a + 0.3 * b, -2.0 * a + 0.3 * b]),
        # D < T: four tasks in a plane, task 0 against the three others
        "D < T": torch.tensor([[1.0, 0.0], [-1.0, 0.3], [-1.0, -0.4], [-0.2, 1.0]], dtype=F64),
        # D = 1: everything collinear; 1 and 2 both opposite task 0 (and 3 a duplicate of 0)
        "D = 1": torch.tensor([[2.0], [-1.0], [-3.0], [0.5]], dtype=F64),
        "opposite": torch.stack([a, -a, 0.1 * c]),
        "zero": torch.stack([a, torch.zeros(6, dtype=F64), -a + b]),
        "all zero": torch.zeros(3, 4, dtype=F64),
    }


@pytest.mark.parametrize("name", list(singular_cases()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_singular_systems_fall_back_without_nan(name, dtype):
    J = singular_cases()[name]
    present = torch.ones(1, J.shape[0], dtype=torch.bool)
    for tau, eps in [(0.1, 1e-10), (0.0, 0.0), (1.0, 0.2)]:
        out = ours(J.unsqueeze(0).to(dtype), tau=tau, epsilon=eps)
        assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
        expected = reference(J.unsqueeze(0), present, tau=tau, eps=eps, cap=100.0, ridge=1e-10)
        close(out.update, expected, rtol=1e-8 if dtype == F64 else 1e-4, grads=J)


def test_which_systems_fall_back():
    cases = singular_cases()
    # flagged: falls back. Duplicates: task 0 conflicts with the identical 1 and 2 (singular), 1 and 2 only
    # with 0. D < T: task 0 conflicts with the three others in the plane (singular), 1 with 0 only, 2 and 3
    # with two independent vectors each.
    for name, flagged in [("duplicates", [True, False, False]), ("D < T", [True, False, False, False])]:
        J = cases[name]
        K, _ = cosine_gram(J.unsqueeze(0), torch.ones(1, J.shape[0], dtype=torch.bool))
        _, solved = craft_directions(K, torch.ones(1, J.shape[0], dtype=torch.bool), epsilon=0.0, ridge=1e-10)
        assert (~solved[0]).tolist() == flagged, name
        _, _, ref_solved = reference_row(J.numpy(), np.ones(J.shape[0], bool), tau=0, eps=0, cap=None)
        assert [not ref_solved[i] for i in range(J.shape[0])] == flagged


def test_duplicate_conflicts_fallback_is_the_exact_solution():
    """Duplicated conflicting gradients make the same constraint twice: PCGrad's projection satisfies it
    (g̃_0 ⟂ ĝ_1 = ĝ_2), which is what the paper's formula means there."""
    J = singular_cases()["duplicates"]
    K, norms = cosine_gram(J.unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))
    Q, solved = craft_directions(K, torch.ones(1, 3, dtype=torch.bool), epsilon=0.0, ridge=0.0)
    assert not solved[0, 0]
    crafted_0 = Q[0, 0] @ (J / norms[0].unsqueeze(1))
    assert abs(float(crafted_0 @ J[1])) < 1e-12 * float(J[1].norm() * crafted_0.norm())


# --- the cap and the modes ----------------------------------------------------------------------------------
def test_magnitude_factor_is_capped_in_row_mode_only():
    """Orthogonal gradients (no conflict) of norms 2 and 2e-6, τ = 0.1: factor of the small one
    0.9 + 0.1 · 1e6 = 100000.9; the mean of the two gives c = (1, s) / 2."""
    J = torch.tensor([[[2.0, 0.0], [0.0, 2e-6]]], dtype=F64)
    row = ours(J, tau=0.1)
    torch.testing.assert_close(row.coefficients, torch.tensor([[0.5, 50.0]], dtype=F64))
    glob = ours(J, mode="global", tau=0.1)
    torch.testing.assert_close(glob.coefficients, torch.tensor([[0.5, 100000.9 / 2]], dtype=F64))
    # the option, and StepInfo.mode == "global" also lifts the cap (the trainer's global steps say so)
    torch.testing.assert_close(
        ours(J, tau=0.1, max_scale=10.0).coefficients, torch.tensor([[0.5, 5.0]], dtype=F64)
    )
    agg = GradCraft(tau=0.1)
    via_info = agg.aggregate(
        TaskGrads.from_dense(J, torch.ones(1, 2, dtype=torch.bool)), {}, StepInfo(mode="global")
    )
    torch.testing.assert_close(via_info.coefficients, glob.coefficients)


def test_extreme_ratio_in_global_mode_stays_finite():
    """Norms 1e30 and 1e-30 (float32): the uncapped factor 1e59 exceeds float32, clamped to its range."""
    J = torch.tensor([[[1e30, 0.0], [0.0, 1e-30]]], dtype=torch.float32)
    out = ours(J, mode="global")
    assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
    assert out.coefficients[0, 1] == torch.finfo(torch.float32).max
    row = ours(J)
    torch.testing.assert_close(row.coefficients, torch.tensor([[0.5, 50.0]]))


def test_single_task_and_empty_rows():
    g = random_grads(4, 3, 5, seed=8)
    present = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    g[3] = 0.0
    out = GradCraft().weigh(TaskGrads.from_dense(g, present), {}, StepInfo())  # weigh itself, no shortcut
    assert torch.equal(out.coefficients, present.to(F64))


def test_options_are_validated():
    for bad in [dict(tau=1.5), dict(tau=-0.1), dict(epsilon=-1e-3), dict(ridge=-1.0), dict(max_scale=0.5)]:
        with pytest.raises(ConfigError):
            make_aggregator("gradcraft", **bad)


# --- properties ---------------------------------------------------------------------------------------------
CASE = dict(
    T=st.integers(1, 5),
    D=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
    common=st.sampled_from([0.0, 1.5, -1.0]),
)


@settings(max_examples=40, deadline=None)
@given(
    k=st.sampled_from([1e-30, 1e-12, 1e-3, 0.3, 7.0, 1e12, 1e30]),
    dtype=st.sampled_from([F64, torch.float32]),
    **CASE,
)
def test_scale_equivariance(k, dtype, T, D, seed, common):
    g = random_grads(8, T, D, seed, orders=3.0, common=common)
    present = random_present(8, T, seed)
    g = torch.where(present.unsqueeze(2), g, 0.0).to(dtype)
    a, b = ours(g, present), ours(g * k, present)
    assert torch.isfinite(b.update).all() and torch.isfinite(b.coefficients).all()
    rtol = 1e-9 if dtype == F64 else 1e-4
    torch.testing.assert_close(
        b.coefficients, a.coefficients, rtol=rtol, atol=rtol * float(a.coefficients.abs().max())
    )
    close(b.update, a.update * k, rtol=rtol, grads=g * k)


@settings(max_examples=40, deadline=None)
@given(**CASE)
def test_permutation_invariance(T, D, seed, common):
    """GradCraft has no main task: any relabelling of the tasks permutes the coefficients and keeps the
    update (also through the fallback, whose projection order is fixed by the cosines, not the labels)."""
    g = random_grads(8, T, D, seed, common=common)
    present = random_present(8, T, seed)
    g = torch.where(present.unsqueeze(2), g, 0.0)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    a, b = ours(g, present), ours(g[:, perm], present[:, perm])
    close(b.update, a.update, rtol=1e-9, grads=g)
    if D >= T:  # with dependent gradients (D < T) the coefficients of an update are not unique
        close(b.coefficients, a.coefficients[:, perm], rtol=1e-9)


def test_permutation_invariance_through_the_fallback():
    for J in singular_cases().values():
        T = J.shape[0]
        for perm in [torch.arange(T).flip(0), torch.roll(torch.arange(T), 1)]:
            a, b = ours(J.unsqueeze(0)), ours(J[perm].unsqueeze(0))
            close(b.update, a.update, rtol=1e-9, grads=J)


@settings(max_examples=30, deadline=None)
@given(R=st.integers(1, 12), **CASE)
def test_batched_equals_loop_over_rows(R, T, D, seed, common):
    g = random_grads(R, T, D, seed, common=common).float()
    present = random_present(R, T, seed)
    g = torch.where(present.unsqueeze(2), g, 0.0)
    g[R // 2] = g[R // 2, :1].expand(T, D)  # a row of duplicates: a singular system inside the batch
    present[R // 2] = True
    batched = GradCraft().weigh(TaskGrads.from_dense(g, present), {}, StepInfo())
    for r in range(R):
        single = GradCraft().weigh(TaskGrads.from_dense(g[r : r + 1], present[r : r + 1]), {}, StepInfo())
        torch.testing.assert_close(single.coefficients[0], batched.coefficients[r], rtol=1e-6, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(2, 5),
    D=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["zero", "duplicate", "opposite", "tiny", "huge", "mixed"]),
)
def test_no_nan_on_degenerate_gradients(T, D, seed, kind):
    g = random_grads(5, T, D, seed).float()
    if kind == "zero":
        g[:, 0] = 0.0
    elif kind == "duplicate":
        g[:, 1:] = g[:, :1]
    elif kind == "opposite":
        g[:, 1] = -g[:, 0]
    elif kind == "tiny":
        g = g / g.abs().amax() * 1e-30
    elif kind == "huge":
        g = g / g.abs().amax() * 1e30
    else:
        g[:, 0] *= 1e30 / g[:, 0].abs().amax()
        g[:, 1] *= 1e-30 / g[:, 1].abs().amax()
    present = random_present(5, T, seed)
    for mode in ("row", "global"):
        grads = g[:1] if mode == "global" else g
        out = ours(
            torch.where(present[: len(grads)].unsqueeze(2), grads, 0.0), present[: len(grads)], mode=mode
        )
        assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
