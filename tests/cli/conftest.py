"""What the command-line tests share: quick training flags, the one-line-error check, one torch thread."""

from __future__ import annotations

from tests.threads import one_torch_thread  # noqa: F401  (autouse)

#: Training flags that make a run take a fraction of a second per epoch on the tiny dataset; QUICK adds
#: --quiet (one log line per epoch instead of progress bars).
TRAIN_FLAGS = ("--dim", 16, "--batch-size", 256, "--lr", 0.01, "--device", "cpu")
QUICK = (*TRAIN_FLAGS, "--quiet")


def stderr_lines(text: str) -> list[str]:
    """The non-blank lines of ``text``."""
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(result, *fragments, code: int = 1, empty_stdout: bool = False) -> None:
    """A CliRunner ``result`` that failed with exit ``code`` and exactly one ``error: ...`` line on stderr
    holding every fragment, no traceback, and (``empty_stdout``) nothing at all on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output + result.stderr
    if empty_stdout:
        assert result.stdout == "", repr(result.stdout)  # not even a blank line before the error
