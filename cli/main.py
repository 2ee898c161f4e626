"""The ``recmtl`` command: a thin Typer shell over the library.

``main()`` (the console script) imports the commands lazily, inside its Ctrl-C handling, so that an
interrupt during the start-up imports (torch takes seconds) also ends with one line and exit status 130.
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
from collections.abc import Iterator
from typing import Any

INTERRUPTED = 130


def _show_version(value: bool) -> None:
    if value:
        import typer

        import recmtl

        print(f"recmtl {recmtl.__version__}")
        raise typer.Exit()


@functools.cache
def build_app() -> Any:
    """The Typer application (importing every command, hence torch)."""
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

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        return None

    app.command("prepare")(prepare_cmd.prepare)
    app.command("info")(prepare_cmd.info)
    app.command("train")(train_cmd.train)
    app.command("evaluate")(train_cmd.evaluate)
    app.command("methods")(methods_cmd.methods)
    return app


def __getattr__(name: str) -> Any:
    """``cli.main.app`` is built on first use (``from cli.main import app`` works as before)."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _exit_at_once_on_ctrl_c() -> Iterator[None]:
    """During the start-up imports, Ctrl-C prints ``interrupted`` and ends the process (status 130) at once.

    Nothing has been written yet, and a KeyboardInterrupt raised inside an extension's import can be
    swallowed by it (torch initialising numpy), leaving a half-imported module behind to fail later.
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

    signal.signal(signal.SIGINT, exit_now)
    try:
        # polars installs its own C-level SIGINT handler when imported (signal-hook, pola-rs/polars#20961),
        # behind Python's back: a Ctrl-C then sometimes killed the process (-SIGINT) or was lost. Import it
        # first and take SIGINT back, here and (by re-installing Python's handler) for the command's run.
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
    try:
        with _exit_at_once_on_ctrl_c():
            import typer

            try:
                from typer._click import exceptions as click_exceptions  # typer vendors click (0.2x)
            except ImportError:  # pragma: no cover (an older typer on top of click)
                from click import exceptions as click_exceptions  # type: ignore[no-redef]

            from cli import _shell

            app = build_app()
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
