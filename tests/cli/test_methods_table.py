"""The README's methods table is `recmtl methods --markdown`, one line per registered method."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from cli.methods import markdown_table
from recmtl.aggregators import AGGREGATORS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_method_says_what_it_does_and_cites_its_paper():
    for name, cls in AGGREGATORS.items():
        assert cls.summary.strip() and "|" not in cls.summary, name
        assert cls.paper.strip() and "|" not in cls.paper, name


def test_markdown_has_one_line_per_method_in_registry_order():
    out = CliRunner().invoke(app, ["methods", "--markdown"])
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(AGGREGATORS)


def test_the_readme_holds_the_current_table():
    assert markdown_table() in README.read_text(encoding="utf-8"), (
        "README.md's methods table is stale: paste the output of `recmtl methods --markdown`"
    )
