"""recmtl_commit in a run's versions: the checkout's commit, +dirty for changed library code, else unknown."""

from __future__ import annotations

import subprocess
from pathlib import Path

from recmtl.provenance import source_commit


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def checkout(root: Path) -> Path:
    """A git repository shaped like recmtl's: pyproject.toml and recmtl/, one commit."""
    (root / "recmtl").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "recmtl" / "step.py").write_text("x = 1\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return root


def test_a_clean_checkout_records_its_commit(tmp_path):
    root = checkout(tmp_path / "repo")
    assert source_commit(root) == git(root, "rev-parse", "HEAD")


def test_changed_library_code_is_marked_dirty_and_untracked_files_are_not(tmp_path):
    root = checkout(tmp_path / "repo")
    (root / "notes.txt").write_text("untracked\n")
    assert not source_commit(root).endswith("+dirty")
    (root / "recmtl" / "step.py").write_text("x = 2\n")
    assert source_commit(root) == git(root, "rev-parse", "HEAD") + "+dirty"


def test_no_checkout_of_its_own_is_unknown(tmp_path):
    plain = tmp_path / "plain"
    (plain / "recmtl").mkdir(parents=True)
    (plain / "pyproject.toml").write_text("")
    assert source_commit(plain) == "unknown"  # not a git repository
    outer = checkout(tmp_path / "outer")
    inner = outer / "site-packages"
    (inner / "recmtl").mkdir(parents=True)
    (inner / "pyproject.toml").write_text("")
    assert source_commit(inner) == "unknown"  # inside another repository
    assert source_commit(tmp_path) == "unknown"  # not shaped like recmtl
