"""The batched, masked solvers behind MGDA, GradCraft, PCGrad and UPGrad, against independent oracles.

Oracles are written per row with plain loops: brute-force active-set enumeration of the KKT systems (T ≤ 5)
for the min-norm point and the dual-cone projection, scipy's NNLS / bounded least squares on the gradient
vectors themselves (any T), the vector form of PCGrad, and torch / numpy dense solves for ridge_solve.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recmtl.aggregators import _math as solvers

F64 = torch.float64


# --- inputs ------------------------------------------------------------------------------------------------
def jacobian(R: int, T: int, D: int, seed: int, spread: float = 2.0, common: float = 0.0) -> torch.Tensor:
    """Random gradients [R, T, D]; norms spread over 10^±spread; ``common`` adds a shared direction of
    that size (positive: every task along it, aligned; negative: tasks alternately along and against it,
    many conflicts)."""
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(R, T, D, generator=gen, dtype=F64)
    shared = torch.randn(R, 1, D, generator=gen, dtype=F64)
    signs = torch.ones(T, 1, dtype=F64) if common >= 0 else (-1.0) ** torch.arange(T, dtype=F64).view(T, 1)
    J = J + abs(common) * signs * shared
    scales = 10 ** ((torch.rand(R, T, 1, generator=gen, dtype=F64) * 2 - 1) * spread)
    return J * scales


def gram_of(J: torch.Tensor) -> torch.Tensor:
    return J @ J.transpose(1, 2)


def mixed_mask(R: int, T: int, seed: int, p: float = 0.7) -> torch.Tensor:
    """Random mask whose first rows have 0, 1, 2 and all T tasks present."""
    gen = torch.Generator().manual_seed(seed)
    present = torch.rand(R, T, generator=gen) < p
    present[0] = False
    present[1] = False
    present[1, T - 1] = True
    if T >= 2:
        present[2] = False
        present[2, :2] = True
    present[3] = True
    return present


def with_garbage(gram: torch.Tensor, present: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``gram`` with every entry in an absent task's row or column replaced by junk (NaN, ±inf, huge)."""
    gen = torch.Generator().manual_seed(seed)
    junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -7.0], dtype=gram.dtype)
    pick = junk[torch.randint(0, len(junk), gram.shape, generator=gen)]
    keep = present.unsqueeze(2) & present.unsqueeze(1)
    return torch.where(keep, gram, pick)


