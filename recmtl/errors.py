"""User-facing errors.

Every mistake a user can make (a missing file, a malformed row, an option out of range) is raised as a
:class:`RecmtlError` whose message is one line naming *what* was wrong and *where*. The CLI prints that
line to stderr and exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class RecmtlError(Exception):
    """A user error: one clear line, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataFormatError(RecmtlError):
    """An input file exists but does not follow the expected format."""


class ConfigError(RecmtlError):
    """An option, recipe or config file holds an invalid value."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training once the run directory exists: which epochs are kept and how to resume.

    ``last_epoch`` is the last epoch whose checkpoint (last.safetensors) was written, -1 if none was.
    """

    def __init__(self, run_dir: Path, last_epoch: int) -> None:
        super().__init__(str(run_dir), last_epoch)
        self.run_dir, self.last_epoch = Path(run_dir), last_epoch

    @staticmethod
    def kept(last_epoch: int) -> str:
        """What a run keeps after ``last_epoch`` (-1: none) finished: "epochs 0-2 kept", ..."""
        if last_epoch < 0:
            return "no epoch had finished"
        return "epoch 0 kept" if last_epoch == 0 else f"epochs 0-{last_epoch} kept"

    def __str__(self) -> str:
        if self.last_epoch < 0:
            what = f"no epoch had finished in {self.run_dir} (a resume starts from epoch 0)"
        elif self.last_epoch == 0:
            what = f"epoch 0 is kept in {self.run_dir}"
        else:
            what = f"epochs 0-{self.last_epoch} are kept in {self.run_dir}"
        return f"{what}; continue with: recmtl train --resume {self.run_dir}"
