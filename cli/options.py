"""Command-line options generated from a config dataclass, so each option is declared once: its field.

:func:`config_options` adds one ``--flag`` per field of a config class (name, type and help from the field;
tuples and methods are given as text, e.g. ``--aux social,category``, ``--method ew``) to a Typer command.
Every generated option defaults to None, so the command receives only what the user gave: the overrides
of a config file or of the defaults, which :func:`recmtl.config.build` then converts and checks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.models import ArgumentInfo

from recmtl.aggregators import Aggregator
from recmtl.train.config import flag


def _cli_type(annotation: Any) -> type:
    """The type Typer parses a field's value as (None is the 'not given' default of every option)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple or annotation is Aggregator:
        return str
    return annotation if annotation in (int, float, str, bool, Path) else str


def _shown(value: Any) -> str:
    if isinstance(value, Aggregator):
        return value.name
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def config_options(
    cls: type, *, skip: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command: add an option for each field of ``cls`` not in ``skip``; the command
    receives the ones the user gave as one dict argument ``overrides`` (field name -> raw value)."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    defaults = cls()

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "overrides"]
        generated = []
        for f in fields:
            default = getattr(defaults, f.name)
            text = f.metadata.get("help", "")
            if default is not None and default != () and default is not False:  # (a flag: off unless given)
                text += f" Default: {_shown(default)}."
            option = typer.Option(flag(f.name), help=text, show_default=False)
            annotation = Annotated[_cli_type(hints[f.name]) | None, option]
            generated.append(
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            )
        names = {f.name for f in fields}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            overrides = {k: v for k, v in kwargs.items() if k in names and v is not None}
            return command(**{k: v for k, v in kwargs.items() if k not in names}, overrides=overrides)

        # the command's arguments, then the config's options, then the command's own options
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        arguments = [p for p in keyword if any(isinstance(m, ArgumentInfo) for m in _metadata(p))]
        ordered = arguments + generated + [p for p in keyword if p not in arguments]
        wrapper.__signature__ = own.replace(parameters=ordered)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in ordered}
        del wrapper.__wrapped__  # Typer must read the new signature, not the command's
        return wrapper

    return decorate


def _metadata(param: inspect.Parameter) -> tuple[Any, ...]:
    return getattr(param.annotation, "__metadata__", ())