def quad(G: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.einsum("...s,...st,...t->...", w, G, w)


# --- oracles (per row, numpy) -------------------------------------------------------------------------------
def min_norm_oracle(G: np.ndarray, tasks: list[int]) -> np.ndarray:
    """Exact min of wᵀGw on the simplex over ``tasks``: solve the KKT system of every support, keep the best
    feasible point (the optimal support has affinely independent gradients, so its system is regular)."""
    T = G.shape[0]
    best, best_obj = np.zeros(T), np.inf
    for n in range(1, len(tasks) + 1):
        for S in itertools.combinations(tasks, n):
            S = list(S)
            M = np.zeros((n + 1, n + 1))
            M[:n, :n] = G[np.ix_(S, S)]
            M[:n, n] = M[n, :n] = 1.0
            rhs = np.zeros(n + 1)
            rhs[n] = 1.0
            sol = np.linalg.lstsq(M, rhs, rcond=None)[0]
            w = np.zeros(T)
            w[S] = sol[:n]
            if (w >= -1e-12).all() and abs(w.sum() - 1) < 1e-9:
                w = np.clip(w, 0, None) / np.clip(w, 0, None).sum()
                if w @ G @ w < best_obj:
                    best, best_obj = w, w @ G @ w
    return best


def min_norm_nnls(J: np.ndarray, tasks: list[int]) -> np.ndarray:
    """Min-norm point from the vectors via NNLS: min_{λ ≥ 0} ‖Jᵀλ‖² + (Σλ − 1)² has λ = s·w* (s > 0)."""
    sub = J[tasks] / np.linalg.norm(J[tasks], axis=1).max()
    A = np.vstack([sub.T, np.ones((1, len(tasks)))])
    b = np.zeros(A.shape[0])
    b[-1] = 1.0
    lam = scipy.optimize.nnls(A, b)[0]
    w = np.zeros(J.shape[0])
    w[tasks] = lam / lam.sum()
    return w


def dual_cone_oracle(G: np.ndarray, u: np.ndarray, tasks: list[int]) -> np.ndarray:
    """Exact argmin_{v ≥ u} vᵀGv over ``tasks``: for every free set F solve G_FF v_F = −G_FA u_A; keep the
    best point satisfying v ≥ u and (Gv) ≥ 0 on the tasks."""
    scale = max(np.diag(G)[tasks].max(), 1e-300)
    G = G / scale
    best, best_obj = None, np.inf
    for n in range(len(tasks) + 1):
        for F in itertools.combinations(tasks, n):
            F = list(F)
            A = [t for t in tasks if t not in F]
            v = u.copy()
            if F:
                v[F] = np.linalg.lstsq(G[np.ix_(F, F)], -G[np.ix_(F, A)] @ u[A], rcond=None)[0]
            if (v[tasks] >= u[tasks] - 1e-12).all() and ((G @ v)[tasks] >= -1e-10).all():
                if v @ G @ v < best_obj:
                    best, best_obj = v, v @ G @ v
    return best


def pcgrad_reference(J: torch.Tensor, present: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """PCGrad on the vectors themselves, row by row and task by task: projected gradients [R, T, D]."""
    R, T, _ = J.shape
    out = torch.zeros_like(J)
    for r in range(R):
        for i in range(T):
            if not present[r, i]:
                continue
            g = J[r, i].clone()
            for j in order[r, i].tolist():
                if j == i or not present[r, j]:
                    continue
                norm2 = J[r, j] @ J[r, j]
                dot = g @ J[r, j]
                if norm2 > 0 and dot < 0:
                    g = g - dot / norm2 * J[r, j]
            out[r, i] = g
    return out


def tasks_of(present_row: torch.Tensor) -> list[int]:
    return torch.nonzero(present_row).flatten().tolist()


# --- min_norm_weights ---------------------------------------------------------------------------------------
def check_simplex(present: torch.Tensor, w: torch.Tensor) -> None:
    """On the simplex over the present tasks (all zeros for a row without any), exact zeros elsewhere."""
    assert w.dtype == F64 and w.shape == present.shape
    assert torch.isfinite(w).all()
    assert torch.equal(w[~present], torch.zeros_like(w[~present]))
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), present.any(dim=1).to(F64), rtol=0, atol=1e-12)


def check_min_norm(G: torch.Tensor, present: torch.Tensor, w: torch.Tensor, oracle) -> None:
    """On the simplex, with objective equal to the exact optimum given by ``oracle(r, tasks)``."""
    check_simplex(present, w)
    Gc = torch.where(present.unsqueeze(2) & present.unsqueeze(1), G.to(F64), 0.0)
    ours = quad(Gc, w)
    for r in range(G.shape[0]):
        tasks = tasks_of(present[r])
        if not tasks:
            continue
        ref = torch.as_tensor(oracle(r, tasks))
        best = quad(Gc[r], ref)
        scale = Gc[r].diagonal().max()
        # never worse than the exact optimum, and (the oracle being exact) not better either
        assert ours[r] <= best + 1e-12 * best + 1e-14 * scale, (r, ours[r], best)
        assert ours[r] >= best - 1e-9 * best - 1e-13 * scale, (r, ours[r], best)


