"""User-facing errors.

Every mistake a user can make (a missing file, a malformed row, an option out of range) is raised as a
:class:`RecmtlError` whose message is one line naming *what* was wrong and *where*. The CLI prints that
line to stderr and exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RecmtlError(Exception):
    """A user error: one clear line, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataFormatError(RecmtlError):
    """An input file exists but does not follow the expected format."""


class ConfigError(RecmtlError):
    """An option, recipe or config file holds an invalid value."""
