"""UPGrad, DualProj, Aligned-MTL and Nash-MTL (METHODS.md §6): torchjd as the oracle in global mode, torchjd
again row by row on each row's present sub-Jacobian, the Nash condition checked directly, Nash-MTL's state
against torchjd's stateful object, and hypothesis properties (scale, permutation, extreme values, batched ==
a loop over rows).

Conventions applied explicitly (see each module's docstring):
- UPGrad / DualProj: torchjd's ``G / tr G + reg_eps I`` is our ``G + reg_eps tr(G) I`` (the weights do not
  depend on the factor tr G); torchjd's absolute ``norm_eps`` (``tr G < 1e-4`` → plain mean) is not ours:
  the oracle cases keep ``tr G ≥ 1e-4``, and one test pins the difference.
- Aligned-MTL: none (rank tolerance ``λ_max · m · eps`` of the Gram's dtype, as torchjd).
- Nash-MTL: ours solves ``α_t (Gα)_t = 1 − ε β_t⁴`` (β_t = α_t ‖g_t‖, ε = 1e-8) to rounding; torchjd's
  cvxpy iteration stops at ~1e-3, and only converges reliably when the task norms are of one order of
  magnitude, so the oracle cases are such (asserted through torchjd's own Nash residual), with a
  tolerance proportional to that residual.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchjd.aggregation import AlignedMTL, DualProj, NashMTL, UPGrad
from torchjd.linalg import QuadprogProjector

from recmtl.aggregators import StepInfo, TaskGrads, make_aggregator
from recmtl.aggregators.nashmtl import nash_weights
from recmtl.errors import ConfigError

F64 = torch.float64
NAMES = ["upgrad", "dualproj", "alignedmtl", "nashmtl"]
CONE = ["upgrad", "dualproj", "alignedmtl"]  # scale-equivariant and the identity on a single task
CAP = 1e-8  # nashmtl's default cap ε


# --- inputs and calls ---------------------------------------------------------------------------------------
def jacobian(T: int, D: int, seed: int, spread: float = 2.0, common: float = 0.0, batch: int = 0):
    """Random gradients [T, D] (or [batch, T, D]); norms spread over 10^±spread; ``common`` adds a shared
    direction of that size (positive: aligned tasks; negative: alternately along and against it)."""
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if batch else ()
    J = torch.randn(*lead, T, D, generator=gen, dtype=F64)
    shared = torch.randn(*lead, 1, D, generator=gen, dtype=F64)
    signs = torch.ones(T, 1, dtype=F64) if common >= 0 else (-1.0) ** torch.arange(T, dtype=F64).view(T, 1)
    J = J + abs(common) * signs * shared
    scales = 10 ** ((torch.rand(*lead, T, 1, generator=gen, dtype=F64) * 2 - 1) * spread)
    return J * scales


def ours(name: str, J: torch.Tensor, present: torch.Tensor | None = None, **params):
    """Global-mode call (R = 1 when J is [T, D]) or a row-mode call on [R, T, D]: (update, coefficients)."""
    agg = make_aggregator(name, **params)
    grads = J if J.ndim == 3 else J.unsqueeze(0)
    if present is None:
        present = torch.ones(grads.shape[:2], dtype=torch.bool)
    out = agg(grads, present, agg.init_state(grads.shape[1], grads.shape[0]), StepInfo())
    return (out.update[0], out.coefficients[0]) if J.ndim == 2 else (out.update, out.coefficients)


def weigh_rows(name: str, J: torch.Tensor, present: torch.Tensor, **params) -> torch.Tensor:
    """``weigh`` itself on every row (no single-task shortcut): coefficients [R, T]."""
    agg = make_aggregator(name, **params)
    grads = TaskGrads.from_dense(J, present)
    return agg.weigh(grads, agg.init_state(J.shape[1], J.shape[0]), StepInfo()).coefficients


def torchjd_nash(J: torch.Tensor, **params) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "not DPP"
        return NashMTL(n_tasks=J.shape[0], **params).weighting(J)


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """‖a − b‖ ≤ rtol · ‖b‖ (relative to the whole vector: a fair test for large D)."""
    err, ref = float((a - b).norm()), float(b.norm())
    assert err <= rtol * ref, (err, ref, rtol)


# --- torchjd oracle, global mode ----------------------------------------------------------------------------
# T ∈ {2, 3, 5}; D from T - 1 (rank-deficient) to 10 000; norms over 4 orders of magnitude (spread 2), then
# 6 (spread 3) on the small cases; plain, conflicting (common < 0) and aligned (common > 0) gradients.
ORACLE_CASES = [
    (T, D, spread, common, seed)
    for seed, (T, D) in enumerate([(2, 1), (3, 2), (5, 4), (2, 5), (3, 64), (5, 1000), (4, 10_000)])
    for spread, common in [(2.0, 0.0), (2.0, -3.0), (1.0, 3.0)]
] + [(T, D, 3.0, -1.0, 100 + T) for T, D in [(2, 3), (3, 3), (5, 8)]]


def oracle_jacobian(T, D, spread, common, seed):
    J = jacobian(T, D, seed, spread, common)
    assert (J * J).sum() >= 1e-4  # torchjd's norm_eps would replace G by 0 below that (not our convention)
    return J


@pytest.mark.parametrize("T, D, spread, common, seed", ORACLE_CASES)
@pytest.mark.parametrize("name, reference", [("upgrad", UPGrad), ("dualproj", DualProj)])
def test_dual_cone_methods_match_torchjd(name, reference, T, D, spread, common, seed):
    J = oracle_jacobian(T, D, spread, common, seed)
    update, _ = ours(name, J)
    # quadprog and our active-set solver are both exact on the same regularised QP: observed ≤ 1e-15
    assert_close_rel(update, reference()(J), rtol=1e-9)


@pytest.mark.parametrize("reg_eps", [0.0, 1e-2])
@pytest.mark.parametrize("name, reference", [("upgrad", UPGrad), ("dualproj", DualProj)])
def test_dual_cone_methods_match_torchjd_with_another_reg_eps(name, reference, reg_eps):
    J = jacobian(4, 32, 7, spread=1.0, common=-2.0)
    projector = QuadprogProjector(reg_eps=reg_eps if reg_eps else 1e-12)  # quadprog needs G > 0 strictly
    update, _ = ours(name, J, reg_eps=reg_eps)
    assert_close_rel(update, reference(projector=projector)(J), rtol=1e-8)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_no_absolute_norm_eps_unlike_torchjd(name):
    """torchjd: tr G < norm_eps = 1e-4 → G := 0 → the plain mean. Ours stays scale-equivariant."""
    J = jacobian(3, 16, 8, spread=0.5, common=-2.0)
    small = J * 1e-4  # tr G ≈ 1e-7
    mean = small.mean(dim=0)
    torch.testing.assert_close(UPGrad()(small) if name == "upgrad" else DualProj()(small), mean)
    ours_small, _ = ours(name, small)
    ours_big, _ = ours(name, J)
    torch.testing.assert_close(ours_small, ours_big * 1e-4, rtol=1e-10, atol=0)
    assert not torch.allclose(ours_small, mean, rtol=1e-3)


@pytest.mark.parametrize("T, D, spread, common, seed", ORACLE_CASES)
@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_alignedmtl_matches_torchjd(scale_mode, T, D, spread, common, seed):
    J = oracle_jacobian(T, D, spread, common, seed)
    update, _ = ours("alignedmtl", J, scale_mode=scale_mode)
    # both eigendecompose G (κ of the kept eigenvalues up to 1e11 here): error bound ~eps·κ, observed ≤ 2e-9
    assert_close_rel(update, AlignedMTL(scale_mode=scale_mode)(J), rtol=1e-6)


@pytest.mark.parametrize("T, D, seed", [(2, 8, 0), (3, 64, 1), (5, 1000, 2)])
def test_alignedmtl_matches_torchjd_in_float32(T, D, seed):
    """float32 gradients: the rank tolerance uses float32's eps, as torchjd does on a float32 Gram."""
    J = jacobian(T, D, seed, spread=0.5).float()
    update, _ = ours("alignedmtl", J)
    assert update.dtype == torch.float32
    assert_close_rel(update, AlignedMTL()(J), rtol=1e-4)


