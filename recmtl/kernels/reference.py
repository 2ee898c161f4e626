"""Plain PyTorch reference of every kernel op: the specification the Triton kernels are tested against.

Each op is written with the library's own implementation, so there is one definition of the math:

- :func:`combine_rows`: ``update[r] = Σ_t c[r, t] · G[r, t]`` (:meth:`TaskGrads.combine`);
- :func:`pmtrec_rows`: PMTRec's whole per-row combination (norms, masking of absent tasks, Task Focusing in
  both ``focus`` readings, the tempered softmax or the uniform ablation, both ``combine`` readings, the
  single-task identity): :class:`~recmtl.aggregators.PMTRec`'s own ``aggregate`` (METHODS.md §4);
- :func:`row_adam_`: one row-sparse Adam step on an interleaved [N, 3, D] value / exp_avg / exp_avg_sq
  storage (what :class:`~recmtl.train.row_adam.RowAdam` runs);
- the fused ops are their composition: ``row_adam_(storage, rows, combine_rows(...))``.

Precision: the math runs in float32 (:func:`~recmtl.aggregators._math.compute_dtype`) whatever the
gradients' dtype: bfloat16 / float16 gradients are upcast first (:func:`upcast`), and the update is
returned in the gradients' dtype. The Triton kernels read low-precision gradients and do all arithmetic in
float32, so they match this reference computed on the upcast inputs. Tolerances the tests hold them to
(tests/kernels): float32 gradients rtol 1e-5 (atol 1e-6 · the largest |value|) on the update, the
coefficients, the weights and the Adam-updated storage; bfloat16 gradients: coefficients and weights the
same (they are computed in float32 from the same upcast sums), update rtol 1e-2 (one bfloat16 rounding
of the float32 result, which both sides share up to ±1 ulp). The differences come only from summation
order (per-task sums then the weighted sum, instead of one scaled scatter) and from fused multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recmtl.aggregators import PMTRec, StepInfo, TaskGrads
from recmtl.aggregators._math import compute_dtype


def upcast(grads: TaskGrads) -> TaskGrads:
    """``grads`` with its values in :func:`compute_dtype` (float32 for bfloat16 / float16); same entries."""
    dtype = compute_dtype(grads.values.dtype)
    if grads.values.dtype == dtype:
        return grads
    return TaskGrads(grads.values.to(dtype), grads.row_of, grads.task_of, grads.row_present, grads.mode)


@torch.no_grad()
def combine_rows(grads: TaskGrads, coefficients: Tensor) -> Tensor:
    """The update [R, D] in the gradients' dtype: ``Σ_t c[r', t] · G[r, t]`` (``coefficients`` [R', T],
    R' = 1 in global mode), computed in float32 or wider."""
    return upcast(grads).combine(coefficients.to(compute_dtype(grads.values.dtype))).to(grads.values.dtype)


@torch.no_grad()
def pmtrec_rows(grads: TaskGrads, method: PMTRec, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
    """PMTRec's per-row combination of ``grads`` (row mode) at epoch ``epoch``: the update [R, D] in the
    gradients' dtype, the coefficients c [R, T] and the softmax weights w [R, T] (float32 or wider)."""
    out = method.aggregate(upcast(grads), {}, StepInfo(epoch=epoch))
    assert out.coefficients is not None and out.logged_weights is not None
    return out.update.to(grads.values.dtype), out.coefficients, out.logged_weights


@dataclass(frozen=True)
class AdamStep:
    """The scalars of one Adam step (made by :meth:`recmtl.train.row_adam.RowAdam.next_step`): ``step`` is
    the 1-based step count of the bias correction, ``lr`` the learning rate; eps is added after the bias
    correction, as ``torch.optim.Adam`` does."""

    step: int
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@torch.no_grad()
def row_adam_(storage: Tensor, rows: Tensor, grad: Tensor, adam: AdamStep) -> None:
    """One Adam step ``adam``, in place, on the unique storage ``rows`` [R] of ``storage`` [N, 3, D] (value,
    exp_avg, exp_avg_sq) with gradient ``grad`` [R, D]."""
    beta1, beta2, step = adam.beta1, adam.beta2, adam.step
    block = storage.index_select(0, rows)  # [R, 3, D]
    value, m, v = block.unbind(1)
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (v / (1 - beta2**step)).sqrt_().add_(adam.eps)
    value.addcdiv_(m, denom, value=-adam.lr / (1 - beta1**step))
    storage.index_copy_(0, rows, block)
