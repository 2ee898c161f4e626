"""Kernels of the row update: the per-row combination of the task gradients, fused with row-sparse Adam.

- :mod:`~recmtl.kernels.reference`: plain PyTorch, the specification every kernel is tested against;
- :mod:`~recmtl.kernels.slots`: the compact layout the kernels read (the gathered (row, task) gradients
  grouped by row);
- :mod:`~recmtl.kernels.triton_combine`: the Triton kernels (imported only when used: triton is an optional
  dependency, ``pip install recmtl[gpu]``);
- :mod:`~recmtl.kernels.dispatch`: which back end runs (Triton on CUDA when triton is importable, the
  PyTorch reference everywhere else; an explicit Triton request that cannot be met is an error) and the
  single row-update entry point the training step calls, :func:`apply_row_update`.
"""

from __future__ import annotations

from recmtl.kernels.dispatch import (
    BACKENDS,
    KernelUnavailable,
    apply_row_update,
    combine_rows,
    pmtrec_rows,
    resolve_backend,
    triton_available,
)

__all__ = [
    "BACKENDS",
    "KernelUnavailable",
    "apply_row_update",
    "combine_rows",
    "pmtrec_rows",
    "resolve_backend",
    "triton_available",
]