def test_alignedmtl_drops_null_directions_like_torchjd():
    """Duplicated and opposite gradients: rank 2 of 4; torchjd drops the same eigenvalues."""
    J = jacobian(2, 6, 9, spread=1.0)
    J = torch.cat([J, 3.0 * J[:1], -0.5 * J[1:]])
    update, coefficients = ours("alignedmtl", J)
    assert torch.isfinite(coefficients).all()
    assert_close_rel(update, AlignedMTL()(J), rtol=1e-9)


# Nash-MTL: norms within one order of magnitude (torchjd converges there), T ≤ D, plain / conflicting /
# aligned gradients
NASH_CASES = [
    (2, 2, 0.5, 0.0, 1),
    (2, 10, 0.5, -1.0, 2),
    (3, 3, 0.5, 0.0, 3),
    (3, 64, 0.5, 1.0, 4),
    (5, 5, 0.5, 0.0, 5),
    (5, 1000, 0.5, -0.5, 6),
    (4, 10_000, 0.5, 0.0, 7),
]


@pytest.mark.parametrize("T, D, spread, common, seed", NASH_CASES)
def test_nashmtl_matches_torchjd(T, D, spread, common, seed):
    J = jacobian(T, D, seed, spread, common)
    G = J @ J.T
    reference = torchjd_nash(J, max_norm=0.0)
    residual = float((reference * (G @ reference) - 1.0).abs().max())
    assert residual < 1e-4, "torchjd did not converge: not a valid oracle case"
    cond = torch.linalg.cond(G / torch.outer(G.diagonal(), G.diagonal()).sqrt())
    assert cond < 1e3  # well-conditioned: α's error ≲ cond × residual
    _, coefficients = ours("nashmtl", J, max_norm=0.0)
    tol = 10 * float(cond) * residual + 1e-6
    torch.testing.assert_close(coefficients, reference, rtol=tol, atol=0)
    # default max_norm = 1: the same clipping as torchjd (‖Jᵀα‖² = αᵀGα = T > 1, so it always clips)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped_reference = NashMTL(n_tasks=T)(J)
    update, _ = ours("nashmtl", J)
    assert abs(float(update.norm()) - 1.0) < 1e-9
    assert_close_rel(update, clipped_reference, rtol=tol)


# --- torchjd oracle, row by row -----------------------------------------------------------------------------
def mixed_rows(R: int, T: int, D: int, seed: int, spread: float = 2.0):
    """[R, T, D] gradients with a random mask whose first rows have 0, 1, 2 and all T tasks present."""
    J = jacobian(T, D, seed, spread, common=-1.0, batch=R)
    gen = torch.Generator().manual_seed(seed)
    present = torch.rand(R, T, generator=gen) < 0.7
    present[0] = False
    present[1] = False
    present[1, T - 1] = True
    present[2] = False
    present[2, :2] = True
    present[3] = True
    return torch.where(present.unsqueeze(2), J, 0.0), present


@pytest.mark.parametrize(
    "name, reference", [("upgrad", UPGrad()), ("dualproj", DualProj()), ("alignedmtl", AlignedMTL())]
)
def test_row_mode_is_torchjd_on_each_rows_present_tasks(name, reference):
    R, T, D = 24, 4, 6
    J, present = mixed_rows(R, T, D, seed=11, spread=1.0)
    update, coefficients = ours(name, J, present)
    for r in range(R):
        tasks = present[r].nonzero().flatten()
        if tasks.numel() == 0:
            assert (update[r] == 0).all() and (coefficients[r] == 0).all()
            continue
        assert (coefficients[r][~present[r]] == 0).all()
        assert_close_rel(update[r], reference(J[r, tasks]), rtol=1e-6)


# --- the Nash condition, directly ---------------------------------------------------------------------------
def nash_residual(G: torch.Tensor, alpha: torch.Tensor, cap: float = CAP) -> torch.Tensor:
    """max_t |α_t (Gα)_t − 1 + ε β_t⁴| over the tasks with α_t ≠ 0, per row ([R, T, T], [R, T] → [R])."""
    beta = alpha * torch.diagonal(G, dim1=1, dim2=2).sqrt()
    r = alpha * (G @ alpha.unsqueeze(2)).squeeze(2) - 1.0 + cap * beta**4
    return torch.where(alpha != 0, r.abs(), 0.0).amax(dim=1)


@pytest.mark.parametrize("T, D", [(2, 1), (2, 8), (3, 2), (3, 16), (5, 4), (5, 5), (5, 32), (8, 8)])
def test_nash_condition_holds_on_our_output(T, D):
    """Our output solves α_t (Gα)_t = 1 (up to the cap term): norms over 8 orders of magnitude, rank-deficient
    and exactly conflicting rows included; where it is negligible (full rank), the plain condition."""
    J = jacobian(T, D, seed=T * 100 + D, spread=4.0, batch=300)
    J[:50, 1] = -0.3 * J[:50, 0]  # exact conflicts
    J[50:100, 1] = 7.0 * J[50:100, 0]  # duplicates
    G = J @ J.transpose(1, 2)
    present = torch.ones(300, T, dtype=torch.bool)
    alpha = weigh_rows("nashmtl", J, present, max_norm=0.0).to(F64)
    assert (alpha > 0).all()
    assert nash_residual(G, alpha).max() < 1e-8
    if D >= T:  # full rank: where β ≤ 5 the cap term is ≤ 6e-6, so the plain condition holds
        beta = alpha * torch.diagonal(G, dim1=1, dim2=2).sqrt()
        regular = (beta.amax(dim=1) <= 5.0) & (torch.arange(300) >= 100)
        assert regular.sum() >= 100  # most of the 200 random rows
        assert nash_residual(G[regular], alpha[regular], cap=0.0).max() < 1e-5
        # the Nash update has norm² = αᵀGα = Σ_t α_t (Gα)_t = T
        norm2 = (alpha[regular].unsqueeze(1) @ G[regular] @ alpha[regular].unsqueeze(2)).flatten()
        torch.testing.assert_close(norm2, torch.full_like(norm2, float(T)), rtol=1e-5, atol=0)


def test_nash_exact_conflict_is_capped_and_gives_no_update():
    g = torch.tensor([[3.0, 4.0], [-6.0, -8.0]], dtype=F64)  # opposite: no Nash solution exists
    alpha = nash_weights((g @ g.T).unsqueeze(0), torch.ones(1, 2, dtype=torch.bool))
    beta = alpha[0] * g.norm(dim=1)
    # β_t (Cβ)_t = 1 − ε β_t⁴ with Cβ = 0: β = ε^(-1/4) = 100
    torch.testing.assert_close(beta, torch.full((2,), CAP**-0.25, dtype=F64), rtol=1e-9, atol=0)
    update, _ = ours("nashmtl", g, max_norm=0.0)
    assert update.abs().max() < 1e-12


def test_nash_zero_gradient_task_is_left_out():
    J = jacobian(3, 8, 12, spread=1.0)
    with_zero = torch.cat([J[:1], torch.zeros(1, 8, dtype=F64), J[1:]])
    _, c_zero = ours("nashmtl", with_zero, max_norm=0.0)
    _, c = ours("nashmtl", J, max_norm=0.0)
    assert c_zero[1] == 0
    torch.testing.assert_close(c_zero[[0, 2, 3]], c, rtol=1e-12, atol=0)


def test_nash_update_ignores_per_task_scales_and_is_clipped():
    J = jacobian(4, 12, 13, spread=1.0)
    scales = torch.tensor([1e-3, 1.0, 50.0, 1e4], dtype=F64).unsqueeze(1)
    a, _ = ours("nashmtl", J, max_norm=0.0)
    b, _ = ours("nashmtl", J * scales, max_norm=0.0)
    torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    clipped, _ = ours("nashmtl", J, max_norm=0.5)
    torch.testing.assert_close(clipped, a * 0.5 / a.norm(), rtol=1e-12, atol=0)
    unclipped, _ = ours("nashmtl", J, max_norm=10.0)  # ‖a‖ = 2 < 10
    torch.testing.assert_close(unclipped, a, rtol=0, atol=0)


# --- single tasks: the identity flag is the maths, not the shortcut -----------------------------------------
def test_single_task_rows_through_weigh_itself():
    gen = torch.Generator().manual_seed(14)
    J = torch.randn(12, 3, 5, generator=gen, dtype=F64) * 10 ** torch.randn(12, 3, 1, generator=gen)
    present = torch.zeros(12, 3, dtype=torch.bool)
    present[torch.arange(12), torch.arange(12) % 3] = True
    J[4, 1] = 0.0  # a zero gradient too
    J = torch.where(present.unsqueeze(2), J, 0.0)
    for name in CONE:
        assert make_aggregator(name).identity_on_single_task
        c = weigh_rows(name, J, present)
        assert torch.equal(c, present.to(c.dtype)), name  # exactly 1, exactly 0
    assert not make_aggregator("nashmtl").identity_on_single_task
    c = weigh_rows("nashmtl", J, present, max_norm=0.0)  # one task: α = 1 / ‖g‖ (up to the cap)
    norms = J.norm(dim=2)
    expected = torch.where(present & (norms > 0), 1.0 / norms.clamp(min=1e-300), 0.0)
    torch.testing.assert_close(c, expected, rtol=1e-7, atol=0)


# --- Nash-MTL's state (global mode) -------------------------------------------------------------------------
def global_call(agg, J: torch.Tensor, state, present: torch.Tensor | None = None):
    present = torch.ones(1, J.shape[0], dtype=torch.bool) if present is None else present
    grads = TaskGrads.from_dense(J.unsqueeze(0), present, mode="global")
    return agg.aggregate(grads, state, StepInfo(mode="global"))


