"""Triton kernels of the row update: one pass over each touched row's gradients.

A program owns ``BLOCK_R`` rows of a :class:`~recmtl.kernels.slots.RowSlots` (1 or 2 on a GPU, see
``_blocks``). It reads each row's entries (gathered (row, task) gradients, duplicates included) once, a
few at a time so that their loads are in flight together, summing them per task in float32 registers
(``[BLOCK_R, T_PAD, BLOCK_D]``, T ≤ 8 tasks), and then, by compile-time switches of the one kernel:

- **coefficients**: loads the method's coefficients ``c[r, :]`` (any method linear in the gradients, computed
  on the small [R, T] statistics: the generic path), or computes PMTRec's (:mod:`recmtl.aggregators.pmtrec`)
  in registers: the norms, masking of absent tasks, Task Focusing (``focus`` norm or logit), the tempered
  softmax (or the uniform ablation), ``combine`` unit or raw, and the single-task identity, and writes c and
  the softmax weights w [R, T];
- **output**: writes ``u = Σ_t c_t G_t`` [D] in the gradients' dtype, or applies Adam to the row's
  interleaved value / exp_avg / exp_avg_sq in the optimiser storage [N, 3, D] (reading and writing each
  once; the update never goes to memory).

Gradients may be float32, bfloat16 or float16; all arithmetic is float32 (IEEE division and square root,
``div_rn`` / ``sqrt_rn``). Any D: a row is read in chunks of ``BLOCK_D``; when D > BLOCK_D, PMTRec needs
the norms before combining, so its gradients are then read twice (a first pass for the norms).

This module imports triton: :mod:`recmtl.kernels.dispatch` imports it only when the Triton back end runs.
On a machine without a GPU the kernels run under ``TRITON_INTERPRET=1`` on CPU tensors (tests/kernels):
the variable must be set before this module is first imported (``triton.jit`` reads it then).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from recmtl.aggregators import PMTRec
from recmtl.kernels.reference import AdamStep
from recmtl.kernels.slots import RowSlots

MAX_TASKS = 8
#: Widest chunk of a row a program holds (per task, in float32 registers).
MAX_BLOCK_D = 256
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _safe_div(num, den):
    """num / den with x / 0 := 0 (IEEE division)."""
    nonzero = den != 0.0
    return tl.where(nonzero, tl.div_rn(num, tl.where(nonzero, den, 1.0)), 0.0)


@triton.jit
def _task_sums(
    values,
    stride_v,
    order,
    task_of,
    start,
    count,
    n_iter,
    d0,
    dim,
    HAS_ORDER: tl.constexpr,
    T_PAD: tl.constexpr,
    E_STEP: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """[BLOCK_R, T_PAD, BLOCK_D] float32: per row and task, the sum of its entries on columns d0.. (row i's
    entries are start[i] .. start[i] + count[i] - 1 of the layout; n_iter = the largest count). Entries are
    taken E_STEP at a time, unrolled, so that their loads are in flight together."""
    tasks = tl.arange(0, T_PAD)
    cols = d0 + tl.arange(0, BLOCK_D)
    inside = cols < dim
    acc = tl.zeros([BLOCK_R, T_PAD, BLOCK_D], dtype=tl.float32)
    for k0 in range(0, n_iter, E_STEP):
        for e in tl.static_range(E_STEP):
            ok = k0 + e < count
            if HAS_ORDER:
                entry = tl.load(order + start + k0 + e, mask=ok, other=0)
            else:
                entry = start + k0 + e
            task = tl.load(task_of + entry, mask=ok, other=-1)
            where = entry.to(tl.int64)[:, None] * stride_v + cols[None, :]
            g = tl.load(values + where, mask=ok[:, None] & inside[None, :], other=0.0).to(tl.float32)
            acc += tl.where((tasks[None, :] == task[:, None])[:, :, None], g[:, None, :], 0.0)
    return acc


@triton.jit
def _pmtrec_weights(
    sq,
    present,
    main_task,
    shrink,
    tau,
    boost,
    FOCUS_LOGIT: tl.constexpr,
    UNIT: tl.constexpr,
    UNIFORM: tl.constexpr,
    T_PAD: tl.constexpr,
):
    """PMTRec's coefficients c and weights w [BLOCK_R, T_PAD] from the squared norms ``sq`` and the mask."""
    is_main = (tl.arange(0, T_PAD) == main_task)[None, :]
    presf = present.to(tl.float32)
    count = tl.sum(presf, axis=1)[:, None]
    norms = tl.where(present, tl.sqrt_rn(sq), 0.0)
    if UNIFORM:  # the ablation without Gradient Magnitude Balancing
        w = _safe_div(presf, count)
    else:
        if FOCUS_LOGIT:  # p from the plain norms, s·ln α added to the main task's logit
            p = _safe_div(norms, tl.sum(norms, axis=1)[:, None])
            logits = tl.div_rn(p, tau) + tl.where(is_main, boost, 0.0)
        else:  # the main norm boosted by α^s: the others scaled by e^{-s ln α} (when the main norm is > 0)
            main_norm = tl.sum(tl.where(is_main, norms, 0.0), axis=1)[:, None]
            factor = tl.where(main_norm > 0.0, shrink, 1.0)
            scaled = tl.where(is_main, norms, norms * factor)
            logits = tl.div_rn(_safe_div(scaled, tl.sum(scaled, axis=1)[:, None]), tau)
        top = tl.max(tl.where(present, logits, float("-inf")), axis=1)[:, None]
        top = tl.where(count > 0.0, top, 0.0)
        ex = tl.where(present, tl.exp(tl.where(present, logits - top, 0.0)), 0.0)
        w = _safe_div(ex, tl.sum(ex, axis=1)[:, None])
    if UNIT:  # c_t = w_t · (Σ_k w_k n_k) / n_t, clamped to the float32 range
        scale = tl.sum(w * norms, axis=1)[:, None]
        c = tl.minimum(_safe_div(w * scale, norms), 3.4028234663852886e38)
    else:
        c = w
    single = count == 1.0  # a lone task passes through unchanged
    c = tl.where(single, presf, c)
    w = tl.where(single, presf, w)
    return c, w


