"""The ``recmtl`` command: a thin Typer shell over the library."""

from __future__ import annotations

import typer

from cli import methods as methods_cmd
from cli import prepare as prepare_cmd
from cli import train as train_cmd

app = typer.Typer(
    name="recmtl",
    help="Multi-task training for recommender systems: prepare -> train -> evaluate "
    "(`recmtl methods` lists the gradient-aggregation methods).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command("prepare")(prepare_cmd.prepare)
app.command("info")(prepare_cmd.info)
app.command("train")(train_cmd.train)
app.command("evaluate")(train_cmd.evaluate)
app.command("methods")(methods_cmd.methods)


def main() -> None:
    app()
