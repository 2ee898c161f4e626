"""Grouping runs by their configuration minus seed, and labelling the groups.

Two runs belong to one group when their resolved configs are equal once the keys that do not change what
is trained are removed (:data:`IGNORED`: the seed, the run name, the data path — the data identity is its
hash, checked in :mod:`recmtl.compare.load` — the device and the validation chunk size). A method option
a run does not record (it was written before the option existed) counts at the method's default, which
is what that run trained with, as :data:`recmtl.runs.ADDED_OPTIONS` does for the training options. A
group's label
is its method's name followed by the options that differ between groups: the method's own options when
they differ between groups of that method (``pmtrec (alpha=1.05, tau=0.5)``), any other option when it
differs between any groups (``ew (lr=0.01)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from recmtl.aggregators import AGGREGATORS
from recmtl.compare.load import Run

#: Config keys that do not define a group: the seed (what a group averages over), names and places, and how
#: the same numbers are computed (the row update's back end).
IGNORED = ("seed", "name", "data", "device", "eval_users_chunk", "fused_update")


@dataclass(frozen=True)
class Group:
    """The runs of one configuration (minus seed), sorted by seed."""

    label: str
    method: str
    options: dict[str, Any]  # flattened config minus IGNORED: "lr" -> 0.01, "method.alpha" -> 1.1
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    def by_seed(self) -> dict[int, Run]:
        """seed -> run (the first run of a seed if a seed repeats)."""
        out: dict[int, Run] = {}
        for run in self.runs:
            out.setdefault(run.seed, run)
        return out


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """The config minus :data:`IGNORED`, the method's table flattened to ``method.KEY`` keys (lists as
    tuples, so values are hashable)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in IGNORED:
            continue
        if key == "method":
            out |= {f"method.{k}": _hashable(v) for k, v in method_table(value).items()}
        else:
            out[key] = _hashable(value)
    return out


def method_table(value: str | dict[str, Any]) -> dict[str, Any]:
    """A run's method table (or bare name) with every option of a registered method it does not record at
    the method's default."""
    table = {"name": value} if isinstance(value, str) else dict(value)
    cls = AGGREGATORS.get(str(table.get("name")))
    return (cls().to_config() if cls is not None else {}) | table


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def varying_options(groups_options: list[dict[str, Any]]) -> dict[str, list[str]]:
    """method name -> the option keys that label its groups (sorted): its ``method.*`` options that differ
    between its groups, and the other keys that differ between any groups."""
    common = [k for k in dict.fromkeys(k for o in groups_options for k in o) if not k.startswith("method.")]
    shared = [k for k in common if len({repr(o.get(k)) for o in groups_options}) > 1]
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(o.get("method.name") for o in groups_options):
        mine = [o for o in groups_options if o.get("method.name") == name]
        keys = [k for k in dict.fromkeys(k for o in mine for k in o) if k.startswith("method.")]
        own = [k for k in keys if k != "method.name" and len({repr(o.get(k)) for o in mine}) > 1]
        out[str(name)] = own + shared
    return out


def label_of(options: dict[str, Any], keys: list[str]) -> str:
    """``pmtrec (alpha=1.05, tau=0.5)``: the method name and the labelling options' values."""
    name = str(options.get("method.name"))
    parts = [f"{k.removeprefix('method.')}={_shown(options.get(k))}" for k in keys]
    return f"{name} ({', '.join(parts)})" if parts else name


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by configuration minus seed, in the order their first run appears."""
    keyed: dict[str, list[Run]] = {}
    options: dict[str, dict[str, Any]] = {}
    for run in runs:
        flat = flatten(run.config)
        key = repr(sorted(flat.items()))
        keyed.setdefault(key, []).append(run)
        options.setdefault(key, flat)
    varying = varying_options(list(options.values()))
    groups: list[Group] = []
    seen: dict[str, int] = {}
    for key, members in keyed.items():
        flat = options[key]
        label = label_of(flat, varying[str(flat.get("method.name"))])
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # (cannot happen with distinct configs; kept unique all the same)
            label = f"{label} #{seen[label]}"
        members.sort(key=lambda r: (r.seed, r.name))
        groups.append(Group(label, str(flat.get("method.name")), flat, tuple(members)))
    return groups


def grid_of(groups: list[Group]) -> dict[str, tuple[str, str, list[Group]]]:
    """method -> (option a, option b, its groups) for every method whose groups vary exactly two of its own
    options and nothing else (a sensitivity grid such as PMTRec's alpha x tau)."""
    out: dict[str, tuple[str, str, list[Group]]] = {}
    for name in dict.fromkeys(g.method for g in groups):
        mine = [g for g in groups if g.method == name]
        keys = list(dict.fromkeys(k for g in mine for k in g.options))
        differ = [k for k in keys if len({repr(g.options.get(k)) for g in mine}) > 1]
        if len(mine) >= 3 and len(differ) == 2 and all(k.startswith("method.") for k in differ):
            out[name] = (differ[0].removeprefix("method."), differ[1].removeprefix("method."), mine)
    return out
