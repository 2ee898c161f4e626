"""The loss-weighting methods (METHODS.md §6): ``rlw``, ``uw``, ``dwa``, ``gradnorm``, ``famo``, ``dbmtl``.

- torchjd as the oracle where it has the method (global mode, R = 1, all tasks present), over sequences
  of steps for the stateful ones: ``Random`` (rlw), the ``UW`` / ``DWA`` / ``FAMO`` scalarizations, whose
  gradient with respect to the losses is our coefficient vector, and whose update through a linear model
  is ``coefficients @ J``;
- independent implementations where torchjd has none: GradNorm (autograd + torch.optim.Adam) and DB-MTL
  (a plain Python loop of the EMA, and LibMTL's full-gradient formula where the two readings agree);
- hypothesis properties: scale equivariance (all but GradNorm), permutation of tasks and losses, row mode
  equal to global mode (global weights), batched == loop over rows where it holds, no NaN/inf, fixed
  state keys and shapes.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchjd.aggregation import Random
from torchjd.scalarization import DWA as TorchjdDWA
from torchjd.scalarization import FAMO as TorchjdFAMO
from torchjd.scalarization import UW as TorchjdUW

from recmtl.aggregators import Aggregation, StepInfo, TaskGrads, make_aggregator
from recmtl.aggregators.uw import uw_log_var_grad
from recmtl.errors import ConfigError

NAMES = ("rlw", "uw", "dwa", "gradnorm", "famo", "dbmtl")
LOSS_BASED = NAMES[1:]
SCALE_EQUIVARIANT = ("rlw", "uw", "dwa", "famo", "dbmtl")  # gradnorm: its Adam step sees ||g|| (eps)
# (T, D): D from T − 1 (rank-deficient) to 10 000
SHAPES = [(2, 1), (2, 300), (3, 2), (3, 10_000), (5, 4), (5, 2_000)]
KINDS = ("random", "aligned", "conflicting")
# every shape once, the kinds in turn
SHAPE_KINDS = [(T, D, KINDS[i % len(KINDS)]) for i, (T, D) in enumerate(SHAPES)] + [(3, 50, "conflicting")]


# --- helpers ---------------------------------------------------------------------------------------------


def jacobian(T: int, D: int, seed: int, kind: str = "random") -> torch.Tensor:
    """[T, D] float64 rows with norms over four orders of magnitude; "aligned": all rows near one direction;
    "conflicting": row 1 nearly opposite to row 0."""
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(T, D, generator=gen, dtype=torch.float64)
    if kind == "aligned":
        J = J[:1] + 0.1 * J
    elif kind == "conflicting" and T > 1:
        J[1] = -J[0] + 0.1 * J[1]
    J = J / J.norm(dim=1, keepdim=True)
    return J * torch.logspace(-2, 2, T, dtype=torch.float64)[torch.randperm(T, generator=gen)].unsqueeze(1)


def loss_sequence(T: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Positive float64 losses over three orders of magnitude, each task falling at its own noisy rate."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.logspace(-2, 1, T, dtype=torch.float64)[torch.randperm(T, generator=gen)]
    rate = 0.5 + torch.rand(T, generator=gen, dtype=torch.float64)
    noise = 1.0 + 0.3 * torch.rand(steps, T, generator=gen, dtype=torch.float64)
    return [start * rate ** (-0.3 * k) * noise[k] for k in range(steps)]


def info(losses: torch.Tensor | None, *, epoch: int = 0, step: int = 0, seed: int = 0, mode: str = "global"):
    gen = torch.Generator().manual_seed(seed)
    return StepInfo(epoch=epoch, step=step, mode=mode, losses=losses, generator=gen)


def call_global(agg, J: torch.Tensor, state, step_info: StepInfo, present=None) -> Aggregation:
    """One global-mode call on the Jacobian J [T, D] (R = 1)."""
    if present is None:
        present = torch.ones(J.shape[0], dtype=torch.bool)
    return agg.aggregate(
        TaskGrads.from_dense(J.unsqueeze(0), present.unsqueeze(0), "global"), state, step_info
    )


def close(actual, expected, *, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """assert_close with atol relative to the magnitude of ``expected`` (long vectors, spread norms)."""
    scale = max(float(expected.abs().max()), 1e-300) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol * scale)


def random_rows(R: int, T: int, D: int, seed: int, dtype=torch.float64, all_present: bool = False):
    """grads [R, T, D] (task scales over three orders) and present [R, T] with every task on some row."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 2, T, dtype=torch.float64)[torch.randperm(T, generator=gen)]
    grads = torch.randn(R, T, D, generator=gen, dtype=torch.float64) * scales.view(1, T, 1)
    present = torch.ones(R, T, dtype=torch.bool)
    if not all_present:
        present = torch.rand(R, T, generator=gen) < 0.6
        present[torch.randint(R, (T,), generator=gen), torch.arange(T)] = True
    return torch.where(present.unsqueeze(-1), grads, 0.0).to(dtype), present


