"""Gradient aggregators: one small class per method and an explicit registry ``{name: class}``.

See :mod:`recmtl.aggregators.base` for the interface (METHODS.md §3) and each method's module for its
formulas, paper, hyper-parameters and [reading] options. The trainer builds an aggregator from the
``method`` of its config and never branches on its name. Adding a method: one module with a frozen
dataclass subclass of :class:`Aggregator` (hyper-parameters as :func:`option` fields, ``weigh``), one line
in :data:`AGGREGATORS`, and its tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from recmtl.aggregators.base import (
    Aggregation,
    Aggregator,
    OptionInfo,
    State,
    StepInfo,
    TaskGrads,
    Weights,
    method_options,
    option,
)
from recmtl.aggregators.ew import EW
from recmtl.aggregators.pmtrec import PMTRec
from recmtl.aggregators.single import Single
from recmtl.errors import ConfigError

AGGREGATORS: dict[str, type[Aggregator]] = {
    "single": Single,
    "ew": EW,
    "pmtrec": PMTRec,
}


def aggregator_class(name: str) -> type[Aggregator]:
    """The class registered as ``name``; ConfigError listing the known names otherwise."""
    cls = AGGREGATORS.get(name)
    if cls is None:
        raise ConfigError(f"{name}: unknown method; known: {', '.join(AGGREGATORS)} (see `recmtl methods`)")
    return cls


def check_option_names(cls: type[Aggregator], names: Iterable[str]) -> None:
    """ConfigError naming the first of ``names`` that is not an option of method ``cls``."""
    accepted = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(
            f"method {cls.name} has no option {unknown[0]!r} (its options: {allowed}; see `recmtl methods`)"
        )


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """Build the aggregator registered as ``name`` with hyper-parameters ``params``.

    Raises ConfigError for an unknown name (listing the known ones), an unknown parameter (naming it and
    the accepted ones) or an invalid value (from the class's own validation).
    """
    cls = aggregator_class(name)
    check_option_names(cls, params)
    return cls(**params)


__all__ = [
    "AGGREGATORS",
    "EW",
    "Aggregation",
    "Aggregator",
    "OptionInfo",
    "PMTRec",
    "Single",
    "State",
    "StepInfo",
    "TaskGrads",
    "Weights",
    "aggregator_class",
    "check_option_names",
    "make_aggregator",
    "method_options",
    "option",
]
