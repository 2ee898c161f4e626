"""Start-up: a command imports only its own module, so `recmtl --help`, `--version`, `prepare` and `info`
start without torch (issue 7, item 12); and the listing of `recmtl --help` matches the commands."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from cli.main import COMMANDS, build_app, command_of
from tests.train.conftest import prepare_tiny

PROBE = """
import sys
from cli.main import run
code = run(sys.argv[1:])
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code, file=sys.stderr)
"""


def started(*args: str) -> tuple[str, int, str]:
    """Run ``recmtl ARGS`` in a fresh interpreter: (whether torch got imported, exit status, stdout)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    marker, code = proc.stderr.strip().splitlines()[-1].split()
    return marker, int(code), proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["prepare", "--help"], ["info", "--help"]])
def test_help_version_prepare_and_info_start_without_torch(args):
    marker, code, out = started(*args)
    assert code == 0 and out.strip()
    assert marker == "NO-TORCH"


def test_prepare_and_info_run_without_torch(tmp_path):
    data = prepare_tiny(tmp_path / "tiny")
    marker, code, out = started("info", str(data))
    assert (marker, code) == ("NO-TORCH", 0) and "users" in out
    marker, code, _ = started(
        "prepare",
        "--out",
        str(tmp_path / "again"),
        "--users",
        "300",
        "--items",
        "200",
        "--interactions",
        "6000",
        "--quiet",
    )
    assert (marker, code) == ("NO-TORCH", 0) and (tmp_path / "again" / "manifest.json").is_file()


def test_train_help_does_import_torch_and_lists_its_options():
    marker, code, out = started("train", "--help")
    assert (marker, code) == ("TORCH", 0) and "--method-opt" in out


def test_the_listing_shows_every_command_with_its_docstring_summary():
    for name, (module, function, summary) in COMMANDS.items():
        doc = getattr(importlib.import_module(module), function).__doc__
        assert doc.strip().splitlines()[0] == summary, name
    real = build_app()
    assert sorted(c.name for c in real.registered_commands) == sorted(COMMANDS)
    listing = build_app(())
    assert [c.name for c in listing.registered_commands] == list(COMMANDS)


@pytest.mark.parametrize(
    "args, command",
    [
        (["--help"], None),
        (["train", "data/x"], "train"),
        (["--version"], None),
        (["bogus"], None),
        (["evaluate", "--help"], "evaluate"),
    ],
)
def test_command_of(args, command):
    assert command_of(args) == command


def test_an_unknown_command_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "bogus"], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "bogus" in lines[0] and lines[0].startswith("error:")