@pytest.mark.parametrize(
    "T, D, spread, common, seed",
    [
        (3, 8, 2.0, 0.0, 0),
        (4, 16, 2.0, 0.0, 1),
        (5, 8, 1.0, 0.0, 2),
        (5, 4, 1.0, 0.0, 3),
        (5, 16, 1.0, -1, 4),
    ],
)
def test_min_norm_matches_brute_force_kkt(T, D, spread, common, seed):
    R = 60
    J = jacobian(R, T, D, seed, spread, common)
    G = gram_of(J)
    present = mixed_mask(R, T, seed)
    w = solvers.min_norm_weights(with_garbage(G, present, seed), present)
    check_min_norm(G, present, w, lambda r, tasks: min_norm_oracle(G[r].numpy(), tasks))


@pytest.mark.parametrize("T, D, seed", [(8, 16, 0), (8, 6, 1), (6, 32, 2)])
def test_min_norm_matches_scipy_nnls_on_the_vectors(T, D, seed):
    R = 40
    J = jacobian(R, T, D, seed, spread=1.0)
    present = mixed_mask(R, T, seed, p=0.8)
    G = gram_of(J)
    w = solvers.min_norm_weights(G, present)
    check_simplex(present, w)
    for r in range(R):
        tasks = tasks_of(present[r])
        if tasks:
            ref = torch.as_tensor(min_norm_nnls(J[r].numpy(), tasks))
            scale = G[r].diagonal().max()
            # the NNLS reduction is exact but solved to ~1e-10 only
            torch.testing.assert_close(quad(G[r], w[r]), quad(G[r], ref), rtol=1e-7, atol=1e-11 * scale)


def test_min_norm_known_cases():
    G = gram_of(
        torch.tensor(
            [
                [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],  # orthogonal unit: (1/2, 1/2)
                [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # same direction: the shorter one
                [[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]],  # opposite: 0 in the hull
                [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.4, 0.4, 0.0]],  # third is the min-norm vertex
                [[3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 12.0]],  # 1/w_t ∝ ‖g_t‖²
            ],
            dtype=F64,
        )
    )
    present = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    w = solvers.min_norm_weights(G, present)
    inv = torch.tensor([1 / 9, 1 / 16, 1 / 144], dtype=F64)
    expected = torch.stack(
        [
            torch.tensor([0.5, 0.5, 0.0], dtype=F64),
            torch.tensor([1.0, 0.0, 0.0], dtype=F64),
            torch.tensor([0.5, 0.5, 0.0], dtype=F64),
            torch.tensor([0.0, 0.0, 1.0], dtype=F64),
            inv / inv.sum(),
        ]
    )
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-14)


def test_min_norm_one_and_no_present_task_and_t1():
    G = gram_of(jacobian(4, 3, 5, 0))
    present = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.bool)
    w = solvers.min_norm_weights(with_garbage(G, present), present)
    assert torch.equal(w, present.to(F64))
    G1 = gram_of(jacobian(3, 1, 4, 1))
    p1 = torch.tensor([[True], [False], [True]])
    assert torch.equal(solvers.min_norm_weights(G1, p1), p1.to(F64))


def test_min_norm_float32_gram_matches_its_float64_value():
    J = jacobian(50, 5, 12, 5, spread=1.0).float()
    G32 = gram_of(J)
    present = mixed_mask(50, 5, 5)
    w = solvers.min_norm_weights(G32, present)
    assert w.dtype == F64
    G64 = G32.double()
    check_min_norm(G64, present, w, lambda r, tasks: min_norm_oracle(G64[r].numpy(), tasks))


