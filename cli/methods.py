"""`recmtl methods`: every registered aggregation method with its modes, options and paper."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from cli._shell import console
from recmtl.aggregators import AGGREGATORS, method_options


def methods() -> None:
    """List every gradient-aggregation method (`recmtl train --method NAME`) with its options.

    For each method: the modes it supports (row: per user/item row; global: one flattened vector per task),
    labelled "paper" when the method's paper uses that mode and "ours" for our variant; its options
    (`--method-opt KEY=VALUE`, or a [method] table in a --config file) with their defaults and valid values;
    and its reference.
    """
    table = Table(show_lines=True, title="recmtl train --method NAME [--method-opt KEY=VALUE ...]")
    for column in ("method", "modes", "options (KEY = default · valid values · meaning)", "paper"):
        table.add_column(column, overflow="fold")
    for name, cls in AGGREGATORS.items():
        instance = cls()
        labels = {mode: instance.label(mode).replace("global, ours", "ours") for mode in cls.modes}
        modes = "\n".join(f"{mode}: {labels[mode]}" for mode in sorted(cls.modes, reverse=True))
        options = "\n".join(f"{o.name} = {o.default} · {o.valid} · {o.help}" for o in method_options(cls))
        table.add_row(name, modes, escape(options) or "none", escape(cls.paper))
    console.print(table)
