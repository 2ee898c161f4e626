"""What every command shares: the consoles and turning user errors into one line and exit status 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from recmtl.errors import RecmtlError

console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Print a RecmtlError as ``error: <message>`` on stderr and exit 1; Ctrl-C exits 130, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecmtlError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, emoji=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: nothing half-written was kept")
            sys.stderr.flush()
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def given(**options: Any) -> dict[str, Any]:
    """The options the user actually gave (not None): the command-line overrides of a config."""
    return {k: v for k, v in options.items() if v is not None}