def test_min_norm_is_invariant_to_the_gradient_scale():
    G = gram_of(jacobian(30, 4, 8, 6))
    present = mixed_mask(30, 4, 6)
    w = solvers.min_norm_weights(G, present)
    for c in (1e-150, 1e-6, 1e8, 1e150):
        torch.testing.assert_close(solvers.min_norm_weights(G * c, present), w, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(1, 5),
    D=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    spread=st.floats(0.0, 3.0),
    dup=st.booleans(),
)
def test_min_norm_property(T, D, seed, spread, dup):
    R = 8
    J = jacobian(R, T, D, seed, spread)
    if dup and T >= 2:
        J[:, T - 1] = -2.5 * J[:, 0]  # collinear pair: singular Gram
    G = gram_of(J)
    present = torch.rand(R, T, generator=torch.Generator().manual_seed(seed)) < 0.75
    w = solvers.min_norm_weights(with_garbage(G, present, seed), present)
    check_min_norm(G, present, w, lambda r, tasks: min_norm_oracle(G[r].numpy(), tasks))


# --- ridge_solve --------------------------------------------------------------------------------------------
def test_ridge_solve_matches_dense_solve_on_the_present_block():
    R, T = 40, 5
    gen = torch.Generator().manual_seed(0)
    J = jacobian(R, T, 12, 0, spread=0.5)
    spd = gram_of(J) + 0.1 * torch.eye(T, dtype=F64)
    general = torch.randn(R, T, T, generator=gen, dtype=F64) + 4 * torch.eye(T, dtype=F64)
    present = mixed_mask(R, T, 0)
    b = torch.randn(R, T, generator=gen, dtype=F64)
    for A in (spd, general):
        x, ok = solvers.ridge_solve(with_garbage(A, present), b, present)
        assert x.dtype == F64 and x.shape == (R, T) and ok.all()
        assert torch.equal(x[~present], torch.zeros_like(x[~present]))
        for r in range(R):
            idx = present[r]
            if idx.any():
                ref = torch.linalg.solve(A[r][idx][:, idx], b[r][idx])
                torch.testing.assert_close(x[r][idx], ref, rtol=1e-10, atol=1e-12)


