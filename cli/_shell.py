"""What every command shares: the consoles and turning user errors into one line and exit status 1."""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from recmtl.errors import RecmtlError, TrainingInterrupted

console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

#: Whether a command already printed its "interrupted: ..." line (``cli.main`` then adds none).
interrupt_reported = False


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, one line (the message is never read as rich markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), emoji=False)


def user_errors(func: F) -> F:
    """Print a RecmtlError as ``error: <message>`` on stderr and exit 1; Ctrl-C exits 130 with one line
    (training's says which epochs are kept and how to resume), no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global interrupt_reported
        try:
            return func(*args, **kwargs)
        except RecmtlError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            detail = str(exc) if isinstance(exc, TrainingInterrupted) else "nothing half-written was kept"
            err_console.print(f"interrupted: {detail}", markup=False, emoji=False)
            sys.stderr.flush()
            interrupt_reported = True
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option value (``"a, b,"`` -> ``["a", "b"]``)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def given(**options: Any) -> dict[str, Any]:
    """The options the user actually gave (not None): the command-line overrides of a config."""
    return {k: v for k, v in options.items() if v is not None}


def tune_allocator() -> bool:
    """Let glibc keep large freed blocks for reuse instead of returning them to the OS after each step.

    A training step allocates several multi-MB temporaries; by default glibc serves each from a fresh
    ``mmap`` whose pages fault on first touch, every step (PyTorch's CPU performance guide recommends
    jemalloc/tcmalloc for the same reason). Raising the mmap and trim thresholds makes them come from the
    heap and be reused. Process-wide, so it lives here and not in the library; returns whether it applied
    (False off glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
