"""What a run records about the code that made it: package versions and the source commit."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import recmtl

DEPENDENCIES = ("numpy", "polars", "pyarrow", "safetensors", "scipy", "triton")


def package_versions() -> dict[str, str]:
    """Versions of Python and of every package a run depends on, and recmtl's source commit
    (``recmtl_commit``, see :func:`source_commit`)."""
    out = {
        "python": platform.python_version(),
        "recmtl": recmtl.__version__,
        "recmtl_commit": _this_process_commit(),
        "torch": torch.__version__,
    }
    for name in DEPENDENCIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.cache
def _this_process_commit() -> str:
    """:func:`source_commit` once per process: the code a process runs is the code it imported, whatever
    happens to the checkout afterwards (and a sweep's cells need not each ask git, ~20 ms)."""
    return source_commit()


def source_commit(root: Path | None = None) -> str:
    """The git commit of the checkout recmtl runs from (``root``, default: the folder above the package),
    with ``+dirty`` when its tracked files under recmtl/ differ from it; ``unknown`` when recmtl is not
    run from a git checkout of its own (an installed wheel, no git)."""
    root = (root or Path(recmtl.__file__).resolve().parents[1]).resolve()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    if not (root / "pyproject.toml").is_file() or not (root / "recmtl").is_dir():
        return "unknown"
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return "unknown"  # e.g. site-packages inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "recmtl")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
