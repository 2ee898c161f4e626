"""Gradient aggregators: one small class per method and an explicit registry ``{name: class}``.

See :mod:`recmtl.aggregators.base` for the interface (METHODS.md §3) and each method's module for its
formulas, paper and [reading] options. The trainer builds an aggregator with :func:`make_aggregator` and
never branches on its name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from recmtl.aggregators.base import (
    Aggregation,
    Aggregator,
    Coefficients,
    GradStats,
    StepInfo,
    WeightedAggregator,
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


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """Build the aggregator registered as ``name`` with hyper-parameters ``params``.

    Raises ConfigError for an unknown name (listing the known ones), an unknown parameter (naming it and
    the accepted ones) or an invalid value (from the class's own validation).
    """
    cls = AGGREGATORS.get(name)
    if cls is None:
        raise ConfigError(f"unknown aggregation method {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    accepted = [f.name for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: {allowed}")
    return cls(**params)


__all__ = [
    "AGGREGATORS",
    "EW",
    "Aggregation",
    "Aggregator",
    "Coefficients",
    "GradStats",
    "PMTRec",
    "Single",
    "StepInfo",
    "WeightedAggregator",
    "make_aggregator",
]
