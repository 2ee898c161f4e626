"""`recmtl methods`: every registered aggregation method with its modes, options and paper."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli._shell import console
from recmtl.aggregators import AGGREGATORS, Aggregator, method_options


def mode_labels(cls: type[Aggregator]) -> list[str]:
    """``["row (per-row, ours)", "global (paper)"]``: each supported mode, row first, with its label."""
    instance = cls()
    labels = {mode: instance.label(mode).replace("global, ours", "ours") for mode in cls.modes}
    return [f"{mode} ({labels[mode]})" for mode in sorted(cls.modes, reverse=True)]


def markdown_table() -> str:
    """The methods as a Markdown table (name, what it does, paper, modes): README.md holds this verbatim."""
    lines = ["| method | what it does | paper | modes |", "|---|---|---|---|"]
    for name, cls in AGGREGATORS.items():
        lines.append(f"| `{name}` | {cls.summary} | {cls.paper} | {', '.join(mode_labels(cls))} |")
    return "\n".join(lines)


def methods(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print a Markdown table: method, what it does, paper, modes.")
    ] = False,
) -> None:
    """List every gradient-aggregation method (`recmtl train --method NAME`) with its options.

    For each method: what it does; the modes it supports (row: per user/item row; global: one flattened
    vector per task), labelled "paper" when the method's paper uses that mode and "ours" for our variant
    ("per-row, ours"); its options (`--method-opt KEY=VALUE`, or a [method] table in a --config file) with
    their defaults and valid values; and its reference.
    """
    if markdown:
        typer.echo(markdown_table())
        return
    table = Table(show_lines=True, title="recmtl train --method NAME [--method-opt KEY=VALUE ...]")
    columns = ("method", "what it does · modes", "options (KEY = default · valid values · meaning)", "paper")
    for column in columns:
        table.add_column(column, overflow="fold")
    for name, cls in AGGREGATORS.items():
        what = escape(cls.summary) + "\n" + "\n".join(mode_labels(cls))
        options = "\n".join(f"{o.name} = {o.default} · {o.valid} · {o.help}" for o in method_options(cls))
        table.add_row(name, what, escape(options) or "none", escape(cls.paper))
    console.print(table)
