"""Adam with sparse row updates for the shared embedding rows (METHODS.md §4, step 4).

Only the rows touched in a step have their moments and values updated (the "lazy" Adam of
``torch.optim.SparseAdam``); bias correction uses the global step count. Pure tensor ops, no autograd; the
moments are plain tensors so checkpoints can hold them. Rows are unique, so every update is a gather and a
copy back (``index_copy_``), which on CPU is several times faster than an accumulating ``index_add_``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RowAdam:
    """First/second moments ``m``, ``v`` [N, D] of a [N, D] parameter, and the step count."""

    lr: float
    m: Tensor
    v: Tensor
    steps: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def like(cls, weight: Tensor, lr: float) -> RowAdam:
        return cls(lr, torch.zeros_like(weight), torch.zeros_like(weight))

    @torch.no_grad()
    def step(self, weight: Tensor, rows: Tensor, grad: Tensor) -> None:
        """Update ``weight[rows]`` in place with ``grad`` [R, D]; ``rows`` [R] must be unique."""
        self.steps += 1
        t = self.steps
        m = self.m.index_select(0, rows).mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        v = self.v.index_select(0, rows).mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        denom = v.div_(1 - self.beta2**t).sqrt_().add_(self.eps)
        delta = m.div_(denom).mul_(self.lr / (1 - self.beta1**t))
        weight.index_copy_(0, rows, weight.index_select(0, rows).sub_(delta))
