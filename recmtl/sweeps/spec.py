"""A sweep file (``sweeps/NAME.toml``): a matrix of training runs, methods × option grid × seeds.

```toml
name = "ciao-main"                 # default: the file stem
data = "data/ciao"                 # prepared dataset (a relative path is relative to the current directory)
runs_dir = "runs/sweeps/ciao-main" # default: runs/sweeps/<name>
seeds = [0, 1, 2]
[options]                          # TrainConfig options of every cell (as in a `train --config` file)
aux = ["social", "category"]
[grid]                             # TrainConfig options to cross (every combination)
batch_size = [1024, 2048]
[methods.single]                   # one table per method label (the method's name unless `method` is given)
[methods.pmtrec]
options = { combine = "unit" }     # fixed method options (as --method-opt)
grid = { alpha = [1.0, 1.1], tau = [0.5, 1.0] }   # method options to cross
[methods.pcgrad-global]
method = "pcgrad"
train = { mode = "global" }        # TrainConfig options of this label only
```

:meth:`Sweep.cells` expands it into :class:`Cell` s, each a validated TrainConfig and its run directory
``runs_dir/NAME`` (``pmtrec-alpha=1.1-tau=0.5-s0``: the label, the grid values of the keys that vary, the
seed). Every mistake is a ConfigError naming the file and the key; values are checked by the same code
as `recmtl train` (:func:`recmtl.config.build`, the method's own validation, ``TrainConfig.validate``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recmtl.config import build, read_toml
from recmtl.errors import ConfigError
from recmtl.train.config import TrainConfig

TOP_KEYS = ("name", "data", "runs_dir", "seeds", "options", "grid", "methods")
METHOD_KEYS = ("method", "options", "grid", "train")
#: TrainConfig options a sweep sets itself (top-level keys, cell names, [methods] tables).
RESERVED = {
    "data": "the top-level `data`",
    "seed": "the top-level `seeds`",
    "name": "the cell names",
    "method": "the [methods.LABEL] tables",
}
SAFE = re.compile(r"[A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: ``config`` trained into ``run_dir`` (= runs_dir / name)."""

    name: str  # label, varying grid values, seed: "pmtrec-alpha=1.1-tau=0.5-s0"
    label: str  # the [methods.LABEL] table it comes from
    seed: int
    group: str  # the name minus the seed: the runs `recmtl compare` pools over seeds
    run_dir: Path
    config: TrainConfig
    varied: dict[str, Any] = field(default_factory=dict)  # grid key -> value, for the keys that vary


