"""Which back end runs the row update, in one place.

Back ends: ``"triton"`` (the kernels of :mod:`recmtl.kernels.triton_combine`: one pass per row over its
gradients, fused with Adam) and ``"torch"`` (the plain PyTorch reference, :mod:`recmtl.kernels.reference`:
an [R, D] update, then :class:`~recmtl.train.row_adam.RowAdam`'s step). :func:`resolve_backend` turns a
request into one of them: ``"auto"`` is Triton on a CUDA device when triton is importable and torch
everywhere else; an explicit ``"triton"`` that cannot be met is an error (:class:`KernelUnavailable`),
never a silent fallback; the trainer writes the back end that ran into the run's config.json
(``kernel_backend``). triton is imported only here, only when the Triton back end runs.

:func:`apply_row_update` is the one entry point of the training step: it takes the step's (lazy)
:class:`~recmtl.aggregators.Aggregation` and the row optimiser and either materialises the update and
runs the optimiser's step (torch), or runs one fused kernel (triton): the method's own per-row kernel when
it names one (:meth:`~recmtl.aggregators.Aggregator.fused_rows`, PMTRec), else the generic weighted sum +
Adam on the coefficients the method computed from its small [R, T] statistics (every method linear in
the gradients: the whole zoo). The kernels match the reference within the tolerances stated in
:mod:`recmtl.kernels.reference` (float32: rtol 1e-5), not bit for bit.
"""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType
from typing import Protocol

import torch
from torch import Tensor

from recmtl.aggregators import Aggregation, PMTRec, TaskGrads
from recmtl.errors import ConfigError
from recmtl.kernels import reference
from recmtl.kernels.slots import RowSlots

BACKENDS = ("auto", "torch", "triton")

#: The per-row ops a method may name (:class:`~recmtl.aggregators.FusedRows`): op -> the function of
#: :mod:`recmtl.kernels.triton_combine` that applies it fused with Adam (its reference is in reference.py).
FUSED_OPS = {"pmtrec": "pmtrec_adam_rows"}


class KernelUnavailable(ConfigError):
    """The Triton back end was asked for where it cannot run (no CUDA device, or triton not installed)."""


class RowOptimizer(Protocol):
    """What the row update needs of the optimiser (:class:`recmtl.train.row_adam.RowAdam`)."""

    storage: Tensor  # [N, 3, D] float32: value, exp_avg, exp_avg_sq

    def next_step(self) -> reference.AdamStep: ...

    def step(self, rows: Tensor, grad: Tensor) -> None: ...


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (checked once)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install counts as absent
        return False
    return True


def _triton() -> ModuleType:
    from recmtl.kernels import triton_combine

    return triton_combine


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``"torch"`` or ``"triton"`` for the request ``backend`` (auto | torch | triton) on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    cuda = torch.device(device).type == "cuda"
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if cuda and triton_available() else "torch"
    if not cuda:
        raise KernelUnavailable(f"the Triton kernels need a CUDA device, and this run's device is {device}")
    if not triton_available():
        raise KernelUnavailable(
            "the Triton kernels need triton, which is not installed (pip install recmtl[gpu])"
        )
    return "triton"


def combine_rows(grads: TaskGrads, coefficients: Tensor, backend: str = "auto") -> Tensor:
    """The update [R, D] ``Σ_t c[r', t] · G[r, t]`` (``coefficients`` [R', T]) on the back end resolved from
    ``backend`` (float32 math; the gradients' dtype out)."""
    if resolve_backend(backend, grads.values.device) == "torch":
        return reference.combine_rows(grads, coefficients)
    return _triton().combine_rows(RowSlots.from_grads(grads), coefficients)


def pmtrec_rows(
    grads: TaskGrads, method: PMTRec, epoch: int, backend: str = "auto"
) -> tuple[Tensor, Tensor, Tensor]:
    """PMTRec's per-row combination (row mode): the update [R, D], coefficients c and weights w [R, T]."""
    if resolve_backend(backend, grads.values.device) == "torch":
        return reference.pmtrec_rows(grads, method, epoch)
    return _triton().pmtrec_rows(RowSlots.from_grads(grads), method, epoch)


def apply_row_update(rows: Tensor, aggregation: Aggregation, optimizer: RowOptimizer, backend: str) -> None:
    """One optimiser step on the storage ``rows`` [R] (unique) with the aggregation's update, on the
    resolved ``backend`` ("torch" | "triton"). With Triton, a fused method's coefficients and logged
    weights are filled in from the kernel (:meth:`Aggregation.resolve`)."""
    fused, grads = aggregation.fused, aggregation.grads
    if backend == "torch" or grads is None or (fused is None and aggregation.coefficients is None):
        optimizer.step(rows, aggregation.update)  # (an update without coefficients: a plain Adam step)
        return
    kernels = _triton()
    slots = RowSlots.from_grads(grads)
    adam = optimizer.next_step()
    if fused is not None and aggregation.pending and fused.op in FUSED_OPS:
        fused_adam = getattr(kernels, FUSED_OPS[fused.op])
        c, w = fused_adam(slots, fused.method, fused.info.epoch, optimizer.storage, rows, adam)
        aggregation.resolve(c, w)
    else:  # the method's coefficients (computed now if they were not), then the generic kernel
        coefficients = aggregation.coefficients
        assert coefficients is not None
        kernels.combine_adam_rows(slots, coefficients, optimizer.storage, rows, adam)
