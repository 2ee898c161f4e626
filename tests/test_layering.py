"""The library's packages form layers: no import cycle between them, and ``recmtl/`` never imports the CLI.

Read from the source with ``ast`` (what the modules import, at any depth, including function-level imports),
so the test holds for code paths that are not executed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "recmtl"


def _unit(module: str) -> str:
    """The layer a module belongs to: ``recmtl.<package>`` or ``recmtl.<module>`` for a top-level file."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _module_name(path: Path) -> str:
    rel = path.relative_to(LIBRARY.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the ``recmtl`` modules ``path`` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
    return {n for n in found if n == "recmtl" or n.startswith(("recmtl.", "cli"))}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in LIBRARY.rglob("*.py"):
        unit = _unit(_module_name(path))
        targets = {_unit(n) for n in _imports(path) if n.startswith("recmtl.")} - {unit}
        graph.setdefault(unit, set()).update(targets)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_layer_graph_is_read_from_the_source():
    graph = _graph()
    assert "recmtl.train" in graph and "recmtl.data" in graph["recmtl.train"]
    assert "recmtl.aggregators" in graph


def test_no_package_imports_a_package_that_imports_it():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_the_library_never_imports_the_cli(path):
    assert not {n for n in _imports(path) if n == "cli" or n.startswith("cli.")}


def test_every_library_folder_is_a_package():
    for folder in [LIBRARY, *[p for p in LIBRARY.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        assert (folder / "__init__.py").is_file(), folder