def run_sequence(agg, grads_seq, present_seq, losses_seq, *, mode: str = "row", seed: int = 0):
    """Call ``agg`` on a sequence of [R, T, D] steps (step k in epoch k, so DWA's weights move too)."""
    T = grads_seq[0].shape[1]
    state = agg.init_state(T, grads_seq[0].shape[0], mode)
    outs = []
    for k, (g, p, L) in enumerate(zip(grads_seq, present_seq, losses_seq, strict=True)):
        grads = TaskGrads.from_dense(g, p, mode)
        out = agg.aggregate(grads, state, info(L, epoch=k, step=k, seed=seed + k, mode=mode))
        outs.append(out)
        state = out.state
    return outs


# --- rlw: torchjd Random ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T, D", SHAPES)
def test_rlw_draw_equals_torchjd_random(T, D, dtype):
    """Same seed → same N(0, I_T) draw → same weights and update (torchjd draws from the global RNG in the
    matrix's dtype; ours from info.generator in the gradients' compute dtype)."""
    J = jacobian(T, D, seed=T * D).to(dtype)
    agg = make_aggregator("rlw")
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for seed in range(3):
        out = call_global(agg, J, {}, info(None, seed=seed))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            weights = Random().weighting(J)
            torch.manual_seed(seed)
            expected = Random()(J)
        close(out.coefficients[0], weights, **tol)
        close(out.update[0], expected, **tol)
        assert torch.isclose(out.coefficients.sum(), torch.ones((), dtype=out.coefficients.dtype))


def test_rlw_distribution_matches_torchjd():
    """Over many steps the weights have torchjd's distribution: compare the sorted samples (same seeds)
    and the moments: mean 1/T for every task, a spread that is not degenerate."""
    T, n = 3, 400
    J = jacobian(T, 5, seed=1)
    agg = make_aggregator("rlw")
    gen = torch.Generator().manual_seed(123)
    ours = torch.stack([call_global(agg, J, {}, StepInfo(generator=gen)).coefficients[0] for _ in range(n)])
    with torch.random.fork_rng():
        torch.manual_seed(123)
        theirs = torch.stack([Random().weighting(J) for _ in range(n)])
    close(ours.sort(0).values, theirs.sort(0).values)
    torch.testing.assert_close(ours.mean(0), torch.full((T,), 1 / T, dtype=ours.dtype), atol=0.03, rtol=0)
    assert (ours.std(0) > 0.1).all()