def test_ridge_solve_matrix_rhs_and_ridge():
    R, T, K = 20, 4, 3
    gen = torch.Generator().manual_seed(1)
    A = gram_of(jacobian(R, T, 8, 1, spread=1.0))
    present = mixed_mask(R, T, 1)
    b = torch.randn(R, T, K, generator=gen, dtype=F64)
    x, ok = solvers.ridge_solve(A, b, present, ridge=0.3)
    assert x.shape == (R, T, K) and ok.all()
    for r in range(R):
        idx = present[r]
        if idx.any():
            sub = A[r][idx][:, idx]
            lam = 0.3 * sub.diagonal().mean()
            ref = torch.linalg.solve(sub + lam * torch.eye(int(idx.sum()), dtype=F64), b[r][idx])
            torch.testing.assert_close(x[r][idx], ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(x[~present], torch.zeros_like(x[~present]))


def test_ridge_solve_singular_systems_flag_and_use_the_pseudo_inverse():
    R, T = 30, 4
    J = jacobian(R, T, 6, 2, spread=1.0)
    J[:, 1] = J[:, 0]  # duplicate gradient
    J[:, 3] = -3.0 * J[:, 2]  # collinear gradient
    A = gram_of(J)
    present = torch.ones(R, T, dtype=torch.bool)
    present[::3, 3] = False  # still singular (tasks 0 and 1)
    b = torch.randn(R, T, generator=torch.Generator().manual_seed(2), dtype=F64)
    x, ok = solvers.ridge_solve(with_garbage(A, present), b, present)
    assert not ok.any()
    assert torch.isfinite(x).all()
    for r in range(R):
        idx = present[r].numpy()
        ref = np.linalg.pinv(A[r].numpy()[np.ix_(idx, idx)]) @ b[r].numpy()[idx]
        scale = np.abs(ref).max()
        np.testing.assert_allclose(x[r].numpy()[idx], ref, rtol=1e-6, atol=1e-8 * scale)
    # a ridge makes them solvable: ok, and equal to the ridged dense solve
    x, ok = solvers.ridge_solve(A, b, present, ridge=1e-2)
    assert ok.all()
    for r in range(R):
        idx = present[r]
        sub = A[r][idx][:, idx]
        ref = torch.linalg.solve(
            sub + 1e-2 * sub.diagonal().mean() * torch.eye(len(sub), dtype=F64), b[r][idx]
        )
        torch.testing.assert_close(x[r][idx], ref, rtol=1e-8, atol=1e-10)


def test_ridge_solve_condition_threshold():
    A = torch.diag_embed(torch.tensor([[1.0, 1e-9], [1.0, 1e-7], [2.0, 0.0]], dtype=F64))
    b = torch.ones(3, 2, dtype=F64)
    present = torch.ones(3, 2, dtype=torch.bool)
    x, ok = solvers.ridge_solve(A, b, present, max_condition=1e8)
    assert ok.tolist() == [False, True, False]
    torch.testing.assert_close(x[1], torch.tensor([1.0, 1e7], dtype=F64))
    # beyond the bound: the singular value below σ_max / max_condition is dropped (min-norm least squares)
    torch.testing.assert_close(x[0], torch.tensor([1.0, 0.0], dtype=F64))
    torch.testing.assert_close(x[2], torch.tensor([0.5, 0.0], dtype=F64))
    assert solvers.ridge_solve(A, b, present, max_condition=1e10)[1].tolist() == [True, True, False]


def test_ridge_solve_is_scale_equivariant():
    R, T = 25, 4
    A = gram_of(jacobian(R, T, 3, 3, spread=1.0))  # D < T: some rows singular
    A[:5] = gram_of(jacobian(5, T, 10, 4, spread=0.5))
    present = mixed_mask(R, T, 3)
    b = torch.randn(R, T, generator=torch.Generator().manual_seed(3), dtype=F64)
    for ridge in (0.0, 1e-3):
        x, ok = solvers.ridge_solve(A, b, present, ridge=ridge)
        assert ok[:5].all() and (ridge > 0 or not ok.all())
        for c in (1e-8, 1e8):
            xc, okc = solvers.ridge_solve(c * A, b, present, ridge=ridge)
            assert torch.equal(okc, ok)
            torch.testing.assert_close(xc * c, x, rtol=1e-8, atol=1e-10 * x.abs().max())


def test_ridge_solve_degenerate_rows():
    T = 3
    A = torch.zeros(4, T, T, dtype=F64)
    A[3] = torch.eye(T, dtype=F64) * 2.0
    present = torch.tensor([[0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    b = torch.ones(4, T, dtype=F64)
    x, ok = solvers.ridge_solve(with_garbage(A, present), b, present, ridge=1.0)
    assert ok.tolist() == [True, False, False, True]  # empty row: trivially solved; zero block: singular
    # row 3: (2 + λ) x = 1 with λ = 1 × mean diag = 2
    expected = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0.25, 0, 0.25]], dtype=F64)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-15)


# --- conflict_projection ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "T, D, common, seed", [(2, 4, 0.0, 0), (4, 8, -1.0, 1), (5, 3, 0.0, 2), (8, 16, -1.0, 3)]
)
def test_conflict_projection_matches_the_vector_loop(T, D, common, seed):
    R = 30
    J = jacobian(R, T, D, seed, spread=1.5, common=common)
    J[4, 0] = 0.0  # a zero gradient
    if T >= 3:
        J[5, 2] = -J[5, 1]  # opposite pair
    present = mixed_mask(R, T, seed, p=0.8)
    order = torch.rand(R, T, T, generator=torch.Generator().manual_seed(seed)).argsort(dim=-1)
    P = solvers.conflict_projection_in_order(with_garbage(gram_of(J), present, seed), present, order)
    assert P.dtype == F64 and P.shape == (R, T, T)
    assert torch.equal(P[~present], torch.zeros_like(P[~present]))
    assert torch.equal(P.transpose(1, 2)[~present], torch.zeros_like(P[~present]))  # absent g_k never used
    ours = torch.einsum("rik,rkd->rid", P, J)
    ref = pcgrad_reference(J, present, order)
    scale = J.norm(dim=-1).amax(dim=1).view(R, 1, 1)
    torch.testing.assert_close(ours / scale, ref / scale, rtol=0, atol=1e-12)


