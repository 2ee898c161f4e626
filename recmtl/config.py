"""Typed, frozen configuration dataclasses and strict TOML loading.

Every stage takes one config object. A config is built from (in increasing priority) the dataclass
defaults, a TOML file (a recipe or ``--config run.toml``) and command-line overrides. Unknown keys are
errors, never silently ignored, and every resolved config is saved with its output.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recmtl.errors import ConfigError

# --------------------------------------------------------------------------------------------------
# prepare


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and signal knobs of the synthetic generator (DATA.md §3).

    Each ``*_signal`` is in [0, 1]: 1 means the auxiliary table follows the planted latent structure
    exactly, 0 means it is pure noise (uniformly random edges / labels) with the same size.
    """

    users: int = 4000
    items: int = 3000
    interactions: int = 120_000
    factors: int = 16
    categories: int = 20
    social_per_user: float = 8.0
    coview_per_item: float = 6.0
    categories_per_item: int = 1
    social_signal: float = 0.8
    category_signal: float = 0.8
    coview_signal: float = 0.8
    preference_temperature: float = 0.5
    activity_sigma: float = 1.2
    popularity_exponent: float = 0.8
    rating_noise: float = 0.5
    chunk_interactions: int = 2_000_000


@dataclass(frozen=True)
class PrepareConfig:
    """Everything `recmtl prepare` needs. Defaults are the recorded processing order of DATA.md §2."""

    source: str = "synthetic"
    raw: Path | None = None
    name: str | None = None
    # parsing
    mat_key: str | None = None
    trust_mat_key: str | None = None
    columns: str | None = None
    sep: str | None = None
    header: str = "auto"  # auto | yes | no
    meta: Path | None = None
    social_file: Path | None = None
    category_file: Path | None = None
    item_item_file: Path | None = None
    train_file: Path | None = None
    valid_file: Path | None = None
    test_file: Path | None = None
    category_top_k: int = 1
    # filtering
    min_rating: float | None = None  # None: 4 for explicit ratings, keep all for implicit feedback
    k_core: int = 0
    k_core_items: int | None = None  # None: same as k_core
    symmetric_social: bool = False
    # split
    split: str = "random:0.8,0.1,0.1"
    seed: int = 0
    # which auxiliary tables to write: any of social, category, item_item (None: all available)
    aux: tuple[str, ...] | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


# --------------------------------------------------------------------------------------------------
# generic strict loading


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a TOML/CLI value to the dataclass field type, or raise ConfigError naming ``where``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build(annotation, value, where=where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in value)
    if annotation is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, values: dict[str, Any], *, base: Any = None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``values`` on top of ``base`` (or the defaults).

    Unknown keys raise :class:`ConfigError` naming the key and ``where`` it came from.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    current = base if base is not None else cls()
    updates: dict[str, Any] = {}
    for key, value in values.items():
        annotation = hints[key]
        custom = fields[key].metadata.get("build")  # a field that builds its own value (a method)
        if custom is not None:
            updates[key] = custom(value, getattr(current, key), where=where)
        elif dataclasses.is_dataclass(annotation) and isinstance(value, dict):
            updates[key] = build(annotation, value, base=getattr(current, key), where=f"{where}.{key}")
        else:
            updates[key] = coerce(value, annotation, f"{where}: {key}")
    return dataclasses.replace(current, **updates)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning missing files and syntax errors into one-line ConfigErrors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text)") from None


def to_jsonable(obj: Any) -> Any:
    """A JSON-friendly view of a (nested) config dataclass: paths as strings, tuples as lists, an object with
    a ``to_config()`` (a method) as what that returns."""
    if hasattr(obj, "to_config"):
        return to_jsonable(obj.to_config())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj
