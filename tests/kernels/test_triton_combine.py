"""The Triton row kernels (recmtl/kernels/triton_combine.py) against the PyTorch reference (reference.py).

Run compiled on CUDA when there is a GPU, else on CPU under TRITON_INTERPRET=1 (conftest.py). The
interpreter runs programs one at a time, so the cases are small (4-40 rows) but odd: absent tasks, rows
touched by one task, zero gradients, (row, task) pairs gathered several times in shuffled order, T = 1 and
T = 8, non-power-of-two d, rows split into several chunks of d, bfloat16 gradients, R = 0.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recmtl.aggregators import PMTRec, TaskGrads
from recmtl.kernels import reference
from recmtl.kernels.slots import RowSlots
from recmtl.train.row_adam import RowAdam
from tests.kernels.cases import BF16_UPDATE, FP32, coefficients, entries
from tests.kernels.conftest import DEVICE

pytest.importorskip("triton", reason="triton is in the test extra: pip install -e .[test]")
from recmtl.kernels import triton_combine as K  # noqa: E402

close = torch.testing.assert_close


def scaled(tolerance: dict[str, float], reference: torch.Tensor) -> dict[str, float]:
    """``tolerance`` with atol relative to the largest |value| of ``reference``."""
    top = float(reference.abs().max()) if reference.numel() else 1.0
    return {"rtol": tolerance["rtol"], "atol": tolerance["atol"] * max(top, 1.0)}


def check_pmtrec(grads: TaskGrads, method: PMTRec, epoch: int, **tuning: int) -> None:
    update, c, w = K.pmtrec_rows(RowSlots.from_grads(grads), method, epoch, **tuning)
    ref_update, ref_c, ref_w = reference.pmtrec_rows(grads, method, epoch)
    close(c, ref_c.float(), **FP32)
    close(w, ref_w.float(), **FP32)
    assert update.dtype == grads.values.dtype
    tolerance = FP32 if grads.values.dtype == torch.float32 else BF16_UPDATE
    close(update.float(), ref_update.float(), **scaled(tolerance, ref_update.float()))


@pytest.mark.parametrize(
    "n_tasks, focus, combine",
    [(2, "norm", "unit"), (5, "logit", "raw"), (8, "norm", "raw"), (3, "logit", "unit")],
)
def test_pmtrec_rows_match_the_reference(n_tasks, focus, combine):
    grads = entries(24, n_tasks, 37, seed=n_tasks, device=DEVICE)
    check_pmtrec(grads, PMTRec(alpha=1.3, tau=0.7, focus=focus, combine=combine), epoch=3)


@pytest.mark.parametrize(
    "method, epoch",
    [
        (PMTRec(), 0),  # no focusing yet
        (PMTRec(alpha=1.5), 10_000),  # α^s far beyond float range: the other tasks' share underflows to 0
        (PMTRec(alpha=1.2, focus="logit", tau=0.1), 40),
        (PMTRec(balance="uniform", combine="unit"), 5),
        (PMTRec(alpha=1.4, main_task=1), 6),
        (PMTRec(alpha=1.0, tau=100.0, combine="raw"), 2),
    ],
    ids=["epoch0", "huge-epoch", "logit-small-tau", "uniform", "main-task-1", "alpha1-raw"],
)
def test_pmtrec_options_match_the_reference(method, epoch):
    check_pmtrec(entries(16, 3, 20, seed=epoch, device=DEVICE), method, epoch)


@pytest.mark.parametrize("focus, block_r", [("norm", None), ("logit", 4)])
def test_pmtrec_rows_in_several_chunks_of_d(focus, block_r):
    """D = 70 read in chunks of 16: the norms from a first pass, then the combination chunk by chunk (and
    4 rows per program: several programs, not the interpreter's default of 32 rows)."""
    grads = entries(12, 4, 70, seed=7, device=DEVICE)
    check_pmtrec(grads, PMTRec(focus=focus), epoch=2, block_d=16, block_r=block_r)


def test_pmtrec_one_task_is_the_identity():
    grads = entries(10, 1, 33, seed=3, device=DEVICE)
    update, c, w = K.pmtrec_rows(RowSlots.from_grads(grads), PMTRec(), 4)
    assert (c == 1).all() and (w == 1).all()
    close(update, grads.summed(), **FP32)


def test_single_task_rows_pass_through_exactly():
    """A row touched by one task gets coefficient exactly 1 and weight 1, even with a zero gradient."""
    grads = entries(20, 3, 16, seed=4, duplicates=False, device=DEVICE)
    update, c, w = K.pmtrec_rows(RowSlots.from_grads(grads), PMTRec(), 7)
    lone = grads.present.sum(1) == 1
    assert lone[1] and lone.sum() >= 3
    assert torch.equal(c[lone], grads.present[lone].float())
    assert torch.equal(w[lone], grads.present[lone].float())
    assert torch.equal(update[lone], grads.summed()[lone])  # one entry of weight 1: bit for bit


def test_rows_with_no_task_get_nothing():
    g = torch.randn(5, 3, 8, device=DEVICE)
    present = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool).to(
        DEVICE
    )
    grads = TaskGrads.from_dense(g, present)
    update, c, w = K.pmtrec_rows(RowSlots.from_grads(grads), PMTRec(), 1)
    assert (c[~present.any(1)] == 0).all() and (update[~present.any(1)] == 0).all()
    check_pmtrec(grads, PMTRec(), 1)


def test_bfloat16_gradients_with_float32_math():
    grads = entries(24, 4, 48, seed=5, dtype=torch.bfloat16, device=DEVICE)
    check_pmtrec(grads, PMTRec(alpha=1.2), 3)
    check_pmtrec(grads, PMTRec(focus="logit", combine="raw"), 3)


def test_grouped_slots_need_no_order():
    """Entries already grouped by row (the compact per-(row, task) slots): the same result without a sort."""
    grads = entries(16, 3, 24, seed=6, device=DEVICE)
    order = torch.sort(grads.row_of, stable=True).indices
    values, row_of, task_of = grads.values[order], grads.row_of[order], grads.task_of[order]
    grouped = RowSlots.grouped(values, row_of, task_of, grads.row_present)
    assert grouped.order is None
    a = K.pmtrec_rows(grouped, PMTRec(), 2)
    b = K.pmtrec_rows(RowSlots.from_grads(grads), PMTRec(), 2)
    for x, y in zip(a, b, strict=True):
        close(x, y, rtol=1e-6, atol=1e-6)


def test_no_rows():
    empty = torch.zeros(0, 3, dtype=torch.bool, device=DEVICE)
    grads = TaskGrads.from_dense(torch.zeros(0, 3, 10, device=DEVICE), empty)
    slots = RowSlots.from_grads(grads)
    update, c, w = K.pmtrec_rows(slots, PMTRec(), 1)
    assert update.shape == (0, 10) and c.shape == w.shape == (0, 3)
    assert K.combine_rows(slots, torch.zeros(0, 3, device=DEVICE)).shape == (0, 10)
    storage = torch.randn(4, 3, 10, device=DEVICE)
    before = storage.clone()
    nothing = torch.zeros(0, dtype=torch.long, device=DEVICE)
    K.combine_adam_rows(
        slots, torch.zeros(0, 3, device=DEVICE), storage, nothing, reference.AdamStep(1, **ADAM)
    )
    assert torch.equal(storage, before)


# --- the generic combination: any method's coefficients ---------------------------------------------------


@pytest.mark.parametrize(
    "n_tasks, dim, block_d, dtype",
    [(3, 37, None, torch.float32), (8, 64, None, torch.float32), (4, 70, 32, torch.float32)]
    + [(5, 40, None, torch.bfloat16)],
    ids=["T3-d37", "T8-d64", "T4-d70-chunked", "bf16"],
)
def test_combine_rows_matches_the_reference(n_tasks, dim, block_d, dtype):
    grads = entries(20, n_tasks, dim, seed=dim, dtype=dtype, device=DEVICE)
    c = coefficients(20, n_tasks, grads)
    update = K.combine_rows(RowSlots.from_grads(grads), c, block_d=block_d)
    expected = reference.combine_rows(grads, c)
    tolerance = FP32 if dtype == torch.float32 else BF16_UPDATE
    assert update.dtype == dtype
    close(update.float(), expected.float(), **scaled(tolerance, expected.float()))


def test_combine_rows_with_one_coefficient_per_task():
    """Global mode: coefficients [1, T] for every row."""
    grads = entries(12, 3, 20, seed=8, device=DEVICE)
    c = torch.tensor([[0.5, -2.0, 3.0]], device=DEVICE)
    update = K.combine_rows(RowSlots.from_grads(grads), c)
    global_grads = dataclasses.replace(grads, mode="global")
    close(update, reference.combine_rows(global_grads, c), **FP32)


# --- fused with Adam --------------------------------------------------------------------------------------

ADAM = {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6}


def adams(n: int, dim: int) -> tuple[RowAdam, RowAdam]:
    weight = torch.randn(n, dim, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    a, b = RowAdam.wrap(weight, ADAM["lr"]), RowAdam.wrap(weight, ADAM["lr"])
    for opt in (a, b):
        opt.beta1, opt.beta2, opt.eps = ADAM["beta1"], ADAM["beta2"], ADAM["eps"]
    return a, b


def storage_rows(n_storage: int, n_rows: int, seed: int) -> torch.Tensor:
    """Unique storage rows, unsorted."""
    return torch.randperm(n_storage, generator=torch.Generator().manual_seed(seed))[:n_rows].to(DEVICE)


@pytest.mark.parametrize("dim, block_d", [(24, None), (40, 16)], ids=["one-chunk", "chunked"])
def test_fused_combine_adam_matches_row_adam(dim, block_d):
    """Three steps on changing row sets: the fused kernel against RowAdam.step on the reference update."""
    fused, plain = adams(50, dim)
    for step in range(3):
        grads = entries(16, 3, dim, seed=20 + step, device=DEVICE)
        c, rows = coefficients(16, 3, grads, seed=step), storage_rows(50, 16, step)
        plain.step(rows, reference.combine_rows(grads, c))
        K.combine_adam_rows(RowSlots.from_grads(grads), c, fused.storage, rows, fused.next_step(),
                            block_d=block_d)  # fmt: skip
        close(fused.storage, plain.storage, **scaled(FP32, plain.storage))


@pytest.mark.parametrize(
    "method, dim, block_d",
    [(PMTRec(alpha=1.3), 24, None), (PMTRec(focus="logit", combine="raw"), 33, None), (PMTRec(), 40, 16)],
    ids=["norm-unit", "logit-raw", "chunked"],
)
def test_fused_pmtrec_adam_matches_row_adam(method, dim, block_d):
    fused, plain = adams(40, dim)
    for step in range(2):
        grads = entries(12, 4, dim, seed=30 + step, device=DEVICE)
        rows = storage_rows(40, 12, 10 + step)
        ref_update, ref_c, ref_w = reference.pmtrec_rows(grads, method, epoch=step)
        plain.step(rows, ref_update)
        c, w = K.pmtrec_adam_rows(RowSlots.from_grads(grads), method, step, fused.storage, rows,
                                  fused.next_step(), block_d=block_d)  # fmt: skip
        close(c, ref_c.float(), **FP32)
        close(w, ref_w.float(), **FP32)
        close(fused.storage, plain.storage, **scaled(FP32, plain.storage))


def test_fused_adam_with_bfloat16_gradients():
    """bfloat16 gradients, float32 math: against RowAdam on the float32 update of the upcast gradients."""
    fused, plain = adams(30, 32)
    grads = entries(12, 3, 32, seed=40, dtype=torch.bfloat16, device=DEVICE)
    rows = storage_rows(30, 12, 3)
    plain.step(rows, reference.pmtrec_rows(reference.upcast(grads), PMTRec(), 1)[0])
    K.pmtrec_adam_rows(RowSlots.from_grads(grads), PMTRec(), 1, fused.storage, rows, fused.next_step())
    close(fused.storage, plain.storage, **scaled(FP32, plain.storage))