def test_rlw_softmax_over_present_tasks_and_generator_required():
    T = 4
    J = jacobian(T, 6, seed=2)
    agg = make_aggregator("rlw")
    present = torch.tensor([True, False, True, True])
    out = call_global(agg, J, {}, info(None, seed=5), present)
    z = torch.randn(T, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = torch.zeros(T, dtype=torch.float64)
    expected[present] = torch.softmax(z[present], 0)
    close(out.coefficients[0], expected)
    with pytest.raises(ValueError, match="generator"):
        call_global(agg, J, {}, StepInfo())


# --- uw: torchjd UW + torch.optim.Adam ---------------------------------------------------------------------


@pytest.mark.parametrize("T, D, kind", SHAPE_KINDS)
def test_uw_matches_torchjd_uw_and_adam(T, D, kind):
    """Coefficients = ∂UW/∂L, ∂UW/∂s = ours, and torch.optim.Adam on torchjd's UW parameters gives our s."""
    lr = 0.05  # larger than the default so that s moves visibly in a few steps
    agg = make_aggregator("uw", lr=lr)
    reference = TorchjdUW(T).double()
    optimiser = torch.optim.Adam(reference.parameters(), lr=lr)
    state = agg.init_state(T, 1, "global")
    for k, L in enumerate(loss_sequence(T, 8, seed=D)):
        J = jacobian(T, D, seed=k, kind=kind)
        losses = L.clone().requires_grad_(True)
        d_losses, d_log_var = torch.autograd.grad(reference(losses), [losses, reference.log_var])
        out = call_global(agg, J, state, info(L, step=k))
        close(out.coefficients[0], d_losses)
        close(out.update[0], d_losses @ J)
        close(uw_log_var_grad(state["log_var"], L), d_log_var)
        optimiser.zero_grad()
        reference.log_var.grad = d_log_var
        optimiser.step()
        state = out.state
        close(state["log_var"], reference.log_var.detach())
    assert (state["log_var"].abs() > 0.1).all()  # it moved


# --- dwa: torchjd DWA --------------------------------------------------------------------------------------


@pytest.mark.parametrize("T, D", SHAPES)
def test_dwa_matches_torchjd_dwa_over_epochs(T, D):
    """torchjd's DWA fed the same losses with .step() at each epoch end: equal weights at every step;
    uniform for the first two epochs, Σλ = T always, not uniform afterwards."""
    agg = make_aggregator("dwa")
    reference = TorchjdDWA(temperature=2.0)
    state = agg.init_state(T, 1, "global")
    steps_per_epoch = 3
    sequence = loss_sequence(T, 6 * steps_per_epoch, seed=T + D)
    for epoch in range(6):
        for step in range(steps_per_epoch):
            L = sequence[epoch * steps_per_epoch + step]
            losses = L.clone().requires_grad_(True)
            (expected,) = torch.autograd.grad(reference(losses), [losses])
            J = jacobian(T, D, seed=epoch * 10 + step)
            out = call_global(agg, J, state, info(L, epoch=epoch, step=step))
            state = out.state
            close(out.coefficients[0], expected)
            close(out.update[0], expected @ J)
            assert torch.isclose(out.coefficients.sum(), torch.tensor(float(T), dtype=torch.float64))
            if epoch < 2:
                assert (out.coefficients == 1).all()
            elif T > 1:
                assert not torch.allclose(out.coefficients, torch.ones_like(out.coefficients))
        reference.step()


def test_dwa_skipped_epochs_leave_no_average():
    """torchjd's step() after an epoch without a call keeps the history: so does ours (no empty average)."""
    T = 3
    agg = make_aggregator("dwa", temperature=0.5)
    reference = TorchjdDWA(temperature=0.5)
    state = agg.init_state(T, 1)
    J = jacobian(T, 4, seed=0)
    for epoch, L in zip([0, 1, 4, 7], loss_sequence(T, 4, seed=3), strict=True):
        losses = L.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(reference(losses), [losses])
        out = call_global(agg, J, state, info(L, epoch=epoch))
        state = out.state
        close(out.coefficients[0], expected)
        reference.step()


# --- famo: torchjd FAMO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("T, D, kind", SHAPE_KINDS)
def test_famo_matches_torchjd_famo(T, D, kind):
    """torchjd's FAMO called on step k's losses and then update(step k+1's losses) — our [reading]
    delta="consecutive" — gives our logits after step k+1 and ∂FAMO/∂L = our coefficients."""
    agg = make_aggregator("famo")
    reference = TorchjdFAMO(T).double()
    state = agg.init_state(T, 1, "global")
    for k, L in enumerate(loss_sequence(T, 10, seed=7 * T + D)):
        if k > 0:
            reference.update(L)  # the "after" losses of step k − 1 are this step's losses
        losses = L.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(reference(losses), [losses])
        J = jacobian(T, D, seed=k, kind=kind)
        out = call_global(agg, J, state, info(L, step=k))
        state = out.state
        close(state["logits"], reference._w.detach(), atol=1e-13)
        close(out.coefficients[0], expected)
        close(out.update[0], expected @ J)
        assert torch.isclose(out.coefficients.sum(), torch.ones((), dtype=torch.float64))
    if T > 1:
        assert state["logits"].abs().max() > 1e-3  # the logits moved


# --- gradnorm: an independent autograd implementation -----------------------------------------------------


def gradnorm_reference(jacobians, losses_seq, *, alpha: float, lr: float):
    """GradNorm as the paper's Algorithm 1 with autograd: w a leaf trained by torch.optim.Adam on
    Σ_t |‖w_t g_t‖ − Ḡ r_t^α| (target detached), then w ← T w / Σ w. Returns the weights used at each
    step and the weights after it."""
    T = jacobians[0].shape[0]
    w = torch.ones(T, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([w], lr=lr)
    initial = losses_seq[0]
    used, after = [], []
    for J, L in zip(jacobians, losses_seq, strict=True):
        used.append(w.detach().clone())
        G = torch.stack([torch.linalg.vector_norm(w[t] * J[t]) for t in range(T)])
        ratio = L / initial
        target = (G.mean() * (ratio / ratio.mean()) ** alpha).detach()
        optimiser.zero_grad()
        (G - target).abs().sum().backward()
        optimiser.step()
        with torch.no_grad():
            w.mul_(T / w.sum())
        after.append(w.detach().clone())
    return used, after


@pytest.mark.parametrize("T, D, kind", SHAPE_KINDS)
def test_gradnorm_matches_an_autograd_implementation(T, D, kind):
    lr, alpha = 0.05, 1.5
    agg = make_aggregator("gradnorm", lr=lr, alpha=alpha)
    losses_seq = loss_sequence(T, 8, seed=T * 31 + D)
    jacobians = [jacobian(T, D, seed=k, kind=kind) * (1 + 0.2 * k) for k in range(8)]
    used, after = gradnorm_reference(jacobians, losses_seq, alpha=alpha, lr=lr)
    state = agg.init_state(T, 1, "global")
    for k, (J, L) in enumerate(zip(jacobians, losses_seq, strict=True)):
        out = call_global(agg, J, state, info(L, step=k))
        state = out.state
        close(out.coefficients[0], used[k])
        close(out.update[0], used[k] @ J)
        close(state["weights"], after[k])
        torch.testing.assert_close(state["weights"].sum(), torch.tensor(float(T), dtype=torch.float64))
    if T > 1:
        assert not torch.allclose(state["weights"], torch.ones(T, dtype=torch.float64))


def test_gradnorm_row_norm_is_the_norm_over_all_rows():
    """Per-row mode uses sqrt(Σ_r ‖g_rt‖²): the reference on the flattened rows gives the same weights."""
    R, T, D = 7, 3, 5
    lr = 0.05
    agg = make_aggregator("gradnorm", lr=lr)
    grads_seq, present_seq = zip(*[random_rows(R, T, D, seed=k) for k in range(5)], strict=True)
    losses_seq = loss_sequence(T, 5, seed=11)
    outs = run_sequence(agg, grads_seq, present_seq, losses_seq)
    flat = [g.transpose(0, 1).reshape(T, R * D) for g in grads_seq]
    used, after = gradnorm_reference(flat, losses_seq, alpha=1.5, lr=lr)
    for out, p, w_used, w_after in zip(outs, present_seq, used, after, strict=True):
        close(out.coefficients, torch.where(p, w_used, 0.0))
        close(out.state["weights"], w_after)


# --- dbmtl: a plain loop, LibMTL's formula where the readings agree, the properties -----------------------


def dbmtl_loop(norms_seq, losses_seq, beta: float, beta_sigma: float) -> list[list[float]]:
    """The norm-EMA reading as a plain Python loop over floats: the coefficients α_t / L_t of each step."""
    T = len(norms_seq[0])
    u = [0.0] * T
    out = []
    for k, (norms, losses) in enumerate(zip(norms_seq, losses_seq, strict=True), start=1):
        b = beta / k**beta_sigma
        shifted = [float(L) + 1e-8 for L in losses]
        u = [b * u[t] + (1 - b) * float(norms[t]) / shifted[t] for t in range(T)]
        top = max(u)
        out.append([top / u[t] / shifted[t] for t in range(T)])
    return out


@pytest.mark.parametrize("beta, beta_sigma", [(0.9, 0.0), (0.5, 0.5), (0.0, 0.0), (0.99, 2.0)])
@pytest.mark.parametrize("T, D", SHAPES)
def test_dbmtl_ema_recursion_against_a_plain_loop(T, D, beta, beta_sigma):
    agg = make_aggregator("dbmtl", beta=beta, beta_sigma=beta_sigma)
    jacobians = [jacobian(T, D, seed=k) * (1 + k) ** torch.linspace(-1, 1, T).unsqueeze(1) for k in range(6)]
    losses_seq = loss_sequence(T, 6, seed=T + 5 * D)
    expected = dbmtl_loop([J.norm(dim=1).tolist() for J in jacobians], losses_seq, beta, beta_sigma)
    state = agg.init_state(T, 1, "global")
    for k, (J, L) in enumerate(zip(jacobians, losses_seq, strict=True)):
        out = call_global(agg, J, state, info(L, step=k))
        state = out.state
        coefficients = torch.tensor(expected[k], dtype=torch.float64)
        close(out.coefficients[0], coefficients, rtol=1e-9)
        close(out.update[0], coefficients @ J, rtol=1e-9)
    assert state["steps"].tolist() == [6.0] * T


@pytest.mark.parametrize("T, D, kind", SHAPE_KINDS)
def test_dbmtl_equals_libmtl_formula_without_ema(T, D, kind):
    """β = 0: both readings agree with LibMTL's update Σ_t α_t ∇log(L_t + 1e-8), α = max‖·‖ / ‖·‖, written
    here on the full log-gradients (without the 1e-8 LibMTL adds to the norms in α's denominator: ours
    has none, α_t = 0 for a zero gradient instead)."""
    agg = make_aggregator("dbmtl", beta=0.0)
    J = jacobian(T, D, seed=3, kind=kind)
    L = loss_sequence(T, 1, seed=D)[0]
    log_grads = J / (L + 1e-8).unsqueeze(1)
    norms = log_grads.norm(dim=1)
    alpha = norms.max() / norms
    out = call_global(agg, J, agg.init_state(T, 1), info(L))
    # atol relative to the terms (each of norm max‖·‖): opposite rows with D = 1 cancel to 0 exactly
    torch.testing.assert_close(out.update[0], alpha @ log_grads, rtol=1e-9, atol=1e-12 * float(norms.max()))
    # every task's term α_t g_t / L_t has the largest log-gradient norm
    terms = out.coefficients[0].unsqueeze(1) * J
    close(terms.norm(dim=1), torch.full((T,), float(norms.max()), dtype=torch.float64), rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 5),
    D=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    log_factors=st.lists(st.floats(-3, 3), min_size=5, max_size=5),
)
def test_dbmtl_is_invariant_to_loss_scales(T, D, seed, log_factors):
    """Scaling task t's loss by a_t (so its gradient too) changes nothing: loss-scale balancing (up to the
    1e-8 floor added to the losses: relative 1e-8 / L ≤ 3e-7 for the losses ≥ 0.04 here)."""
    a = torch.tensor(log_factors[:T], dtype=torch.float64).exp()
    grads_seq, present_seq = zip(*[random_rows(4, T, D, seed + k) for k in range(3)], strict=True)
    losses_seq = [100.0 * L for L in loss_sequence(T, 3, seed)]
    agg = make_aggregator("dbmtl")
    plain = run_sequence(agg, grads_seq, present_seq, losses_seq)
    scaled = run_sequence(
        agg, [g * a.view(1, T, 1) for g in grads_seq], present_seq, [L * a for L in losses_seq]
    )
    for x, y in zip(plain, scaled, strict=True):
        close(y.update, x.update, rtol=1e-6, atol=1e-6)


# --- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSS_BASED)
def test_loss_based_methods_need_the_losses(name):
    agg = make_aggregator(name)
    J = jacobian(3, 4, seed=0)
    with pytest.raises(ValueError, match="losses"):
        call_global(agg, J, agg.init_state(3, 1), info(None))
    with pytest.raises(ValueError, match="losses"):
        call_global(agg, J, agg.init_state(3, 1), info(torch.ones(2)))


@pytest.mark.parametrize(
    "name, params",
    [
        ("uw", {"lr": -1.0}),
        ("dwa", {"temperature": 0.0}),
        ("gradnorm", {"alpha": -0.5}),
        ("famo", {"delta": "same-batch"}),
        ("famo", {"weight_decay": 2.0}),
        ("dbmtl", {"beta": 1.5}),
        ("dbmtl", {"beta_sigma": -1.0}),
    ],
)
def test_invalid_options_raise(name, params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        make_aggregator(name, **params)


@pytest.mark.parametrize("name", NAMES)
def test_modes_and_labels(name):
    agg = make_aggregator(name)
    assert agg.modes == agg.paper_modes == frozenset({"row", "global"})
    assert agg.label("row") == agg.label("global") == "paper"
    assert not agg.identity_on_single_task and not agg.fixed_weights


# --- hypothesis properties -------------------------------------------------------------------------------

case = dict(
    T=st.integers(1, 5),
    R=st.integers(1, 6),
    D=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(SCALE_EQUIVARIANT), k=st.sampled_from([1e-3, 0.37, 8.0, 1e3]), **case)
def test_scale_equivariance_over_a_sequence(name, k, T, R, D, seed):
    """grads × k at every step (same losses) → coefficients unchanged, update × k, also after the state
    has evolved (four steps, epochs 0-3)."""
    agg = make_aggregator(name)
    grads_seq, present_seq = zip(*[random_rows(R, T, D, seed + i) for i in range(4)], strict=True)
    losses_seq = loss_sequence(T, 4, seed)
    plain = run_sequence(agg, grads_seq, present_seq, losses_seq, seed=seed)
    scaled = run_sequence(agg, [g * k for g in grads_seq], present_seq, losses_seq, seed=seed)
    for x, y in zip(plain, scaled, strict=True):
        close(y.coefficients, x.coefficients, rtol=1e-9, atol=1e-12)
        close(y.update, x.update * k, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(LOSS_BASED), mode=st.sampled_from(["row", "global"]), **case)
def test_permuting_tasks_and_losses_permutes_everything(name, mode, T, R, D, seed):
    """Tasks, presence and losses permuted together → coefficients and every [T] state tensor permuted."""
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    agg = make_aggregator(name)
    grads_seq, present_seq = zip(*[random_rows(R, T, D, seed + i) for i in range(4)], strict=True)
    losses_seq = loss_sequence(T, 4, seed)
    plain = run_sequence(agg, grads_seq, present_seq, losses_seq, mode=mode)
    permuted = run_sequence(
        agg,
        [g[:, perm] for g in grads_seq],
        [p[:, perm] for p in present_seq],
        [L[perm] for L in losses_seq],
        mode=mode,
    )
    for x, y in zip(plain, permuted, strict=True):
        close(y.coefficients, x.coefficients[:, perm], rtol=1e-9, atol=1e-12)
        close(y.update, x.update, rtol=1e-9, atol=1e-12)
        for key, value in x.state.items():
            if value.ndim == 1:
                close(y.state[key], value[perm], rtol=1e-9, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(**case)
def test_rlw_weights_read_neither_gradients_nor_losses(T, R, D, seed):
    """The same generator state and presence give the same weights whatever the gradients and losses:
    permuting the tasks permutes nothing (the draw goes by index), so rlw is permutation invariant in
    distribution only (the draws are i.i.d.)."""
    agg = make_aggregator("rlw")
    g1, present = random_rows(R, T, D, seed, all_present=True)
    g2 = g1[:, torch.randperm(T, generator=torch.Generator().manual_seed(seed))] * 3.0
    a = agg.aggregate(TaskGrads.from_dense(g1, present), {}, info(None, seed=seed))
    b = agg.aggregate(TaskGrads.from_dense(g2, present), {}, info(torch.rand(T), seed=seed))
    assert torch.equal(a.coefficients, b.coefficients)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NAMES), **case)
def test_row_mode_equals_global_mode(name, T, R, D, seed):
    """Global weights: over a sequence, per-row mode gives every present (row, task) the weight that global
    mode gives the task, the same update and the same state."""
    agg = make_aggregator(name)
    grads_seq, present_seq = zip(*[random_rows(R, T, D, seed + i) for i in range(4)], strict=True)
    losses_seq = loss_sequence(T, 4, seed)
    rows = run_sequence(agg, grads_seq, present_seq, losses_seq, mode="row", seed=seed)
    flat = run_sequence(agg, grads_seq, present_seq, losses_seq, mode="global", seed=seed)
    for x, y, p in zip(rows, flat, present_seq, strict=True):
        close(x.coefficients, torch.where(p, y.coefficients, 0.0), rtol=1e-9, atol=1e-12)
        close(x.update, y.update, rtol=1e-9, atol=1e-12)
        for key, value in y.state.items():
            close(x.state[key], value, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(("uw", "dwa", "famo")), all_present=st.booleans(), **case)
def test_batched_equals_loop_over_rows(name, all_present, T, R, D, seed):
    """Where the weights read only the losses, at every step of a sequence: batched == each row alone from
    the same state; for uw always (its coefficients read only s), for dwa / famo when every row has the
    tasks of the step (their softmax and normaliser run over the tasks present in the step), and then the
    new state is the same too."""
    if name != "uw" and not all_present:
        return
    agg = make_aggregator(name)
    state = agg.init_state(T, R)
    for k, L in enumerate(loss_sequence(T, 4, seed)):
        g, p = random_rows(R, T, D, seed + k, all_present=all_present)
        step_info = info(L, epoch=k, step=k, mode="row")
        batched = agg.aggregate(TaskGrads.from_dense(g, p), state, step_info)
        for r in range(R):
            alone = agg.aggregate(TaskGrads.from_dense(g[r : r + 1], p[r : r + 1]), state, step_info)
            close(alone.coefficients[0], batched.coefficients[r], rtol=1e-12, atol=1e-14)
            close(alone.update[0], batched.update[r], rtol=1e-12, atol=1e-14)
            if all_present:
                for key, value in batched.state.items():
                    close(alone.state[key], value, rtol=1e-12, atol=1e-14)
        state = batched.state


GRADIENTS = ("zero", "duplicate", "opposite", "tiny", "huge", "one task zero")
LOSSES = ("normal", "zero", "tiny", "huge", "negative", "mixed")


def extreme_case(kind: str, R: int, T: int, D: int, seed: int, dtype):
    grads, present = random_rows(R, T, D, seed)
    if kind == "zero":
        grads.zero_()
    elif kind == "duplicate":
        grads = grads[:, :1].expand(R, T, D).clone()
    elif kind == "opposite" and T > 1:
        grads[:, 1] = -grads[:, 0]
    elif kind == "tiny":
        grads = grads * 1e-30
    elif kind == "huge":
        grads = grads * 1e28
    elif kind == "one task zero":
        grads[:, 0] = 0.0
    return torch.where(present.unsqueeze(-1), grads, 0.0).to(dtype), present


def extreme_losses(kind: str, T: int, seed: int) -> list[torch.Tensor]:
    seq = loss_sequence(T, 4, seed)
    factor = {"normal": 1.0, "zero": 0.0, "tiny": 1e-30, "huge": 1e30, "negative": -1.0}.get(kind)
    if factor is not None:
        return [L * factor for L in seq]
    mixed = torch.tensor([0.0, 1e-30, 1e30, -2.0, 1.0], dtype=torch.float64)[:T]
    return [mixed * (1 + 0.1 * k) for k in range(4)]


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    gradients=st.sampled_from(GRADIENTS),
    losses=st.sampled_from(LOSSES),
    mode=st.sampled_from(["row", "global"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    **case,
)
def test_no_nan_or_inf(name, gradients, losses, mode, dtype, T, R, D, seed):
    """Zero / duplicate / opposite / tiny / huge gradients, and zero / tiny / huge / negative losses (one
    extreme at a time: an extreme gradient with a tiny loss is an update beyond float32 for DB-MTL, whose
    update has the norm max_t ‖g_t‖ / L_t by design): finite coefficients, update and state; absent 0."""
    if gradients in ("tiny", "huge"):
        losses = "normal"
    agg = make_aggregator(name)
    cases = [extreme_case(gradients, R, T, D, seed + k, dtype) for k in range(4)]
    outs = run_sequence(
        agg, [g for g, _ in cases], [p for _, p in cases], extreme_losses(losses, T, seed), mode=mode
    )
    for out, (_, present) in zip(outs, cases, strict=True):
        assert torch.isfinite(out.update).all() and torch.isfinite(out.coefficients).all()
        view = present.any(0, keepdim=True) if mode == "global" else present
        assert (out.coefficients[~view] == 0).all()
        assert all(torch.isfinite(v).all() for v in out.state.values())


@pytest.mark.parametrize("mode", ["row", "global"])
@pytest.mark.parametrize("name", NAMES)
def test_state_keys_and_shapes_never_change_and_inputs_are_untouched(name, mode):
    T, R = 3, 5
    agg = make_aggregator(name)
    state = agg.init_state(T, 1000, mode)
    assert all(v.shape in ((T,), ()) for v in state.values())  # global weights: no per-row state
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for k in range(5):
        g, p = random_rows(R, T, 4, seed=k)
        before = {key: v.clone() for key, v in state.items()}
        out = agg.aggregate(TaskGrads.from_dense(g, p, mode), state, info(loss_sequence(T, 1, k)[0], epoch=k))
        assert all(torch.equal(state[key], before[key]) for key in state)  # the input state is not mutated
        assert {key: tuple(v.shape) for key, v in out.state.items()} == shapes
        state = out.state


@pytest.mark.parametrize("name", NAMES)
def test_empty_state_is_the_initial_state(name):
    T = 3
    agg = make_aggregator(name)
    J = jacobian(T, 6, seed=4)
    L = loss_sequence(T, 1, seed=4)[0]
    a = call_global(agg, J, {}, info(L, seed=1))
    b = call_global(agg, J, agg.init_state(T, 1, "global"), info(L, seed=1))
    assert torch.equal(a.coefficients, b.coefficients)
