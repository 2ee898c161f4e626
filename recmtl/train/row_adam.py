"""Adam with sparse row updates for the shared embedding rows (METHODS.md §4, step 4).

Only the rows touched in a step have their moments and values updated (the "lazy" Adam of
``torch.optim.SparseAdam``); bias correction uses the global step count. ``eps`` is added after the bias
correction, as ``torch.optim.Adam`` does (``SparseAdam`` adds it before, an effective eps of
``eps / sqrt(1 - beta2^t)``; the two agree once eps is negligible, see tests/train/test_row_adam.py).

Layout: the parameter and its two moments are interleaved in one storage ``[N, 3, D]`` (value, exp_avg,
exp_avg_sq), as in fused-optimizer embedding tables (FBGEMM's table-batched embeddings). A step then reads
and writes each touched row's 3·D floats in one gather and one scatter instead of six separate passes —
on large tables the step is bound by these random row accesses. The model's weight is the strided view
``storage[:, 0]``; rows are unique, so the write-back is a plain ``index_copy_``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from recmtl.kernels.reference import AdamStep, row_adam_


@dataclass
class RowAdam:
    """Parameter + Adam moments of an [N, D] table in one [N, 3, D] storage, and the step count."""

    lr: float
    storage: Tensor  # [N, 3, D]: value, exp_avg, exp_avg_sq
    steps: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def wrap(cls, weight: Tensor, lr: float) -> RowAdam:
        """Take ownership of ``weight`` [N, D]: copy it into a fresh storage with zero moments."""
        storage = weight.new_zeros(weight.shape[0], 3, weight.shape[1])
        storage[:, 0] = weight
        return cls(lr, storage)

    @property
    def param(self) -> Tensor:
        """[N, D] strided view of the parameter values (the model's weight)."""
        return self.storage[:, 0]

    @property
    def exp_avg(self) -> Tensor:
        return self.storage[:, 1]

    @property
    def exp_avg_sq(self) -> Tensor:
        return self.storage[:, 2]

    def next_step(self) -> AdamStep:
        """Count one more step and return its scalars (for a kernel that applies the step itself)."""
        self.steps += 1
        return AdamStep(self.steps, self.lr, self.beta1, self.beta2, self.eps)

    def step(self, rows: Tensor, grad: Tensor) -> None:
        """Apply one Adam step to the unique ``rows`` [R] with gradient ``grad`` [R, D] (the math:
        :func:`recmtl.kernels.reference.row_adam_`; the fused kernels apply the same step)."""
        row_adam_(self.storage, rows, grad, self.next_step())
