"""Pure, batched tensor helpers shared by the aggregators.

Shapes: R rows (unique touched embedding rows, or 1 in global mode), T tasks, D gradient dimension.
Every helper is a pure function of its inputs: no state, no ``.item()``, no Python branch on tensor values,
and none of them ever returns NaN for empty rows or zero gradients (0/0 is defined as 0 here).

Precision: norms and the Gram matrix are computed in :func:`compute_dtype` of the gradients (float32 for
float32 / float16 / bfloat16 input, float64 for float64 input). Reductions over D accumulate in that dtype,
which is accurate to ~1e-6 relative for float32 and is all the coefficient math needs; methods that solve
linear systems on the Gram should promote the small ``[R, T, T]`` result to float64 themselves (cheap)
rather than copying the ``[R, T, D]`` gradients to float64 (costly).
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype coefficient math runs in for gradients of ``dtype``: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` (broadcast) with ``x / 0 := 0`` for every x, 0/0 included; no NaN from finite input."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, 1.0), 0.0)


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``logits`` over the entries where ``mask`` is True, along ``dim``.

    Masked-out entries get weight exactly 0; a slice with no True entry gets all zeros (not NaN).
    ``logits`` [..., T] float, ``mask`` [..., T] bool (broadcastable) → [..., T] in ``logits.dtype``.
    """
    masked = logits.masked_fill(~mask, float("-inf"))
    top = masked.amax(dim=dim, keepdim=True)
    top = torch.where(mask.any(dim=dim, keepdim=True), top, 0.0)  # empty slice: max is -inf
    # exp only of finite values (masked entries: exp(0), then multiplied by 0): no slow inf path on CPU
    exp = torch.exp((logits - top).masked_fill(~mask, 0.0)) * mask
    return safe_div(exp, exp.sum(dim=dim, keepdim=True))


def row_norms(grads: Tensor, present: Tensor | None = None) -> Tensor:
    """Euclidean norm of every task gradient: ``grads`` [R, T, D] → [R, T] in :func:`compute_dtype`.

    One pass over ``grads`` (no copy for float32/float64 input). Entries of absent tasks (``present``
    [R, T] False) are set to 0.
    """
    dtype = compute_dtype(grads.dtype)
    norms = torch.linalg.vector_norm(grads, dim=-1, dtype=None if grads.dtype == dtype else dtype)
    if present is not None:
        norms = norms.masked_fill(~present, 0.0)
    return norms


def row_gram(grads: Tensor, present: Tensor | None = None) -> Tensor:
    """Gram matrix of every row: ``grads`` [R, T, D] → [R, T, T], ``G[r, s, t] = <g_rs, g_rt>``.

    Computed with one batched matmul in :func:`compute_dtype` (a copy only for low-precision input),
    symmetrised, with rows and columns of absent tasks zeroed.
    """
    dtype = compute_dtype(grads.dtype)
    g = grads if grads.dtype == dtype else grads.to(dtype)
    gram = torch.bmm(g, g.transpose(1, 2))
    gram = 0.5 * (gram + gram.transpose(1, 2))
    if present is not None:
        keep = present.unsqueeze(2) & present.unsqueeze(1)
        gram = gram.masked_fill(~keep, 0.0)
    return gram


def combine(coefficients: Tensor, grads: Tensor) -> Tensor:
    """The weighted sum ``update[r] = sum_t c[r, t] * grads[r, t]``: [R, T] × [R, T, D] → [R, D].

    Equal to ``einsum('rt,rtd->rd', c, grads)``, written as T fused multiply-adds into one [R, D] buffer
    (a loop over tasks, never rows): no [R, T, D] temporary, and on CPU about 4× faster than the batched
    tiny matmul einsum lowers to for per-row shapes (R = 10^4, T = 4, D = 64). Runs in ``grads.dtype``
    (coefficients cast down, gradients never copied); coefficients are clamped to the dtype's finite range
    so an extreme ratio cannot produce inf. A coefficient of exactly 0 adds exactly 0 (for finite grads),
    so e.g. ``c = (1, 0, ..., 0)`` returns the first task's gradient bit for bit.
    """
    finfo = torch.finfo(grads.dtype)
    c = coefficients.clamp(min=finfo.min, max=finfo.max).to(grads.dtype).unsqueeze(-1)  # [R, T, 1]
    out = grads[:, 0] * c[:, 0]
    for t in range(1, grads.shape[1]):
        out.addcmul_(grads[:, t], c[:, t])
    return out
