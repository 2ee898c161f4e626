"""The aggregation interface every gradient-combination method implements (METHODS.md §3).

Per training step an :class:`Aggregator` maps the task gradients of the touched rows
(:class:`~recmtl.aggregators.grads.TaskGrads`: per-row ``G[r, t]`` and the presence mask ``P[r, t]``), its
state and the :class:`StepInfo` to an :class:`Aggregation`: the update ``[R, D]``, the coefficients
``[R', T]`` when the method is linear in the gradients, the per-task weights to log, and the new state.

- per-row mode ("row"): R' = R unique touched rows, D = embedding dim;
- global mode ("global"): R' = 1, every task's touched rows flattened into one vector: the same code.

A method writes one pure, batched function — :meth:`Aggregator.weigh`: the coefficients ``c [R', T]``
(0 for absent tasks) from whatever statistics it asks ``grads`` for (norms, Gram matrix, dense view),
the state and the step info — and declares its hyper-parameters as dataclass fields made with
:func:`option` (default, range or choices, help). The base class then does the rest, once for every
method:

- validates the hyper-parameters on construction (:class:`~recmtl.errors.ConfigError` naming the
  parameter and the value found);
- :meth:`Aggregator.aggregate` runs under ``torch.no_grad()``; for a method that declares
  ``identity_on_single_task`` it calls :meth:`~Aggregator.weigh` only on the rows where several tasks
  meet (on real data a small minority) and gives every other row coefficient 1 for its one task;
- the combination ``update = Σ_t c_t G_t`` (:meth:`TaskGrads.combine`, one scaled scatter), made only when
  first asked for: the :class:`Aggregation` is lazy, so the row update (:mod:`recmtl.kernels`) may instead
  combine the gradients straight into the optimiser in one fused pass.

A method whose whole per-row combination is a fixed function of each row's own gradients (PMTRec) may also
name it as one kernel op (:meth:`Aggregator.fused_rows`, a :class:`FusedRows`): a fused back end then
computes norms, coefficients and update in one pass over the gradients, and ``weigh`` runs only if the
coefficients are asked for first (the plain PyTorch path, which is the specification).

Absent tasks (``present`` False) are excluded from every norm, softmax and divisor and get coefficient 0.
State is a mapping of tensors (:data:`State`): ``init_state`` makes it, ``weigh`` returns the new one, and
the trainer saves it with every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from recmtl.aggregators.grads import MODES, TaskGrads
from recmtl.errors import ConfigError

#: An aggregator's state: named tensors (per-row state is indexed by storage row id, see StepInfo.row_ids).
State = dict[str, Tensor]


@dataclass(frozen=True)
class StepInfo:
    """What a step tells the aggregator besides the gradients.

    row_ids [R'] are the storage rows (users first, then items; ``tables`` gives each table's range) of
    the rows being aggregated, in order; in global mode, all touched rows. None when the caller has no
    storage (a plain [R, T, D] call): rows are then numbered 0..R-1 (see :meth:`rows`).
    """

    epoch: int = 0  # 0-based epoch index s
    step: int = 0  # 0-based step within the epoch
    mode: str = "row"  # "row" | "global"
    tasks: tuple[str, ...] = ()  # task names, main task first
    losses: Tensor | None = None  # [T] task losses of this step (detached)
    row_ids: Tensor | None = None  # [R'] storage row of each aggregated row
    tables: Mapping[str, range] = field(default_factory=dict)  # table name -> its storage rows
    generator: torch.Generator | None = None  # the only source of randomness an aggregator may use

    def rows(self, n_rows: int, device: torch.device | None = None) -> Tensor:
        """[n_rows] storage row ids of the aggregated rows (0..n_rows-1 when none were given)."""
        if self.row_ids is not None:
            return self.row_ids
        return torch.arange(n_rows, device=device)

    def rows_of_table(self, table: str) -> tuple[Tensor, Tensor]:
        """Which aggregated rows belong to ``table`` (bool [R']) and their ids within it ([M])."""
        if self.row_ids is None or table not in self.tables:
            raise ValueError(f"StepInfo has no storage rows for table {table!r}")
        span = self.tables[table]
        inside = (self.row_ids >= span.start) & (self.row_ids < span.stop)
        return inside, self.row_ids[inside] - span.start

    def select(self, rows: Tensor) -> StepInfo:
        """The same information for the aggregated rows ``rows`` [M] (positions) only."""
        if self.row_ids is None:
            return dataclasses.replace(self, row_ids=rows)
        return dataclasses.replace(self, row_ids=self.row_ids.index_select(0, rows))


@dataclass(frozen=True)
class Weights:
    """What :meth:`Aggregator.weigh` returns."""

    coefficients: Tensor  # [R', T] c with update = Σ_t c[r, t] · G[r, t]; 0 for absent tasks
    state: State = field(default_factory=dict)  # the new state
    task_weights: Tensor | None = None  # [R', T] the weights to log, when not the coefficients themselves


@dataclass(frozen=True)
class FusedRows:
    """A method's whole per-row combination as one kernel op of :mod:`recmtl.kernels` (see
    :meth:`Aggregator.fused_rows`): ``op`` names it, ``method`` holds its parameters, ``info`` the step."""

    op: str  # e.g. "pmtrec"
    method: Aggregator
    info: StepInfo


class Aggregation:
    """The result of one aggregation; lazy: what is not given is computed when first asked for.

    - ``update`` [R, D]: the combined gradient of every row, in the gradients' dtype (made from the
      coefficients by :meth:`TaskGrads.combine` unless given, as a tensor or a function that makes it: a
      method not linear in the gradients gives it);
    - ``coefficients`` [R', T] when the method is linear in the gradients (else None), ``logged_weights``
      [R', T] the per-task weights to log (None, logged as NaN, if it has none);
    - ``state``: the new state; ``grads``: the gradients aggregated (what a fused row update reads; None
      for an aggregation made of its update only, ``Aggregation(update, None, None, state)``);
    - ``fused``: the method's per-row combination as one kernel op (:class:`FusedRows`) when it names one;
      its coefficients are then made by ``weigh`` (the thunk given) only if asked for before a fused row
      update supplied them (:meth:`resolve`).
    """

    def __init__(
        self,
        update: Tensor | Callable[[], Tensor] | None = None,
        coefficients: Tensor | None = None,
        logged_weights: Tensor | None = None,
        state: State | None = None,
        *,
        grads: TaskGrads | None = None,
        fused: FusedRows | None = None,
        weigh: Callable[[], tuple[Tensor, Tensor | None]] | None = None,
    ) -> None:
        self.grads, self.state, self.fused = grads, ({} if state is None else state), fused
        self._coefficients, self._logged = coefficients, logged_weights
        self._update, self._weigh = update, weigh

    @property
    def pending(self) -> bool:
        """True while the coefficients are still to be computed (by ``weigh`` or a fused kernel)."""
        return self._weigh is not None

    def resolve(
        self, coefficients: Tensor, logged_weights: Tensor | None, update: Tensor | None = None
    ) -> None:
        """Take the coefficients (and logged weights, and the update if made) a fused kernel computed."""
        self._coefficients, self._logged, self._weigh = coefficients, logged_weights, None
        if update is not None:
            self._update = update

    def _compute(self) -> None:
        if self._weigh is not None:
            with torch.no_grad():
                coefficients, logged = self._weigh()
            self.resolve(coefficients, logged)

    @property
    def coefficients(self) -> Tensor | None:
        self._compute()
        return self._coefficients

    @property
    def logged_weights(self) -> Tensor | None:
        self._compute()
        return self._logged

    @property
    def update(self) -> Tensor:
        if not isinstance(self._update, Tensor):
            make, coefficients = self._update, self.coefficients
            if make is None and (coefficients is None or self.grads is None):
                raise ValueError("an Aggregation without coefficients and gradients must be given its update")
            with torch.no_grad():
                self._update = make() if make is not None else self.grads.combine(coefficients)
        return self._update


def option(
    default: Any,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A method hyper-parameter: a dataclass field with its default, its valid values and a one-line help.

    Numbers are checked against ``[low, high]`` (``(low, high]`` with ``low_open``; either bound may be
    None); strings against ``choices``. ``recmtl methods`` lists all of it.
    """
    return field(
        default=default,
        metadata={"help": help, "low": low, "high": high, "low_open": low_open, "choices": choices},
    )


@dataclass(frozen=True)
class OptionInfo:
    """One hyper-parameter of a method, as :func:`method_options` describes it."""

    name: str
    type: type
    default: Any
    help: str
    valid: str  # e.g. "[1, 10]", "(0, 100]", "unit | raw", "integer >= 0"


def method_options(cls: type[Aggregator]) -> list[OptionInfo]:
    """The hyper-parameters a method class declares, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [
        OptionInfo(
            f.name, hints[f.name], f.default, f.metadata.get("help", ""), _valid_text(f, hints[f.name])
        )
        for f in dataclasses.fields(cls)
    ]


def _valid_text(f: dataclasses.Field, kind: type) -> str:
    m = f.metadata
    if m.get("choices"):
        return " | ".join(m["choices"])
    low, high = m.get("low"), m.get("high")
    name = "integer" if kind is int else "number"
    if low is not None and high is not None:
        return f"{'(' if m.get('low_open') else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{name} {'>' if m.get('low_open') else '>='} {low:g}"
    if high is not None:
        return f"{name} <= {high:g}"
    return name


def _check_option(owner: str, f: dataclasses.Field, kind: type, value: Any) -> None:
    """Raise ConfigError naming ``owner``'s parameter ``f`` when ``value`` is not valid for it."""
    where = f"{owner}: {f.name}"
    m = f.metadata
    if kind is str:
        if not isinstance(value, str) or (m.get("choices") and value not in m["choices"]):
            raise ConfigError(f"{where} must be one of {', '.join(m.get('choices') or ())}; found {value!r}")
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, found {value!r}")
        return
    integral = kind is int
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integral else numbers.Real):
        raise ConfigError(f"{where} must be {'an integer' if integral else 'a number'}, found {value!r}")
    v = float(value)
    low, high = m.get("low"), m.get("high")
    bad = not math.isfinite(v)
    bad |= low is not None and (v <= low if m.get("low_open") else v < low)
    bad |= high is not None and v > high
    if bad:
        valid = _valid_text(f, kind)
        raise ConfigError(f"{where} must be {'in ' if valid[0] in '[(' else ''}{valid}, found {value!r}")


class Aggregator(ABC):
    """Abstract base. Subclasses are small frozen dataclasses whose fields (made with :func:`option`) are
    their hyper-parameters; see the module docstring for what a subclass writes."""

    name: ClassVar[str]
    modes: ClassVar[frozenset[str]]  # subset of {"row", "global"}
    # the modes of the method's paper; any other supported mode is our variant ("per-row, ours")
    paper_modes: ClassVar[frozenset[str]] = frozenset({"global"})
    paper: ClassVar[str] = ""  # reference: authors, title, venue
    summary: ClassVar[str] = ""  # what it does, in one line (`recmtl methods`, the README's methods table)
    # True when the coefficients are constant 0/1 per present task (ew, single): the trainer may then
    # skip per-task gradients and run one backward on sum_t fixed_task_weights(T)[t] * L_t.
    fixed_weights: ClassVar[bool] = False
    # True when a row with exactly one present task always gets coefficient 1 for it (its gradient passes
    # through unchanged) and weight 1 in the logged task weights, whatever the epoch, state or values:
    # aggregate() then calls weigh() only for the rows where several tasks meet.
    identity_on_single_task: ClassVar[bool] = False

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _check_option(self.name, f, hints[f.name], getattr(self, f.name))

    def to_config(self) -> dict[str, Any]:
        """The method as a config table: ``{"name": ..., option: value, ...}`` (config.json, TOML)."""
        return {"name": self.name} | dataclasses.asdict(self)  # type: ignore[call-overload]

    def label(self, mode: str) -> str:
        """How a run in ``mode`` is labelled: the paper's method, or our per-row variant."""
        return "paper" if mode in self.paper_modes else "per-row, ours" if mode == "row" else "global, ours"

    def init_state(self, n_tasks: int, n_rows: int, mode: str = "row") -> State:
        """The state before the first step, for ``n_tasks`` tasks over ``n_rows`` storage rows, in ``mode``
        (per-row state is indexed by storage row id, :attr:`StepInfo.row_ids`; global state needs no rows)."""
        return {}

    def check_mode(self, mode: str) -> None:  # noqa: B027 (a hook: by default nothing to check)
        """Raise ConfigError where an option's value does not fit ``mode`` (the trainer checks this with the
        other options, before any work; by default every option fits every supported mode)."""
        return None

    def fixed_task_weights(self, n_tasks: int) -> Tensor | None:
        """For ``fixed_weights`` methods, the [T] 0/1 loss weights of the equivalent summed backward."""
        return None

    @abstractmethod
    def weigh(self, grads: TaskGrads, state: State, info: StepInfo) -> Weights:
        """Pure and batched: the coefficients [R', T] (0 for absent tasks) and the new state."""

    def fused_rows(self, grads: TaskGrads, info: StepInfo) -> FusedRows | None:
        """The method's whole per-row combination as one kernel op of :mod:`recmtl.kernels`, or None (the
        default). Only for a stateless method (``weigh`` returns the state unchanged) in row mode whose
        coefficients depend on nothing but each row's own gradients and the step info; the kernel and
        ``aggregate``'s plain path must agree (tests/kernels). Checks the inputs as ``weigh`` would."""
        return None

    def aggregate(self, grads: TaskGrads, state: State, info: StepInfo) -> Aggregation:
        """The update of every touched row (lazy); see the module docstring."""
        fused = self.fused_rows(grads, info) if grads.mode == "row" else None
        if fused is not None:
            weigh = lambda: self._weights(grads, state, info)[:2]  # noqa: E731
            return Aggregation(state=state, grads=grads, fused=fused, weigh=weigh)
        with torch.no_grad():
            coefficients, logged, new_state = self._weights(grads, state, info)
        return Aggregation(None, coefficients, logged, new_state, grads=grads)

    def _weights(self, grads: TaskGrads, state: State, info: StepInfo) -> tuple[Tensor, Tensor, State]:
        """The coefficients, logged weights and new state of every row (the single-task shortcut included)."""
        if self.identity_on_single_task and grads.mode == "row":
            meet = (grads.present.sum(1) > 1).nonzero().squeeze(1)  # rows where tasks meet [M]
            out = self.weigh(grads.select(meet), state, info.select(meet))
            _check_weights(self.name, out, (meet.numel(), grads.n_tasks))
            ones = grads.present.to(out.coefficients.dtype)
            coefficients = ones.index_copy(0, meet, out.coefficients)
            logged = ones.index_copy(0, meet, _logged(out).to(ones.dtype))
            return coefficients, logged, out.state
        out = self.weigh(grads, state, info)
        _check_weights(self.name, out, tuple(grads.present.shape))
        return out.coefficients, _logged(out), out.state

    def __call__(self, grads: Tensor, present: Tensor, state: State, info: StepInfo) -> Aggregation:
        """Aggregate a dense ``grads`` [R, T, D] with mask ``present`` [R, T] (bool), rows as given (for
        global mode, pass the flattened [1, T, R·D]); values at absent tasks are never read."""
        return self.aggregate(TaskGrads.from_dense(grads, present), state, info)


def _logged(out: Weights) -> Tensor:
    return out.coefficients if out.task_weights is None else out.task_weights


def _check_weights(name: str, out: Weights, shape: tuple[int, int]) -> None:
    if tuple(out.coefficients.shape) != shape:
        raise ValueError(
            f"{name}: weigh() returned coefficients {tuple(out.coefficients.shape)}, not {shape}"
        )


def check_main_task(owner: str, main_task: int, n_tasks: int) -> None:
    """Require the main task index to exist among the T tasks (checked per call, on shapes only)."""
    if main_task >= n_tasks:
        raise ConfigError(f"{owner}: main_task={main_task} but the step has only {n_tasks} task(s)")


def main_task_mask(main_task: int, n_tasks: int, device: torch.device) -> Tensor:
    """[T] bool one-hot of the main task."""
    return torch.arange(n_tasks, device=device) == main_task


def finite_gram(grads: TaskGrads) -> tuple[Tensor, Tensor]:
    """The Gram [R', T, T] of ``grads`` with every row that overflowed (gradient norms beyond ~1e19 in
    float32) set to 0, and [R', 1] bool: False on those rows unless they hold a single present task (their
    coefficients are then 0: no update, rather than NaN)."""
    gram = grads.gram()
    finite = torch.isfinite(gram).flatten(1).all(dim=1)
    single = grads.present.sum(dim=1) == 1
    return torch.where(finite.view(-1, 1, 1), gram, 0.0), (finite | single).unsqueeze(1)


__all__ = [
    "MODES",
    "Aggregation",
    "Aggregator",
    "FusedRows",
    "OptionInfo",
    "State",
    "StepInfo",
    "TaskGrads",
    "Weights",
    "check_main_task",
    "finite_gram",
    "main_task_mask",
    "method_options",
    "option",
]
