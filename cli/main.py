"""The ``recmtl`` command: a thin Typer shell over the library.

``main()`` (the console script) imports only the command it runs (:data:`COMMANDS`), inside its Ctrl-C
handling: `recmtl --help`, `prepare` and `info` start without torch, and an interrupt during the start-up
imports (torch takes seconds) also ends with one line and exit status 130.
It runs Typer with ``standalone_mode=False`` so that a usage error (an unknown option, a value that does not
parse) is one ``error: ...`` line on stderr with exit status 2, like every other mistake in the input.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

INTERRUPTED = 130


def _show_version(value: bool) -> None:
    if value:
        import typer

        import recmtl

        print(f"recmtl {recmtl.__version__}")
        raise typer.Exit()


#: command -> (module, function, one-line summary for `recmtl --help`). A command's module is imported
#: only when that command runs: `prepare` and `info` never import torch, and `recmtl --help` lists the
#: commands from the summaries alone (tests/cli hold each summary equal to its docstring's first line).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": (
        "cli.prepare",
        "prepare",
        "Turn a raw public dataset (or the synthetic default) into the parquet tables every stage reads.",
    ),
    "info": (
        "cli.prepare",
        "info",
        "Print the summary of a prepared dataset (counts, stats, dropped rows) again.",
    ),
    "train": (
        "cli.train",
        "train",
        "Train a recommender (MF or STEM) with auxiliary tasks and a gradient-aggregation method.",
    ),
    "evaluate": (
        "cli.train",
        "evaluate",
        "Full-ranking top-K evaluation of a run's best checkpoint over all items.",
    ),
    "sweep": (
        "cli.sweep",
        "sweep",
        "Train and evaluate every cell of a sweep file (methods × option grid × seeds), resumably.",
    ),
    "compare": (
        "cli.compare",
        "compare",
        "Compare evaluated runs: mean ± std over seeds, paired tests against a baseline, tables and plots.",
    ),
    "methods": (
        "cli.methods",
        "methods",
        "List every gradient-aggregation method (`recmtl train --method NAME`) with its options.",
    ),
}


@functools.cache
def build_app(commands: tuple[str, ...] | None = None) -> Any:
    """The Typer application with the real ``commands`` (None: all of them, importing torch), or, with
    ``commands=()``, one that only lists every command from its summary (for `recmtl --help`)."""
    import importlib

    import typer

    app = typer.Typer(
        name="recmtl",
        help="Multi-task training for recommender systems: prepare -> train -> evaluate, and sweep -> "
        "compare for studies (`recmtl methods` lists the gradient-aggregation methods).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        return None

    for name, (module, function, summary) in COMMANDS.items():
        if commands is None or name in commands:
            app.command(name)(_interruptible(getattr(importlib.import_module(module), function)))
        elif commands == ():
            app.command(name, help=summary)(_listed_only)
    return app


def _interruptible(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command``, which on entry hands Ctrl-C back to Python (KeyboardInterrupt, which the command
    handles: it has started work it must clean up) from the exit-at-once handler of start-up and parsing,
    and while it runs takes SIGTERM as Ctrl-C (:func:`_terminate_as_ctrl_c`)."""

    @functools.wraps(command)
    def entered(*args: Any, **kwargs: Any) -> Any:
        if getattr(signal.getsignal(signal.SIGINT), "exits_at_once", False):
            signal.signal(signal.SIGINT, signal.default_int_handler)
        main_thread = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGTERM) if main_thread else None
        if before == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminate_as_ctrl_c)
        try:
            return command(*args, **kwargs)
        finally:
            if before == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, before)

    return entered


def _terminate_as_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM once a command runs (``kill``, a job scheduler's stop, a sweep run in the background, where
    the shell ignores Ctrl-C) ends it as Ctrl-C does: whole epochs kept, one line, status 130."""
    raise KeyboardInterrupt


def _listed_only() -> None:
    """Stands for a command in `recmtl --help`; never runs (the command's own app is built to run it)."""
    raise AssertionError("a listed-only command ran")


def command_of(args: list[str]) -> str | None:
    """The command ``args`` names (its first word that is not an option), or None."""
    word = next((a for a in args if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def __getattr__(name: str) -> Any:
    """``cli.main.app`` (every command) is built on first use (``from cli.main import app`` works)."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _exit_at_once_on_ctrl_c(preload_polars: bool = True) -> Iterator[None]:
    """During the start-up imports and the parsing of the command line (until a command starts, see
    :func:`_interruptible`), Ctrl-C prints ``interrupted`` and ends the process (status 130) at once.

    Nothing has been written yet, and a KeyboardInterrupt raised inside an extension can be swallowed by it,
    leaving a half-imported module behind (torch initialising numpy) or losing the interrupt altogether
    (pydantic-core building typer's validator for a Path option: "Exception ignored in: 'Path'", exit 0).
    """
    if (
        threading.current_thread() is not threading.main_thread()  # (signal handlers are the main thread's)
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # ignored, or handled elsewhere
    ):
        yield
        return

    def exit_now(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a repeated Ctrl-C must not kill us mid-exit
        os.write(sys.stderr.fileno(), b"interrupted\n")  # unbuffered: nothing may be lost by _exit
        os._exit(INTERRUPTED)

    exit_now.exits_at_once = True  # type: ignore[attr-defined]  # (what _interruptible looks for)
    signal.signal(signal.SIGINT, exit_now)
    try:
        # polars installs its own C-level SIGINT handler when imported (signal-hook, pola-rs/polars#20961),
        # behind Python's back: a Ctrl-C then sometimes killed the process (-SIGINT) or was lost. Import it
        # first and take SIGINT back, here and (by re-installing Python's handler) for the command's run.
        if preload_polars:
            import polars  # noqa: F401

            signal.signal(signal.SIGINT, exit_now)
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted(command_ran: bool) -> int:
    """Ctrl-C outside a command's own handling: one line (unless the command already said it), 130."""
    shell = sys.modules.get("cli._shell")
    if not (command_ran and getattr(shell, "interrupt_reported", False)):
        print("interrupted", file=sys.stderr, flush=True)
    return INTERRUPTED


def run(args: list[str]) -> int:
    """Run the command line ``args``; return the exit status. Nothing escapes but SystemExit."""
    command_ran = False
    command = command_of(args)  # None: `recmtl --help`, `--version` or a mistake: nothing heavy to import
    try:
        with _exit_at_once_on_ctrl_c(preload_polars=command is not None):
            import typer

            try:
                from typer._click import exceptions as click_exceptions  # typer vendors click (0.2x)
            except ImportError:  # pragma: no cover (an older typer on top of click)
                from click import exceptions as click_exceptions  # type: ignore[no-redef]

            from cli import _shell

            app = build_app((command,) if command else ())
            _shell.interrupt_reported = False
            command_ran = True
            try:
                code = app(args=args, prog_name="recmtl", standalone_mode=False)
            except click_exceptions.ClickException as exc:
                if type(exc).__name__ == "NoArgsIsHelpError":  # `recmtl` alone: the help is already printed
                    return exc.exit_code
                _shell.print_error(_usage_message(exc))
                return exc.exit_code
            except typer.Abort:  # click turns Ctrl-C (or EOF at a prompt) into Abort
                return _interrupted(command_ran)
            if code == INTERRUPTED:  # typer turns Ctrl-C outside a command's handling into Exit(130)
                return _interrupted(command_ran)
            return code if isinstance(code, int) else 0
    except KeyboardInterrupt:
        return _interrupted(command_ran)


def _usage_message(exc: Any) -> str:
    """Click's message on one line, with the command whose --help lists the options."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
