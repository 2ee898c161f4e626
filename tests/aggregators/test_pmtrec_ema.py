"""PMTRec with ``norm_source=ema`` (recmtl/aggregators/pmtrec.py, METHODS.md §4.5): the per-(row, task)
norm EMA against a plain Python loop over several steps with varying presence; what a known but absent
task gets; the single-task shortcut is off; the special cases that reduce to ``step``; option checks."""

from __future__ import annotations

import math

import pytest
import torch

from recmtl.aggregators import PMTRec, StepInfo
from recmtl.aggregators.pmtrec import update_norm_ema
from recmtl.errors import ConfigError
from recmtl.train.config import TrainConfig

N_ROWS, T, D = 7, 3, 5


def reference_step(memory: dict, rows: list[int], grads, present, epoch, *, alpha, tau, beta, combine):
    """One step in plain Python: update ``memory`` {(storage row, task): ema} and return (w, c) as lists of
    per-row lists."""
    all_w, all_c = [], []
    for r, row in enumerate(rows):
        norms = [math.sqrt(sum(float(x) ** 2 for x in grads[r, t])) for t in range(T)]
        for t in range(T):
            if present[r][t]:
                old = memory.get((row, t))
                memory[(row, t)] = norms[t] if old is None else beta * old + (1 - beta) * norms[t]
        known = [t for t in range(T) if (row, t) in memory]
        m = {t: memory[(row, t)] for t in known}
        boosted = {t: m[t] * alpha**epoch if t == 0 else m[t] for t in known}
        total = sum(boosted.values())
        logits = {t: boosted[t] / total / tau for t in known}
        z = sum(math.exp(v) for v in logits.values())
        w = [math.exp(logits[t]) / z if t in logits else 0.0 for t in range(T)]
        here = [t for t in range(T) if present[r][t]]
        if combine == "raw":
            c = [w[t] if t in here else 0.0 for t in range(T)]
        else:
            scale = sum(w[t] * norms[t] for t in here) / sum(w[t] for t in here)
            c = [w[t] * scale / norms[t] if t in here else 0.0 for t in range(T)]
        all_w.append(w)
        all_c.append(c)
    return all_w, all_c


STEPS = [  # (storage rows touched, presence per touched row)
    ([0, 1, 2, 3], [[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]]),
    ([0, 2, 4], [[0, 1, 0], [1, 0, 0], [1, 0, 1]]),  # row 0: rec absent now, known from step 0
    ([0, 1, 2, 3, 4, 5], [[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]]),
    ([1, 5, 6], [[1, 1, 1], [0, 0, 1], [1, 0, 0]]),
    ([0, 3, 6], [[1, 1, 1], [1, 0, 0], [1, 0, 1]]),
]


@pytest.mark.parametrize("combine", ["unit", "raw"])
def test_ema_matches_a_python_loop_over_steps_with_varying_presence(combine):
    agg = PMTRec(norm_source="ema", beta=0.7, alpha=1.3, tau=0.5, combine=combine)
    state = agg.init_state(T, N_ROWS)
    assert state["norm_ema"].shape == (N_ROWS, T) and state["norm_ema"].dtype == torch.float32
    assert torch.isnan(state["norm_ema"]).all()
    gen = torch.Generator().manual_seed(0)
    memory: dict = {}
    for step, (rows, presence) in enumerate(STEPS):
        present = torch.tensor(presence, dtype=torch.bool)
        scales = torch.tensor([1.0, 0.1, 3.0]).view(1, T, 1)
        grads = torch.randn(len(rows), T, D, generator=gen, dtype=torch.float64) * scales
        grads = torch.where(present.unsqueeze(-1), grads, 0.0)
        info = StepInfo(epoch=step, row_ids=torch.tensor(rows))
        out = agg(grads, present, state, info)
        state = out.state
        w_ref, c_ref = reference_step(
            memory, rows, grads, presence, step, alpha=1.3, tau=0.5, beta=0.7, combine=combine
        )
        torch.testing.assert_close(
            out.logged_weights, torch.tensor(w_ref, dtype=torch.float64), rtol=1e-5, atol=1e-7
        )
        torch.testing.assert_close(
            out.coefficients, torch.tensor(c_ref, dtype=torch.float64), rtol=1e-5, atol=1e-7
        )
        expected = torch.full((N_ROWS, T), float("nan"))
        for (row, t), value in memory.items():
            expected[row, t] = value
        torch.testing.assert_close(state["norm_ema"], expected, rtol=1e-6, atol=0.0, equal_nan=True)
    # untouched storage row 6 was seen twice; nothing else leaked into other rows
    assert not torch.isnan(state["norm_ema"][6, 0])


def test_update_norm_ema_first_sight_blend_and_absent():
    ema = torch.tensor([[float("nan"), 2.0, 4.0]])
    norms = torch.tensor([[3.0, 1.0, 9.0]])
    present = torch.tensor([[True, True, False]])
    out = update_norm_ema(ema, norms, present, 0.75)
    assert out.tolist() == [[3.0, 1.75, 4.0]]
    inf = update_norm_ema(ema, torch.tensor([[math.inf, 1.0, 1.0]]), torch.ones(1, 3, dtype=torch.bool), 0.5)
    assert math.isnan(inf[0, 0]) and inf[0, 1] == 1.5  # a non-finite norm never enters the EMA


