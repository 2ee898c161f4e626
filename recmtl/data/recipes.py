"""Dataset recipes: one small TOML file per named dataset under ``datasets/``.

A recipe has a ``description``, a ``[prepare]`` table (any :class:`~recmtl.config.PrepareConfig` field) and
an optional ``[expected]`` table with the counts the manifest should show after preparing the documented
raw files (asserted by the tests on the real data). Unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recmtl.config import PrepareConfig, build, read_toml
from recmtl.data.sources import SOURCES
from recmtl.errors import ConfigError

TOP_LEVEL = {"description", "prepare", "expected"}


@dataclass(frozen=True)
class Recipe:
    path: Path
    description: str
    prepare: dict[str, Any]
    expected: dict[str, int] = field(default_factory=dict)

    def config(self, overrides: dict[str, Any] | None = None) -> PrepareConfig:
        """The recipe's PrepareConfig with ``overrides`` (e.g. from the command line) applied on top."""
        base = build(PrepareConfig, self.prepare, where=str(self.path))
        return build(PrepareConfig, overrides or {}, base=base, where="command line")


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file."""
    path = Path(path)
    data = read_toml(path)
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (a recipe has {', '.join(sorted(TOP_LEVEL))})")
    prepare = data.get("prepare", {})
    if not isinstance(prepare, dict):
        raise ConfigError(f"{path}: [prepare] must be a table")
    recipe = Recipe(path, str(data.get("description", "")), prepare, dict(data.get("expected", {})))
    source = recipe.config().source  # validate keys and types now, with the recipe's path in the message
    if source not in SOURCES:
        raise ConfigError(f"{path}: unknown source {source!r} (known: {', '.join(SOURCES)})")
    return recipe
