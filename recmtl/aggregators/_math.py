"""Pure, batched tensor helpers shared by the aggregators.

Shapes: R rows (unique touched embedding rows, or 1 in global mode), T tasks, D gradient dimension, N gathered
(row, task) entries.
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


def norms(vectors: Tensor) -> Tensor:
    """Euclidean norm over the last dimension: ``vectors`` [..., D] → [...] in :func:`compute_dtype`.

    One pass over the input (no copy for float32/float64 input).
    """
    dtype = compute_dtype(vectors.dtype)
    return torch.linalg.vector_norm(vectors, dim=-1, dtype=None if vectors.dtype == dtype else dtype)


def gram(grads: Tensor, present: Tensor | None = None) -> Tensor:
    """Gram matrix of every row: ``grads`` [R, T, D] → [R, T, T], ``G[r, s, t] = <g_rs, g_rt>``.

    Computed with one batched matmul in :func:`compute_dtype` (a copy only for low-precision input),
    symmetrised, with rows and columns of absent tasks (``present`` [R, T] False) zeroed.
    """
    dtype = compute_dtype(grads.dtype)
    g = grads if grads.dtype == dtype else grads.to(dtype)
    out = torch.bmm(g, g.transpose(1, 2))
    out = 0.5 * (out + out.transpose(1, 2))
    if present is not None:
        keep = present.unsqueeze(2) & present.unsqueeze(1)
        out = out.masked_fill(~keep, 0.0)
    return out


def weighted_scatter(values: Tensor, weights: Tensor | None, index: Tensor, n_out: int) -> Tensor:
    """The weighted sum ``out[index[n]] += weights[n] · values[n]``: [N, D] → [n_out, D] in ``values.dtype``.

    This is every aggregation's combination step, ``update[r] = Σ_t c[r, t] · G[r, t]``, applied to the
    gathered (row, task) entries (``weights[n]`` = the coefficient of entry n's row and task): one scaled
    scatter, never an [R, T, D] temporary. ``weights`` None sums unweighted. Weights are cast to
    ``values.dtype`` after clamping to its finite range, so an extreme ratio cannot produce inf; a weight of
    exactly 0 adds exactly 0 (for finite values), and a row with one entry of weight 1 gets that entry bit
    for bit.
    """
    if weights is not None:
        finfo = torch.finfo(values.dtype)
        values = values * weights.clamp(min=finfo.min, max=finfo.max).to(values.dtype).unsqueeze(1)
    return values.new_zeros(n_out, values.shape[1]).index_add_(0, index, values)