def test_known_absent_task_gets_coefficient_zero_and_its_share_of_the_softmax():
    agg = PMTRec(norm_source="ema", beta=0.5, alpha=1.0, tau=1.0)
    state = {"norm_ema": torch.tensor([[2.0, 2.0, float("nan")]])}
    grads = torch.zeros(1, T, D)
    grads[0, 0, 0] = 2.0  # rec present with norm 2; social known (EMA 2) but absent; task 2 unknown
    present = torch.tensor([[True, False, False]])
    out = agg(grads, present, state, StepInfo(row_ids=torch.tensor([0])))
    assert out.logged_weights[0].tolist() == pytest.approx([0.5, 0.5, 0.0])  # p = (1/2, 1/2)
    assert out.coefficients[0].tolist() == pytest.approx([0.5, 0.0, 0.0])  # w_0 · S_A / n_0 = w_0
    torch.testing.assert_close(out.update, 0.5 * grads[:, 0])


def test_a_row_whose_only_known_task_is_present_keeps_its_gradient():
    agg = PMTRec(norm_source="ema", beta=0.9)
    state = agg.init_state(T, 3)
    grads = torch.randn(3, T, D, generator=torch.Generator().manual_seed(1))
    present = torch.tensor([[True, False, False], [False, True, False], [False, False, True]])
    grads = torch.where(present.unsqueeze(-1), grads, 0.0)
    for epoch in range(3):  # twice: the EMA differs from this step's norm from the second step on
        out = agg(grads * (epoch + 1), present, state, StepInfo(epoch=epoch))
        state = out.state
        torch.testing.assert_close(out.update, (grads * (epoch + 1)).sum(1))


def test_beta_zero_with_every_known_task_present_equals_step():
    gen = torch.Generator().manual_seed(2)
    grads = torch.randn(50, T, D, generator=gen)
    present = torch.ones(50, T, dtype=torch.bool)
    present[:10, 2] = False
    grads = torch.where(present.unsqueeze(-1), grads, 0.0)
    ema = PMTRec(norm_source="ema", beta=0.0, alpha=1.2, tau=0.3)
    step = PMTRec(alpha=1.2, tau=0.3)
    out = ema(grads, present, ema.init_state(T, 50), StepInfo(epoch=2))
    ref = step(grads, present, {}, StepInfo(epoch=2))
    torch.testing.assert_close(out.update, ref.update)
    torch.testing.assert_close(out.coefficients, ref.coefficients)


def test_global_mode_keeps_one_ema_row():
    agg = PMTRec(norm_source="ema", beta=0.5)
    state = agg.init_state(T, 1000, mode="global")
    assert state["norm_ema"].shape == (1, T)
    grads = torch.randn(1, T, 40, generator=torch.Generator().manual_seed(3))
    present = torch.ones(1, T, dtype=torch.bool)
    out = agg(grads, present, state, StepInfo())
    torch.testing.assert_close(out.state["norm_ema"][0], grads[0].norm(dim=-1))


def test_single_task_shortcut_is_on_for_step_and_off_for_ema():
    assert PMTRec().identity_on_single_task
    assert not PMTRec(norm_source="ema").identity_on_single_task
    assert PMTRec().init_state(T, 10) == {}


def test_ema_state_must_come_from_init_state():
    agg = PMTRec(norm_source="ema")
    with pytest.raises(ValueError, match="norm_ema"):
        agg(torch.ones(2, T, D), torch.ones(2, T, dtype=torch.bool), {}, StepInfo())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"norm_source": "bogus"}, "pmtrec: norm_source must be one of step, ema; found 'bogus'"),
        ({"beta": 1.5}, r"pmtrec: beta must be in \[0, 1\], found 1.5"),
        ({"beta": -0.1}, r"pmtrec: beta must be in \[0, 1\], found -0.1"),
    ],
)
def test_norm_source_options_are_validated(options, message):
    with pytest.raises(ConfigError, match=message):
        PMTRec(**options)
    with pytest.raises(ConfigError, match="beta|norm_source"):
        TrainConfig(method={"name": "pmtrec", **options})


def test_norm_source_defaults_and_command_line_values():
    assert PMTRec().norm_source == "step" and PMTRec().beta == 0.9
    config = TrainConfig(method={"name": "pmtrec", "norm_source": "ema", "beta": "0.5"})
    assert config.method.norm_source == "ema" and config.method.beta == 0.5


def test_compact_row_norms_equal_the_dense_norms_with_repeated_entries():
    from recmtl.aggregators.grads import TaskGrads
    from recmtl.aggregators.pmtrec import _all_row_norms

    gen = torch.Generator().manual_seed(4)
    n, rows = 300, 40
    row_of = torch.randint(rows, (n,), generator=gen)
    task_of = torch.randint(T, (n,), generator=gen)
    values = torch.randn(n, D, generator=gen)
    grads = TaskGrads.from_entries(values, row_of, task_of, rows, T)
    fresh = TaskGrads.from_entries(values, row_of, task_of, rows, T)
    torch.testing.assert_close(_all_row_norms(grads), fresh.norms())
    assert "dense" not in grads.__dict__  # (computed without the dense view)