def test_nash_state_reuses_weights_like_torchjd():
    T, D, every = 3, 20, 3
    agg = make_aggregator("nashmtl", update_weights_every=every)
    reference = NashMTL(n_tasks=T, update_weights_every=every)
    state = agg.init_state(T, 50, mode="global")
    shapes = {k: (v.shape, v.dtype) for k, v in state.items()}
    last_fresh = None
    for step in range(7):
        J = jacobian(T, D, 200 + step, spread=0.3, common=0.5)
        before = {k: v.clone() for k, v in state.items()}
        out = global_call(agg, J, state)
        assert all(torch.equal(before[k], state[k]) for k in state)  # never modified in place
        assert {k: (v.shape, v.dtype) for k, v in out.state.items()} == shapes
        assert out.state["step"] == step + 1
        # an independent loop: fresh weights at steps 0, 3, 6; otherwise the last fresh ones, re-clipped
        if step % every == 0:
            last_fresh = nash_weights((J @ J.T).unsqueeze(0), torch.ones(1, T, dtype=torch.bool))[0]
        expected = last_fresh / max(1.0, float((last_fresh @ J).norm()))
        torch.testing.assert_close(out.coefficients[0], expected, rtol=1e-12, atol=0)
        torch.testing.assert_close(out.state["alpha"], last_fresh, rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_close_rel(out.update[0], reference(J), rtol=1e-4)
        state = out.state


def test_nash_state_resumes_and_reused_weights_follow_the_present_tasks():
    T, every = 3, 2
    agg = make_aggregator("nashmtl", update_weights_every=every, max_norm=0.0)
    Js = [jacobian(T, 10, 300 + k, spread=0.3) for k in range(4)]
    first = global_call(agg, Js[0], agg.init_state(T, 1, mode="global"))
    # a resumed run: the saved state (a copy, as from a checkpoint) continues identically
    saved = {k: v.clone() for k, v in first.state.items()}
    absent = torch.tensor([[True, False, True]])
    a = global_call(agg, Js[1], first.state, absent)
    b = global_call(
        make_aggregator("nashmtl", update_weights_every=every, max_norm=0.0), Js[1], saved, absent
    )
    assert torch.equal(a.coefficients, b.coefficients) and torch.equal(a.state["step"], b.state["step"])
    # step 1 reuses step 0's weights, masked to the tasks present now
    assert a.coefficients[0, 1] == 0
    torch.testing.assert_close(a.coefficients[0, [0, 2]], first.coefficients[0, [0, 2]], rtol=0, atol=0)


def test_nash_row_mode_is_stateless_and_needs_every_one():
    agg = make_aggregator("nashmtl", update_weights_every=2)
    assert agg.init_state(3, 10, mode="row") == {}
    J, present = mixed_rows(6, 3, 4, seed=15)
    with pytest.raises(ConfigError, match="update_weights_every"):
        agg(J, present, agg.init_state(3, 6), StepInfo())


@pytest.mark.parametrize(
    "name, params",
    [
        ("alignedmtl", {"scale_mode": "max"}),
        ("upgrad", {"reg_eps": -1e-4}),
        ("dualproj", {"reg_eps": 2.0}),
        ("nashmtl", {"max_norm": -1.0}),
        ("nashmtl", {"update_weights_every": 0}),
        ("nashmtl", {"optim_niter": 0}),
        ("nashmtl", {"cap": 0.0}),
    ],
)
def test_invalid_options_are_config_errors(name, params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        make_aggregator(name, **params)


# --- hypothesis properties ----------------------------------------------------------------------------------
def random_rows(seed: int, R: int, T: int, D: int, log_spread: float, p: float = 0.75):
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(R, T, D, generator=gen, dtype=F64)
    J = J * 10 ** ((torch.rand(R, T, 1, generator=gen, dtype=F64) * 2 - 1) * log_spread)
    present = torch.rand(R, T, generator=gen) < p
    return torch.where(present.unsqueeze(2), J, 0.0), present


def eigh_rtol(J: torch.Tensor, present: torch.Tensor) -> float:
    """Aligned-MTL's rounding bound, 100 · eps · κ: κ the largest ratio λ_max / λ_min over the eigenvalues
    it keeps (λ > λ_max · m · eps) of the rows' present Grams. Batched and single eigh calls, or a
    permuted Gram, round differently: the small eigenvalues (and α through sqrt(λ_min / λ)) move by ~eps·κ."""
    eps, kappa = torch.finfo(F64).eps, 1.0
    for r in range(J.shape[0]):
        tasks = present[r].nonzero().flatten()
        lam = torch.linalg.eigvalsh(J[r, tasks] @ J[r, tasks].T) if tasks.numel() else torch.zeros(1)
        if lam[-1] > 0:
            kept = lam[lam > lam[-1] * tasks.numel() * eps]
            kappa = max(kappa, float(kept[-1] / kept[0]))
    return 100 * eps * kappa


SMALL = dict(
    seed=st.integers(0, 2**16),
    T=st.integers(1, 5),
    D=st.integers(1, 8),
    log_spread=st.floats(0.0, 3.0),
)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(CONE), k=st.sampled_from([1e-6, 0.3, 7.0, 1e5]), **SMALL)
def test_scale_equivariance(name, k, seed, T, D, log_spread):
    J, present = random_rows(seed, 6, T, D, log_spread)
    a, ca = ours(name, J, present)
    b, cb = ours(name, J * k, present)
    torch.testing.assert_close(cb, ca, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(b, a * k, rtol=1e-6, atol=1e-9 * k * float(J.abs().max()))


@settings(max_examples=25, deadline=None)
@given(k=st.sampled_from([1e-6, 0.3, 7.0, 1e5]), **SMALL)
def test_nash_scale_invariance(k, seed, T, D, log_spread):
    """Nash: α ∝ 1/scale, so the (clipped or not) update does not change with the gradients' scale."""
    J, present = random_rows(seed, 6, T, D, log_spread)
    for max_norm in (0.0, 1.0):
        a, ca = ours("nashmtl", J, present, max_norm=max_norm)
        b, cb = ours("nashmtl", J * k, present, max_norm=max_norm)
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(cb * k, ca, rtol=1e-6, atol=0)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(NAMES), perm_seed=st.integers(0, 1000), **SMALL)
def test_permutation_invariance(name, perm_seed, seed, T, D, log_spread):
    J, present = random_rows(seed, 6, T, D, log_spread)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(perm_seed))
    a, ca = ours(name, J, present)
    b, cb = ours(name, J[:, perm], present[:, perm])
    scale = float(J.abs().max()) + 1e-300
    rtol = 1e-6 + (eigh_rtol(J, present) if name == "alignedmtl" else 0.0)
    torch.testing.assert_close(b, a, rtol=rtol, atol=1e-9 * scale)
    torch.testing.assert_close(cb, ca[:, perm], rtol=rtol, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(NAMES), **SMALL)