def test_conflict_projection_known_two_task_result():
    J = torch.tensor([[[1.0, 0.0], [-1.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]], dtype=F64)
    present = torch.ones(2, 2, dtype=torch.bool)
    P = solvers.conflict_projection(gram_of(J), present, torch.Generator().manual_seed(0))
    # <g1, g2> = −1: ĝ1 = g1 − (−1/2) g2 = (1/2, 1/2), ĝ2 = g2 − (−1/1) g1 = (0, 1); no conflict: identity
    expected = torch.tensor([[[1.0, 0.5], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=F64)
    torch.testing.assert_close(P, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(P[0] @ J[0], torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=F64))


def test_conflict_projection_two_tasks_matches_torchjd_pcgrad():
    # with two tasks the order is irrelevant, so torchjd's randomly ordered PCGrad is a fixed oracle
    from torchjd.aggregation import PCGrad

    J = jacobian(6, 2, 7, 8, spread=1.0, common=-1.0)
    present = torch.ones(6, 2, dtype=torch.bool)
    P = solvers.conflict_projection(gram_of(J), present, torch.Generator().manual_seed(0))
    for r in range(6):
        torch.testing.assert_close(P[r].sum(dim=0) @ J[r], PCGrad()(J[r]), rtol=1e-10, atol=1e-12)


def test_conflict_projection_generator_determinism():
    R, T = 40, 5
    G = gram_of(jacobian(R, T, 6, 7, common=-1.0))
    present = mixed_mask(R, T, 7)
    a = solvers.conflict_projection(G, present, torch.Generator().manual_seed(11))
    b = solvers.conflict_projection(G, present, torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    # it is the documented recipe: the core with torch.rand(R, T, T, generator).argsort(-1)
    order = torch.rand(R, T, T, generator=torch.Generator().manual_seed(11)).argsort(dim=-1)
    assert torch.equal(a, solvers.conflict_projection_in_order(G, present, order))
    # the order matters for T ≥ 3 (different seeds give different projections somewhere)
    c = solvers.conflict_projection(G, present, torch.Generator().manual_seed(12))
    assert not torch.equal(a, c)


# --- dual_cone_weights --------------------------------------------------------------------------------------
def check_dual_cone_kkt(G: torch.Tensor, u: torch.Tensor, present: torch.Tensor, w: torch.Tensor) -> None:
    """w ≥ u, G w ≥ 0 and (w − u)·(G w) = 0 on the present tasks; zeros on absent tasks."""
    assert w.dtype == F64 and w.shape == u.shape and torch.isfinite(w).all()
    mask = present.unsqueeze(1).expand_as(w)
    assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
    assert (w[mask] >= u[mask]).all()
    Gc = torch.where(present.unsqueeze(2) & present.unsqueeze(1), G.to(F64), 0.0)
    scale = Gc.diagonal(dim1=1, dim2=2).amax(dim=1).clamp(min=1e-300).view(-1, 1, 1)
    gw = torch.einsum("rst,rkt->rks", Gc / scale, w)
    assert (gw[mask] >= -1e-10 * w.abs().amax()).all()
    slack = ((w - u) * gw)[mask].abs()
    assert (slack <= 1e-10 * (1 + w.abs().amax() ** 2)).all()


def assert_same_projection(J: torch.Tensor, w: torch.Tensor, ref: torch.Tensor) -> None:
    """Jᵀw = Jᵀref (the projection onto the dual cone is unique even where w is not), ``J`` [T, D]:
    to 1e-7 relative, or 1e-10 of the scale Σ_t |ref_t| ‖g_t‖ of the combination (a projection ≈ 0)."""
    err = (J.T @ (w - ref)).norm()
    scale = (ref.abs() * J.norm(dim=1)).sum()
    assert err <= 1e-7 * (J.T @ ref).norm() + 1e-10 * scale, (err, (J.T @ ref).norm(), scale)


def uniform_preferences(present: torch.Tensor) -> torch.Tensor:
    """UPGrad's u = diag(1/m over the present tasks): [R, T, T]."""
    m = present.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.diag_embed(present / m).to(F64)


@pytest.mark.parametrize(
    "T, D, spread, common, seed",
    [
        (2, 3, 1.0, 0.0, 0),
        (3, 8, 2.0, -1.0, 1),
        (4, 16, 2.0, 0.0, 2),
        (5, 8, 1.0, -1.0, 3),
        (5, 4, 1.0, 0.0, 4),
    ],
)
def test_dual_cone_matches_brute_force_kkt(T, D, spread, common, seed):
    R = 40
    J = jacobian(R, T, D, seed, spread, common)
    G = gram_of(J)
    present = mixed_mask(R, T, seed)
    gen = torch.Generator().manual_seed(seed)
    prefs = torch.cat([uniform_preferences(present), torch.rand(R, 2, T, generator=gen, dtype=F64)], dim=1)
    prefs = prefs * present.unsqueeze(1)
    w = solvers.dual_cone_weights(with_garbage(G, present, seed), prefs, present)
    check_dual_cone_kkt(G, prefs, present, w)
    for r in range(R):
        tasks = tasks_of(present[r])
        if not tasks:
            continue
        for k in range(prefs.shape[1]):
            ref = torch.as_tensor(dual_cone_oracle(G[r].numpy(), prefs[r, k].numpy(), tasks))
            assert_same_projection(J[r], w[r, k], ref)


@pytest.mark.parametrize("T, D, seed", [(8, 16, 0), (8, 8, 1), (6, 40, 2)])
def test_dual_cone_matches_scipy_bounded_least_squares(T, D, seed):
    R = 15
    J = jacobian(R, T, D, seed, spread=1.0, common=-1.0)
    G = gram_of(J)
    present = mixed_mask(R, T, seed, p=0.85)
    u = uniform_preferences(present)
    w = solvers.dual_cone_weights(G, u, present)
    check_dual_cone_kkt(G, u, present, w)
    for r in range(R):
        tasks = tasks_of(present[r])
        for k in tasks:
            A = J[r, tasks].T.numpy()  # [D, m]: min ‖A v‖ s.t. v ≥ u
            lo = u[r, k, tasks].numpy()
            res = scipy.optimize.lsq_linear(A, np.zeros(D), bounds=(lo, np.inf), method="bvls", tol=1e-14)
            ref = A @ res.x
            np.testing.assert_allclose(A @ w[r, k, tasks].numpy(), ref, rtol=0, atol=1e-8 * np.abs(A).max())


def test_dual_cone_known_cases():
    J = torch.tensor(
        [
            [[1.0, 0.0], [-1.0, 1.0]],  # conflict: u = e1 → w = (1, 1/2), Jᵀw = (1/2, 1/2) (= PCGrad's ĝ1)
            [[1.0, 0.0], [1.0, 1.0]],  # no conflict: w = u
            [[1.0, 2.0], [-2.0, -4.0]],  # opposite: Jᵀw = 0, the only point of the dual cone (a line)
        ],
        dtype=F64,
    )
    present = torch.ones(3, 2, dtype=torch.bool)
    u = torch.tensor([[1.0, 0.0]], dtype=F64).expand(3, 1, 2)
    w = solvers.dual_cone_weights(gram_of(J), u, present)
    torch.testing.assert_close(w[0, 0], torch.tensor([1.0, 0.5], dtype=F64), rtol=0, atol=1e-14)
    assert torch.equal(w[1, 0], u[1, 0])
    torch.testing.assert_close(w[2, 0] @ J[2], torch.zeros(2, dtype=F64), rtol=0, atol=1e-14)
    # non-negative gradients never conflict: w = u exactly, any T
    Jp = jacobian(10, 6, 5, 9).abs()
    prefs = torch.rand(10, 3, 6, generator=torch.Generator().manual_seed(9), dtype=F64)
    assert torch.equal(
        solvers.dual_cone_weights(gram_of(Jp), prefs, torch.ones(10, 6, dtype=torch.bool)), prefs
    )


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 4), D=st.integers(1, 6), seed=st.integers(0, 10_000), spread=st.floats(0.0, 2.0))
def test_dual_cone_property(T, D, seed, spread):
    R = 6
    J = jacobian(R, T, D, seed, spread, common=-1.0)
    G = gram_of(J)
    present = torch.rand(R, T, generator=torch.Generator().manual_seed(seed)) < 0.8
    u = uniform_preferences(present)
    w = solvers.dual_cone_weights(with_garbage(G, present, seed), u, present)
    check_dual_cone_kkt(G, u, present, w)
    for r in range(R):
        tasks = tasks_of(present[r])
        for k in tasks:
            ref = torch.as_tensor(dual_cone_oracle(G[r].numpy(), u[r, k].numpy(), tasks))
            assert_same_projection(J[r], w[r, k], ref)


# --- no NaN, ever -------------------------------------------------------------------------------------------
def degenerate_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    T, D = 4, 3
    base = jacobian(1, T, D, 0)[0]
    rows = {
        "all zero": torch.zeros(T, D, dtype=F64),
        "one nonzero": torch.cat([base[:1], torch.zeros(T - 1, D, dtype=F64)]),
        "duplicates": base[:1].expand(T, D).clone(),
        "collinear": base[:1] * torch.tensor([[1.0], [-2.0], [3.0], [0.0]], dtype=F64),
        "D < T": base,
        "tiny": base * 1e-150,
        "huge": base * 1e150,
    }
    cases = []
    masks = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1]], dtype=torch.bool)
    for name, J in rows.items():
        G = gram_of(J.unsqueeze(0)).expand(len(masks), T, T)
        cases.append((name, with_garbage(G, masks), masks))
        if name != "huge":  # its Gram (1e300) overflows float32: non-finite input, out of contract
            cases.append((name + " float32", with_garbage(G.float(), masks), masks))
    G = gram_of((base * 1e15).unsqueeze(0)).expand(len(masks), T, T).float()  # 1e30: near float32's max
    cases.append(("large float32", with_garbage(G, masks), masks))
    cases.append(
        ("T = 1", torch.tensor([[[0.0]], [[2.0]], [[float("nan")]]]), torch.tensor([[1], [1], [0]]) > 0)
    )
    return cases


@pytest.mark.parametrize("name, G, present", degenerate_cases(), ids=[c[0] for c in degenerate_cases()])
def test_no_solver_returns_nan_on_degenerate_input(name, G, present):
    R, T = present.shape
    check_simplex(present, solvers.min_norm_weights(G, present))

    x, ok = solvers.ridge_solve(G, torch.ones(R, T), present)
    assert torch.isfinite(x).all() and ok.shape == (R,)
    assert torch.equal(x[~present], torch.zeros_like(x[~present]))
    assert ok[~present.any(dim=1)].all()

    P = solvers.conflict_projection(G, present, torch.Generator().manual_seed(0))
    assert torch.isfinite(P).all()
    assert torch.equal(P[~present], torch.zeros_like(P[~present]))

    u = uniform_preferences(present)
    v = solvers.dual_cone_weights(G, u, present)
    assert torch.isfinite(v).all()
    mask = present.unsqueeze(1).expand_as(v)
    assert torch.equal(v[~mask], torch.zeros_like(v[~mask])) and (v[mask] >= u[mask]).all()
