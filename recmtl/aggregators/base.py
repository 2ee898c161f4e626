"""The aggregation interface every gradient-combination method implements (METHODS.md §3).

Per training step the trainer builds, for each unique touched parameter row r and task t, the task
gradient ``grads[r, t, :]`` (duplicates already summed) and the mask ``present[r, t]`` of tasks that touch
the row. An :class:`Aggregator` maps ``(grads [R, T, D], present [R, T], state, info)`` to an
:class:`Aggregation`: the combined update ``[R, D]``, the coefficients ``[R, T]`` when the method is
linear in the gradients (so the trainer can log per-task weights), the new state and optional extras.

- per-row mode ("row"): R = number of unique touched rows, D = embedding dim;
- global mode ("global"): R = 1 and D = all touched rows of a task flattened: the same code path.

Absent tasks (``present`` False) are excluded from every norm, softmax and divisor. Their gradient
entries must be finite (the trainer fills zeros); they are multiplied by a coefficient of exactly 0,
so their values never change the output, but an inf/NaN there would (0 · inf = NaN) — we do not pay a
masked copy of ``grads`` to guard against that.

Most methods are "coefficients from the norms / Gram matrix, then a weighted sum":
:class:`WeightedAggregator` computes the statistics a method declares it ``needs`` and the combination
``update = einsum('rt,rtd->rd', c, grads)`` (``_math.combine``); a subclass writes only a pure, batched
:meth:`WeightedAggregator.coefficients`. Everything runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from recmtl.aggregators._math import combine, compute_dtype, row_gram, row_norms
from recmtl.errors import ConfigError

MODES = frozenset({"row", "global"})


@dataclass(frozen=True)
class StepInfo:
    """What a step tells the aggregator besides the gradients."""

    epoch: int = 0  # 0-based epoch index s
    step: int = 0
    generator: torch.Generator | None = None  # the only source of randomness an aggregator may use
    losses: Tensor | None = None  # [T] task losses of this step (for loss-weighting methods)


@dataclass
class Aggregation:
    """The result of one aggregation."""

    update: Tensor  # [R, D] combined gradient per row, in grads.dtype
    weights: Tensor | None  # [R, T] c with update = sum_t c[r, t] * grads[r, t]; None if not linear
    state: Any  # new state, to be passed to the next call
    extras: dict[str, Tensor] = field(default_factory=dict)  # method-specific values worth logging


@dataclass(frozen=True)
class GradStats:
    """Per-row statistics of the task gradients, absent tasks zeroed (see ``_math``)."""

    dtype: torch.dtype = torch.float32  # compute dtype of the coefficient math (>= float32)
    norms: Tensor | None = None  # [R, T] in compute dtype (>= float32)
    gram: Tensor | None = None  # [R, T, T] in compute dtype (>= float32)


@dataclass(frozen=True)
class Coefficients:
    """What :meth:`WeightedAggregator.coefficients` returns."""

    weights: Tensor  # [R, T] the coefficients c (0 for absent tasks)
    state: Any = None  # new state (stateless methods return None)
    extras: dict[str, Tensor] = field(default_factory=dict)


class Aggregator(ABC):
    """Abstract base. Subclasses are small frozen dataclasses whose fields are their hyper-parameters,
    validated in ``__post_init__`` (raising :class:`~recmtl.errors.ConfigError`)."""

    name: ClassVar[str]
    modes: ClassVar[frozenset[str]]  # subset of {"row", "global"}
    # True when the coefficients are constant 0/1 per present task (ew, single): the trainer may then
    # skip per-task gradients and run one backward on sum_t fixed_task_weights(T)[t] * L_t.
    fixed_weights: ClassVar[bool] = False
    # True when a row with exactly one present task always gets coefficient 1 for it (its gradient passes
    # through unchanged) and weight 1 in the logged task weights, whatever the epoch, state or values:
    # the trainer may then compute coefficients only for rows where several tasks meet.
    identity_on_single_task: ClassVar[bool] = False

    def init_state(self, n_tasks: int) -> Any:
        """The state before the first step (stateless methods: None)."""
        return None

    def fixed_task_weights(self, n_tasks: int) -> Tensor | None:
        """For ``fixed_weights`` methods, the [T] 0/1 loss weights of the equivalent summed backward."""
        return None

    @abstractmethod
    def __call__(self, grads: Tensor, present: Tensor, state: Any, info: StepInfo) -> Aggregation:
        """Aggregate ``grads`` [R, T, D] with mask ``present`` [R, T] (bool)."""


class WeightedAggregator(Aggregator):
    """Base for "weights from the norms / Gram matrix, then a weighted sum".

    ``needs`` says which statistics :meth:`coefficients` receives: "none" (neither), "norms" (row norms
    only, one pass over the gradients) or "gram" (Gram matrix and its diagonal's square root as norms).
    """

    needs: ClassVar[Literal["none", "norms", "gram"]] = "gram"

    @abstractmethod
    def coefficients(self, stats: GradStats, present: Tensor, state: Any, info: StepInfo) -> Coefficients:
        """Pure and batched: the [R, T] coefficients (0 for absent tasks), the new state and extras."""

    def __call__(self, grads: Tensor, present: Tensor, state: Any, info: StepInfo) -> Aggregation:
        check_inputs(grads, present)
        with torch.no_grad():
            grads = grads.detach()
            dtype = compute_dtype(grads.dtype)
            if self.needs == "gram":
                gram = row_gram(grads, present)
                norms = torch.diagonal(gram, dim1=1, dim2=2).clamp(min=0.0).sqrt()
                stats = GradStats(dtype=dtype, norms=norms, gram=gram)
            elif self.needs == "norms":
                stats = GradStats(dtype=dtype, norms=row_norms(grads, present))
            else:
                stats = GradStats(dtype=dtype)
            out = self.coefficients(stats, present, state, info)
            update = combine(out.weights, grads)
        return Aggregation(update=update, weights=out.weights, state=out.state, extras=dict(out.extras))


def check_inputs(grads: Tensor, present: Tensor) -> None:
    """Shape / dtype checks on the arguments (programming errors: ValueError). No tensor values read."""
    if grads.ndim != 3:
        raise ValueError(f"grads must be [R, T, D], got shape {tuple(grads.shape)}")
    if not grads.is_floating_point():
        raise ValueError(f"grads must be floating point, got {grads.dtype}")
    if present.dtype != torch.bool:
        raise ValueError(f"present must be a bool tensor, got {present.dtype}")
    if tuple(present.shape) != tuple(grads.shape[:2]):
        raise ValueError(f"present must be [R, T] = {tuple(grads.shape[:2])}, got {tuple(present.shape)}")
    if grads.shape[1] == 0:
        raise ValueError("grads has no task (T = 0)")


# --- hyper-parameter validation helpers (used in __post_init__) -------------------------------------


def check_real(
    owner: str, param: str, value: Any, *, low: float, high: float, low_open: bool = False
) -> None:
    """Require ``value`` to be a finite real in [low, high] (or (low, high] with ``low_open``)."""
    where = f"{owner}: {param}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where} must be a number, found {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{where} must be finite, found {value!r}")
    bad_low = v <= low if low_open else v < low
    if bad_low or v > high:
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise ConfigError(f"{where} must be in {interval}, found {value!r}")


def check_choice(owner: str, param: str, value: Any, choices: tuple[str, ...]) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{owner}: {param} must be one of {', '.join(choices)}; found {value!r}")


def check_index(owner: str, param: str, value: Any) -> None:
    """Require ``value`` to be a non-negative int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{owner}: {param} must be a non-negative integer, found {value!r}")


def check_main_task(owner: str, main_task: int, n_tasks: int) -> None:
    """Require the main task index to exist among the T tasks (checked per call, on shapes only)."""
    if main_task >= n_tasks:
        raise ConfigError(f"{owner}: main_task={main_task} but the step has only {n_tasks} task(s)")


def main_task_mask(main_task: int, n_tasks: int, device: torch.device) -> Tensor:
    """[T] bool one-hot of the main task."""
    return torch.arange(n_tasks, device=device) == main_task