@dataclass(frozen=True)
class MethodSpec:
    """A [methods.LABEL] table."""

    label: str
    method: str
    options: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    train: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    data: Path
    runs_dir: Path
    seeds: tuple[int, ...]
    options: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    methods: tuple[MethodSpec, ...]

    def with_seeds(self, seeds: tuple[int, ...]) -> Sweep:
        """This sweep over only those of its seeds in ``seeds`` (a first pass over fewer seeds: the cells
        keep their names, so running the whole file later skips them); ConfigError for a seed it lacks."""
        missing = [s for s in seeds if s not in self.seeds]
        if missing or not seeds:
            found = ",".join(map(str, missing)) or "(none)"
            raise ConfigError(f"seeds {found}: not among {self.path}'s seeds {list(self.seeds)}")
        return replace(self, seeds=tuple(s for s in self.seeds if s in seeds))

    def with_labels(self, labels: tuple[str, ...]) -> Sweep:
        """This sweep over only its [methods.LABEL] tables named in ``labels`` (cells keep their names, as
        in :meth:`with_seeds`); ConfigError naming a label it lacks."""
        known = [m.label for m in self.methods]
        missing = [x for x in labels if x not in known]
        if missing or not labels:
            found = ",".join(missing) or "(none)"
            raise ConfigError(
                f"{found}: not a [methods.LABEL] table of {self.path} (tables: {', '.join(known)})"
            )
        return replace(self, methods=tuple(m for m in self.methods if m.label in labels))

    def cells(self) -> list[Cell]:
        """Every cell, in a stable order: methods (file order) × [grid] × method grid × seeds (last key
        fastest). ConfigError naming the file and the key for any invalid combination."""
        where = str(self.path)
        base = _config({"data": self.data, **self.options}, None, f"{where} [options]")
        cells: list[Cell] = []
        for spec in self.methods:
            table = f"{where} [methods.{spec.label}]"
            crossed = set(self.grid) & set(spec.train)
            if crossed:
                raise ConfigError(f"{table} train: {sorted(crossed)[0]!r} is also crossed in [grid]")
            own = _config(spec.train, base, f"{table} train")
            method = {"name": spec.method, **spec.options}
            own = _config({"method": method}, own, f"{table} options" if spec.options else table)
            for key, values in spec.grid.items():  # each value alone first: the error names it
                for value in values:
                    _config({"method": method | {key: value}}, own, f"{table} grid {key}={_shown(value)}")
            for key, values in self.grid.items():
                for value in values:
                    _config({key: value}, own, f"{where} [grid] {key}={_shown(value)}")
            for combo in itertools.product(*self.grid.values()):
                train_values = dict(zip(self.grid, combo, strict=True))
                for method_combo in itertools.product(*spec.grid.values()):
                    method_values = dict(zip(spec.grid, method_combo, strict=True))
                    varied = {k: v for k, v in train_values.items() if len(self.grid[k]) > 1}
                    varied |= {k: v for k, v in method_values.items() if len(spec.grid[k]) > 1}
                    group = "-".join([spec.label, *(f"{k}={_shown(v)}" for k, v in varied.items())])
                    for seed in self.seeds:
                        name = f"{group}-s{seed}"
                        values = train_values | {"method": method | method_values, "seed": seed, "name": name}
                        config = _config(values, own, f"{where}: cell {name}")
                        run_dir = self.runs_dir / name
                        cells.append(Cell(name, spec.label, seed, group, run_dir, config, varied))
        names = [c.name for c in cells]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ConfigError(f"{where}: two cells are named {duplicate!r} (make labels or values differ)")
        return cells


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file (every cell's config is built and validated)."""
    path = Path(path)
    raw = read_toml(path)
    where = str(path)
    _known(raw, TOP_KEYS, where)
    name = raw.get("name", path.stem)
    _safe(name, f"{where}: name")
    if "data" not in raw:
        raise ConfigError(f"{where}: missing key 'data' (the prepared dataset, e.g. \"data/synthetic\")")
    data = _path(raw["data"], f"{where}: data")
    runs_dir = _path(raw.get("runs_dir", f"runs/sweeps/{name}"), f"{where}: runs_dir")
    seeds = raw.get("seeds", [0])
    if not _values(seeds, f"{where}: seeds") or not all(type(s) is int for s in seeds):
        raise ConfigError(f"{where}: seeds: expected a list of integers, e.g. seeds = [0, 1, 2]")
    options = _table(raw.get("options", {}), f"{where}: options")
    for key in options:
        _not_reserved(key, f"{where} [options]")
    grid = _grid(raw.get("grid", {}), f"{where} [grid]", reserved=True)
    methods_raw = _table(raw.get("methods", {}), f"{where}: methods")
    if not methods_raw:
        raise ConfigError(f"{where}: no method: add a [methods.LABEL] table per method, e.g. [methods.ew]")
    methods = []
    for label, table in methods_raw.items():
        at = f"{where} [methods.{label}]"
        _safe(label, f"{at}: the label")
        table = _table(table, at)
        _known(table, METHOD_KEYS, at)
        method = table.get("method", label)
        if not isinstance(method, str):
            raise ConfigError(f"{at}: method: expected a method name, got {method!r}")
        method_options = _table(table.get("options", {}), f"{at}: options")
        method_grid = _grid(table.get("grid", {}), f"{at} grid", reserved=False)
        both = set(method_options) & set(method_grid)
        if both:
            raise ConfigError(f"{at}: option {sorted(both)[0]!r} is both fixed (options) and crossed (grid)")
        clash = set(method_grid) & {k for k, v in grid.items() if len(v) > 1}
        if clash:
            raise ConfigError(f"{at} grid: {sorted(clash)[0]!r} is also crossed in [grid] (ambiguous names)")
        train = _table(table.get("train", {}), f"{at}: train")
        for key in train:
            _not_reserved(key, f"{at} train")
        methods.append(MethodSpec(label, method, method_options, method_grid, train))
    sweep = Sweep(path, name, data, runs_dir, tuple(seeds), options, grid, tuple(methods))
    sweep.cells()  # every cell checked now, before anything runs
    return sweep


# --------------------------------------------------------------------------------------------------
# checks


def _config(values: dict[str, Any], base: TrainConfig | None, where: str) -> TrainConfig:
    """TrainConfig ``values`` on ``base``, validated; any ConfigError starts with ``where``."""
    try:
        config = build(TrainConfig, values, base=base, where=where)
        return config.validate()
    except ConfigError as exc:
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _known(table: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(keys)})")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return Path(value)


def _values(value: Any, where: str) -> list[Any]:
    """A non-empty list without repeated values."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of values, got {value!r}")
    if not value:
        raise ConfigError(f"{where}: empty list (give at least one value)")
    for i, v in enumerate(value):
        if v in value[:i]:
            raise ConfigError(f"{where}: {v!r} is listed twice")
    return value


def _grid(value: Any, where: str, *, reserved: bool) -> dict[str, tuple[Any, ...]]:
    grid = _table(value, where)
    for key in grid:
        if reserved:
            _not_reserved(key, where)
        _values(grid[key], f"{where}: {key}")
    return {k: tuple(v) for k, v in grid.items()}


def _not_reserved(key: str, where: str) -> None:
    if key in RESERVED:
        raise ConfigError(f"{where}: key {key!r} is set by {RESERVED[key]}, not here")


def _safe(name: Any, where: str) -> None:
    if not isinstance(name, str) or not SAFE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{where}: {name!r} is not usable in a directory name (letters, digits, . _ + -)")


def _shown(value: Any) -> str:
    """A grid value as it appears in a cell name (filesystem-safe)."""
    if isinstance(value, list | tuple):
        return "+".join(_shown(v) for v in value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)