def test_batched_equals_a_loop_over_rows(name, seed, T, D, log_spread):
    J, present = random_rows(seed, 8, T, D, log_spread)
    update, coefficients = ours(name, J, present)
    for r in range(J.shape[0]):
        u, c = ours(name, J[r : r + 1], present[r : r + 1])
        rtol = 1e-9 + (eigh_rtol(J[r : r + 1], present[r : r + 1]) if name == "alignedmtl" else 0.0)
        torch.testing.assert_close(u[0], update[r], rtol=rtol, atol=1e-12 * float(J[r].abs().max()))
        torch.testing.assert_close(c[0], coefficients[r], rtol=rtol, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    magnitude=st.sampled_from([0.0, 1e-30, 1e-12, 1.0, 1e12, 1e30]),
    kind=st.sampled_from(["random", "duplicate", "opposite", "zero task", "collinear"]),
    dtype=st.sampled_from([F64, torch.float32]),
    seed=st.integers(0, 2**16),
    T=st.integers(1, 5),
    D=st.integers(1, 6),
)
def test_never_nan_or_inf(name, magnitude, kind, dtype, seed, T, D):
    J, present = random_rows(seed, 5, T, D, 1.0, p=0.8)
    if kind == "duplicate" and T > 1:
        J[:, 1] = J[:, 0]
    elif kind == "opposite" and T > 1:
        J[:, 1] = -2.0 * J[:, 0]
    elif kind == "zero task":
        J[:, 0] = 0.0
    elif kind == "collinear":
        J = J[:, :, :1].expand(-1, -1, D) * torch.arange(1, D + 1, dtype=F64)
    J = torch.where(present.unsqueeze(2), J * magnitude, 0.0).to(dtype)
    update, coefficients = ours(name, J, present)
    assert update.dtype == dtype
    assert torch.isfinite(update).all() and torch.isfinite(coefficients).all()
    assert (coefficients[~present] == 0).all()
    if magnitude == 0.0:
        assert (update == 0).all()