@triton.jit
def _emit(
    acc,
    c,
    rr,
    valid,
    d0,
    dim,
    out,
    stride_o,
    storage,
    stride_s0,
    stride_s1,
    rows,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    bias2,
    eps,
    step_size,
    ADAM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """The rows' update ``Σ_t c_t acc_t`` on columns d0..d0+BLOCK_D: stored, or applied by Adam."""
    cols = d0 + tl.arange(0, BLOCK_D)
    mask = valid[:, None] & (cols < dim)[None, :]
    u = tl.sum(c[:, :, None] * acc, axis=1)
    if ADAM:
        srow = tl.load(rows + rr, mask=valid, other=0).to(tl.int64)
        base = storage + srow[:, None] * stride_s0 + cols[None, :]
        value = tl.load(base, mask=mask, other=0.0)
        m = tl.load(base + stride_s1, mask=mask, other=0.0)
        v = tl.load(base + 2 * stride_s1, mask=mask, other=0.0)
        m = m * beta1 + u * one_minus_beta1
        v = v * beta2 + (u * u) * one_minus_beta2
        denom = tl.sqrt_rn(tl.div_rn(v, bias2)) + eps
        value = value + step_size * tl.div_rn(m, denom)
        tl.store(base, value, mask=mask)
        tl.store(base + stride_s1, m, mask=mask)
        tl.store(base + 2 * stride_s1, v, mask=mask)
    else:
        where = rr.to(tl.int64)[:, None] * stride_o + cols[None, :]
        tl.store(out + where, u.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _rows_kernel(
    values,
    stride_v,
    order,
    task_of,
    row_ptr,
    present,
    coef,
    stride_c,
    weights,
    out,
    stride_o,
    storage,
    stride_s0,
    stride_s1,
    rows,
    n_rows,
    n_tasks,
    dim,
    main_task,
    shrink,
    tau,
    boost,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    bias2,
    eps,
    step_size,
    HAS_ORDER: tl.constexpr,
    PMTREC: tl.constexpr,
    FOCUS_LOGIT: tl.constexpr,
    UNIT: tl.constexpr,
    UNIFORM: tl.constexpr,
    ADAM: tl.constexpr,
    T_PAD: tl.constexpr,
    E_STEP: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
):
    rr = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # this program's rows
    valid = rr < n_rows
    start = tl.load(row_ptr + rr, mask=valid, other=0)
    count = tl.load(row_ptr + rr + 1, mask=valid, other=0) - start
    n_iter = tl.max(count, axis=0)
    tasks = tl.arange(0, T_PAD)
    cell = valid[:, None] & (tasks < n_tasks)[None, :]
    if PMTREC:
        at = rr[:, None] * n_tasks + tasks[None, :]
        mask = tl.load(present + at, mask=cell, other=0) != 0
        if ONE_CHUNK:  # the whole row in registers: one read
            acc = _task_sums(values, stride_v, order, task_of, start, count, n_iter, 0, dim, HAS_ORDER, T_PAD,
                             E_STEP, BLOCK_R, BLOCK_D)  # fmt: skip
            sq = tl.sum(acc * acc, axis=2)
        else:  # a first pass for the norms
            sq = tl.zeros([BLOCK_R, T_PAD], dtype=tl.float32)
            for d0 in range(0, dim, BLOCK_D):
                part = _task_sums(values, stride_v, order, task_of, start, count, n_iter, d0, dim, HAS_ORDER,
                                  T_PAD, E_STEP, BLOCK_R, BLOCK_D)  # fmt: skip
                sq += tl.sum(part * part, axis=2)
        c, w = _pmtrec_weights(sq, mask, main_task, shrink, tau, boost, FOCUS_LOGIT, UNIT, UNIFORM, T_PAD)
        tl.store(coef + at, c, mask=cell)
        tl.store(weights + at, w, mask=cell)
    else:
        c = tl.load(coef + rr[:, None] * stride_c + tasks[None, :], mask=cell, other=0.0)
    if PMTREC and ONE_CHUNK:
        _emit(acc, c, rr, valid, 0, dim, out, stride_o, storage, stride_s0, stride_s1, rows, beta1,
              one_minus_beta1, beta2, one_minus_beta2, bias2, eps, step_size, ADAM, BLOCK_D)  # fmt: skip
    else:
        for d0 in range(0, dim, BLOCK_D):
            part = _task_sums(values, stride_v, order, task_of, start, count, n_iter, d0, dim, HAS_ORDER,
                              T_PAD, E_STEP, BLOCK_R, BLOCK_D)  # fmt: skip
            _emit(part, c, rr, valid, d0, dim, out, stride_o, storage, stride_s0, stride_s1, rows, beta1,
                  one_minus_beta1, beta2, one_minus_beta2, bias2, eps, step_size, ADAM, BLOCK_D)  # fmt: skip


# --- launchers --------------------------------------------------------------------------------------------


def _interpreting() -> bool:
    return bool(triton.knobs.runtime.interpret)


def _blocks(
    dim: int,
    block_d: int | None = None,
    block_r: int | None = None,
    num_warps: int | None = None,
    *,
    interpreting: bool | None = None,
) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, num_warps). A row chunk of at most MAX_BLOCK_D columns and 128 columns per warp:
    each thread loads 4 consecutive float32 (16 bytes) per entry, and at d = 64 a warp holds two rows.
    Compiled for sm_90 this keeps the kernel within 46-120 registers, with no spills, for T <= 8 and d in
    64..256 (tests/kernels/test_compile.py); the figures on a GPU are pending (docs/performance.md), and
    ``block_r`` / ``block_d`` / ``num_warps`` override the choice. Under the interpreter, 32 rows per
    program: it runs programs one by one, so fewer, larger blocks are faster."""
    for name, value in (("block_d", block_d), ("block_r", block_r)):
        if value is not None and (value < 1 or value & (value - 1)):
            raise ValueError(f"{name} must be a power of two, got {value}")
    bd = block_d or min(triton.next_power_of_2(max(dim, 1)), MAX_BLOCK_D)
    interpreting = _interpreting() if interpreting is None else interpreting
    br = block_r or (32 if interpreting else max(1, 128 // bd))
    return br, bd, num_warps or max(1, min(4, br * bd // 128))


def _check(slots: RowSlots) -> None:
    if slots.values.dtype not in DTYPES:
        raise ValueError(f"the row kernels take float32, bfloat16 or float16, got {slots.values.dtype}")
    if not 1 <= slots.n_tasks <= MAX_TASKS:
        raise ValueError(f"the row kernels take 1 to {MAX_TASKS} tasks, got {slots.n_tasks}")
    if slots.values.stride(-1) != 1:
        raise ValueError("the gradients must be contiguous along D")


def _adam_args(storage: Tensor | None, rows: Tensor | None, adam: AdamStep | None) -> list[float]:
    if adam is None:
        return [0.0] * 7
    if storage is None or storage.dtype != torch.float32 or storage.stride(-1) != 1 or storage.ndim != 3:
        raise ValueError("the Adam storage must be a float32 [N, 3, D] tensor, contiguous along D")
    if rows is None:
        raise ValueError("the Adam update needs the storage rows")
    step, lr, beta1, beta2, eps = adam.step, adam.lr, adam.beta1, adam.beta2, adam.eps
    # the float64 scalars RowAdam computes, each rounded once to float32 at the call, as torch does
    return [beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta2**step, eps, -lr / (1 - beta1**step)]


def _launch(
    slots: RowSlots,
    *,
    coefficients: Tensor | None = None,
    method: PMTRec | None = None,
    epoch: int = 0,
    storage: Tensor | None = None,
    rows: Tensor | None = None,
    adam: AdamStep | None = None,
    block_d: int | None = None,
    block_r: int | None = None,
    num_warps: int | None = None,
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """Run the kernel over every row of ``slots``; returns (update or None, coefficients, weights or None)."""
    _check(slots)
    n_rows, n_tasks, dim = slots.n_rows, slots.n_tasks, slots.dim
    device = slots.values.device
    br, bd, warps = _blocks(dim, block_d, block_r, num_warps)
    f32 = torch.float32
    weights = None
    if method is not None:
        coef = torch.empty(n_rows, n_tasks, dtype=f32, device=device)
        weights = torch.empty(n_rows, n_tasks, dtype=f32, device=device)
        stride_c = n_tasks
        boost = epoch * math.log(method.alpha)  # s · ln α; e^{-s ln α} underflows to 0 for huge s
        pmtrec = [int(method.main_task), math.exp(-boost), float(method.tau), boost]
    else:
        assert coefficients is not None
        if coefficients.shape[1] != n_tasks or coefficients.shape[0] not in (1, n_rows):
            found = tuple(coefficients.shape)
            raise ValueError(f"coefficients {found}: expected [{n_rows} or 1, {n_tasks}]")
        # clamped to the float32 range, as TaskGrads.combine clamps to the gradients' range
        coef = coefficients.clamp(-FLOAT32_MAX, FLOAT32_MAX).to(f32).contiguous()
        stride_c = 0 if coef.shape[0] == 1 else n_tasks  # [1, T] (global mode): the same for every row
        pmtrec = [0, 1.0, 1.0, 0.0]
    scalars = _adam_args(storage, rows, adam)
    out = None if adam is not None else torch.empty(n_rows, dim, dtype=slots.values.dtype, device=device)
    if n_rows == 0:
        return out, coef, weights
    spare = slots.row_ptr  # passed for the pointers a variant does not use
    _rows_kernel[(triton.cdiv(n_rows, br),)](
        slots.values,
        slots.values.stride(0),
        slots.order if slots.order is not None else spare,
        slots.task_of,
        slots.row_ptr,
        slots.present.view(torch.uint8),  # (bytes: bool pointers differ across back ends)
        coef,
        stride_c,
        weights if weights is not None else coef,
        out if out is not None else coef,
        dim,
        storage if storage is not None and adam is not None else coef,
        storage.stride(0) if storage is not None and adam is not None else 0,
        storage.stride(1) if storage is not None and adam is not None else 0,
        rows if rows is not None and adam is not None else spare,
        n_rows,
        n_tasks,
        dim,
        *pmtrec,
        *scalars,
        HAS_ORDER=slots.order is not None,
        PMTREC=method is not None,
        FOCUS_LOGIT=method is not None and method.focus == "logit",
        UNIT=method is not None and method.combine == "unit",
        UNIFORM=method is not None and method.balance == "uniform",
        ADAM=adam is not None,
        T_PAD=triton.next_power_of_2(n_tasks),
        E_STEP=min(triton.next_power_of_2(n_tasks), 4),
        BLOCK_R=br,
        BLOCK_D=bd,
        ONE_CHUNK=dim <= bd,
        num_warps=warps,
    )
    return out, coef, weights


def combine_rows(slots: RowSlots, coefficients: Tensor, **tuning: int) -> Tensor:
    """The update [R, D] (in the gradients' dtype) ``Σ_t c[r, t] · G[r, t]`` for ``coefficients`` [R, T]
    (or [1, T]: the same for every row, global mode). ``tuning``: block_d, block_r, num_warps."""
    out, _, _ = _launch(slots, coefficients=coefficients, **tuning)
    assert out is not None
    return out


def pmtrec_rows(slots: RowSlots, method: PMTRec, epoch: int, **tuning: int) -> tuple[Tensor, Tensor, Tensor]:
    """PMTRec's per-row combination at epoch ``epoch``: the update [R, D] (gradients' dtype), the coefficients
    c and the softmax weights w [R, T] (float32)."""
    out, coef, weights = _launch(slots, method=method, epoch=epoch, **tuning)
    assert out is not None and weights is not None
    return out, coef, weights


def combine_adam_rows(
    slots: RowSlots,
    coefficients: Tensor,
    storage: Tensor,
    rows: Tensor,
    adam: AdamStep,
    **tuning: int,
) -> None:
    """The Adam step ``adam`` with the update ``Σ_t c[r, t] · G[r, t]`` on the unique storage ``rows`` [R]
    of ``storage`` [N, 3, D] (value, exp_avg, exp_avg_sq), in place, in one pass."""
    _launch(slots, coefficients=coefficients, storage=storage, rows=rows, adam=adam, **tuning)


def pmtrec_adam_rows(
    slots: RowSlots,
    method: PMTRec,
    epoch: int,
    storage: Tensor,
    rows: Tensor,
    adam: AdamStep,
    **tuning: int,
) -> tuple[Tensor, Tensor]:
    """The Adam step ``adam`` with PMTRec's per-row combination as the update, in place, in one pass;
    returns c and w [R, T]."""
    _, coef, weights = _launch(
        slots, method=method, epoch=epoch, storage=storage, rows=rows, adam=adam, **tuning
    )
    assert weights is not None
    return coef, weights
