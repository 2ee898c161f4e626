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

from recmtl.aggregators.alignedmtl import AlignedMTL
from recmtl.aggregators.base import (
    Aggregation,
    Aggregator,
    FusedRows,
    OptionInfo,
    State,
    StepInfo,
    TaskGrads,
    Weights,
    method_options,
    option,
)
from recmtl.aggregators.cagrad import CAGrad
from recmtl.aggregators.dbmtl import DBMTL
from recmtl.aggregators.dualproj import DualProj
from recmtl.aggregators.dwa import DWA
from recmtl.aggregators.ew import EW
from recmtl.aggregators.fairgrad import FairGrad
from recmtl.aggregators.famo import FAMO
from recmtl.aggregators.gradcraft import GradCraft
from recmtl.aggregators.gradnorm import GradNorm
from recmtl.aggregators.gradvac import GradVac
from recmtl.aggregators.imtl import IMTLG
from recmtl.aggregators.mgda import MGDA
from recmtl.aggregators.nashmtl import NashMTL
from recmtl.aggregators.pcd import PCD
from recmtl.aggregators.pcgrad import PCGrad
from recmtl.aggregators.pmtrec import PMTRec
from recmtl.aggregators.rlw import RLW
from recmtl.aggregators.single import Single
from recmtl.aggregators.upgrad import UPGrad
from recmtl.aggregators.uw import UW
from recmtl.errors import ConfigError

# In the order `recmtl methods` and the README list them: the baselines and PMTRec, the loss weightings,
# then the gradient methods (METHODS.md §6).
AGGREGATORS: dict[str, type[Aggregator]] = {
    "single": Single,
    "ew": EW,
    "pmtrec": PMTRec,
    "rlw": RLW,
    "uw": UW,
    "dwa": DWA,
    "gradnorm": GradNorm,
    "famo": FAMO,
    "dbmtl": DBMTL,
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "gradvac": GradVac,
    "cagrad": CAGrad,
    "imtl": IMTLG,
    "nashmtl": NashMTL,
    "alignedmtl": AlignedMTL,
    "upgrad": UPGrad,
    "dualproj": DualProj,
    "fairgrad": FairGrad,
    "pcd": PCD,
    "gradcraft": GradCraft,
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
    "Aggregation",
    "FusedRows",
    "Aggregator",
    "OptionInfo",
    "State",
    "StepInfo",
    "TaskGrads",
    "Weights",
    "aggregator_class",
    "check_option_names",
    "make_aggregator",
    "method_options",
    "option",
    "AlignedMTL",
    "CAGrad",
    "DBMTL",
    "DWA",
    "DualProj",
    "EW",
    "FAMO",
    "FairGrad",
    "GradCraft",
    "GradNorm",
    "GradVac",
    "IMTLG",
    "MGDA",
    "NashMTL",
    "PCD",
    "PCGrad",
    "PMTRec",
    "RLW",
    "Single",
    "UPGrad",
    "UW",
]
