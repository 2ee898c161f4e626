"""Typed, frozen configuration dataclasses and strict TOML loading.

Every stage takes one config object. A config is built from (in increasing priority) the dataclass
defaults, a TOML file (a recipe or ``--config run.toml``) and command-line overrides. Unknown keys are
errors, never silently ignored, and every resolved config is saved with its output.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recmtl.aggregators import Aggregator, PMTRec, aggregator_class, check_option_names
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


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a TOML/CLI value to the dataclass field type, or raise ConfigError naming ``where``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
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
        return tuple(_coerce(v, args[0], where) for v in value)
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
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    current = base if base is not None else cls()
    updates: dict[str, Any] = {}
    for key, value in values.items():
        annotation = hints[key]
        if annotation is Aggregator:
            updates[key] = build_method(value, getattr(current, key), where=where)
        elif dataclasses.is_dataclass(annotation) and isinstance(value, dict):
            updates[key] = build(annotation, value, base=getattr(current, key), where=f"{where}.{key}")
        else:
            updates[key] = _coerce(value, annotation, f"{where}: {key}")
    return dataclasses.replace(current, **updates)


def build_method(value: Any, base: Aggregator, *, where: str = "config") -> Aggregator:
    """The method (an aggregator with its hyper-parameters) described by ``value`` on top of ``base``.

    ``value`` is a method name (``"ew"``), a table ``{"name": ..., option: value, ...}`` (the ``[method]``
    table of a TOML file, ``--method`` with ``--method-opt``; without ``name``, ``base``'s method) or an
    aggregator. Options given for the same method as ``base`` replace its values; a different method
    starts from its own defaults. Values may be strings (from the command line): they are converted to
    the option's type. An option the method does not have is a ConfigError naming it.
    """
    if isinstance(value, Aggregator):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: method: expected a name or a table, got {value!r}")
    options = dict(value)
    name = options.pop("name", base.name)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: method name: expected a string, got {name!r}")
    try:
        cls = aggregator_class(name)
    except ConfigError as exc:  # on the command line: "--method NAME: unknown method; known: ..."
        label = flag("method") if where == "command line" else f"{where}: method"
        raise ConfigError(f"{label} {exc}") from None
    try:
        check_option_names(cls, options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    hints = typing.get_type_hints(cls)
    start = base if type(base) is cls else cls()
    coerced = {k: _coerce(v, hints[k], f"{where}: method {name} option {k}") for k, v in options.items()}
    return dataclasses.replace(start, **coerced)


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
    """A JSON-friendly view of a (nested) config dataclass: paths as strings, tuples as lists, a method as
    ``{"name": ..., option: value, ...}``."""
    if isinstance(obj, Aggregator):
        return {"name": obj.name} | to_jsonable(dataclasses.asdict(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------------
# train

#: Auxiliary task names accepted by ``--aux`` (METHODS.md §2); ``rec`` is always on.
AUX_TASKS = ("social", "category", "coview", "cobuy", "align", "uniform", "rating")

#: The metric names ``--select-metric`` accepts: :data:`recmtl.eval.metrics.METRICS` (not imported, as
#: recmtl.eval imports this module; a test holds the two equal).
METRIC_NAMES = ("recall", "precision", "hit", "ndcg", "mrr", "map")


def _opt(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A config field with its one-line help (``flag`` overrides the command-line name)."""
    if isinstance(default, Aggregator):
        return field(default_factory=lambda: default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def flag(name: str) -> str:
    """The command-line flag of TrainConfig field ``name`` (``batch_size`` -> ``--batch-size``)."""
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(name)
    return (f.metadata.get("flag") if f else None) or "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `recmtl train` needs (METHODS.md §1-4, EVALUATION.md protocol).

    Each field is one option: its default, type and help here are the only declaration (the command-line
    options of `recmtl train` are generated from them). The method's own hyper-parameters live in the
    method (``method``, an aggregator whose fields they are), never here.
    """

    data: Path = _opt(Path("data/synthetic"), "Prepared dataset (recmtl prepare output).")
    name: str | None = _opt(
        None,
        "Run name (default: DATA-METHOD-AUX-sSEED, or the first free of DATA-METHOD-AUX-sSEED-2, -3, ... "
        "when that run directory exists).",
    )
    aux: tuple[str, ...] = _opt((), f"Auxiliary tasks, comma-separated: {', '.join(AUX_TASKS)}.")
    method: Aggregator = _opt(
        PMTRec(),
        "Gradient aggregation method; its options with --method-opt KEY=VALUE. "
        "`recmtl methods` lists every method with its options, ranges and paper.",
    )
    mode: str = _opt("row", "row: per user/item row (personalised); global: one flattened vector per task.")
    # model and optimisation
    dim: int = _opt(64, "Embedding dimension d.")
    init: str = _opt("normal", "Embedding init: normal (std --init-std) or xavier.")
    init_std: float = _opt(0.1, "Std of the normal init.")
    epochs: int = _opt(50, "Maximum epochs (early stopping may end sooner).")
    batch_size: int = _opt(2048, "Rec positives per step.")
    aux_batch_size: int | None = _opt(None, "Samples per auxiliary task per step (default: --batch-size).")
    negatives: int = _opt(1, "Negatives per positive for the BPR tasks.")
    lr: float = _opt(1e-3, "Adam learning rate.")
    seed: int = _opt(0, "Seed of init, sampling and shuffling.")
    device: str = _opt("auto", "auto (cuda if available), cpu or cuda.")
    # validation and early stopping
    eval_every: int = _opt(1, "Validate every N epochs.")
    patience: int = _opt(10, "Stop after N validations without improvement.")
    select_metric: str = _opt("ndcg@20", "Validation metric for model selection.")
    ks: tuple[int, ...] = _opt((10, 20, 40), "Cut-offs for validation metrics.", flag="--k")
    eval_users_chunk: int = _opt(512, "Users ranked at a time during validation.")

    def __post_init__(self) -> None:
        if not isinstance(self.method, Aggregator):  # a name or a table, e.g. TrainConfig(method="ew")
            object.__setattr__(self, "method", build_method(self.method, PMTRec(), where="method"))

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first option out of range; return self."""
        unknown = [a for a in self.aux if a not in AUX_TASKS]
        if unknown:
            raise ConfigError(f"--aux: unknown task {unknown[0]!r} (known: {', '.join(AUX_TASKS)})")
        if len(set(self.aux)) != len(self.aux):
            raise ConfigError(f"--aux: a task is listed twice in {','.join(self.aux)}")
        choices = [
            ("mode", self.mode, ("row", "global")),
            ("init", self.init, ("normal", "xavier")),
            ("device", self.device, ("auto", "cpu", "cuda")),
        ]
        for name, value, allowed in choices:
            if value not in allowed:
                expected = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
                raise ConfigError(f"{flag(name)} {value}: expected {expected}")
        checks = [
            (self.dim >= 1, "dim", self.dim, "at least 1"),
            (self.epochs >= 1, "epochs", self.epochs, "at least 1"),
            (self.batch_size >= 1, "batch_size", self.batch_size, "at least 1"),
            ((self.aux_batch_size or 1) >= 1, "aux_batch_size", self.aux_batch_size, "at least 1"),
            (self.negatives >= 1, "negatives", self.negatives, "at least 1"),
            (0 < self.lr < math.inf, "lr", self.lr, "a positive finite number"),
            (0 < self.init_std < math.inf, "init_std", self.init_std, "a positive finite number"),
            (self.eval_every >= 1, "eval_every", self.eval_every, "at least 1"),
            (self.patience >= 1, "patience", self.patience, "at least 1"),
            (len(self.ks) > 0 and all(k >= 1 for k in self.ks), "ks", self.ks, "positive cut-offs"),
            (self.eval_users_chunk >= 1, "eval_users_chunk", self.eval_users_chunk, "at least 1"),
        ]
        for ok, name, value, expected in checks:
            if not ok or (isinstance(value, float) and value != value):
                raise ConfigError(f"{flag(name)} {value} out of range: expected {expected}")
        if self.mode not in self.method.modes:
            supported = ", ".join(sorted(self.method.modes))
            raise ConfigError(
                f"--method {self.method.name} does not support --mode {self.mode} (supports: {supported})"
            )
        metric, _, k = self.select_metric.partition("@")
        if metric not in METRIC_NAMES:
            raise ConfigError(
                f"--select-metric {self.select_metric!r}: unknown metric {metric!r} "
                f"(expected NAME@K with NAME one of {', '.join(METRIC_NAMES)})"
            )
        if not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(
                f"--select-metric {self.select_metric!r}: expected NAME@K with K in {list(self.ks)}"
            )
        return self


def upgrade_train_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig table as recmtl 0.1 saved it (PMTRec's options flat beside the method name) in
    today's form (the options inside the method's table); anything else is returned unchanged."""
    flat = ("alpha", "tau", "combine", "focus")
    if not isinstance(saved.get("method"), str) or not any(k in saved for k in flat):
        return saved
    out = {k: v for k, v in saved.items() if k not in flat}
    if saved["method"] == "pmtrec":
        out["method"] = {"name": "pmtrec"} | {k: saved[k] for k in flat if k in saved}
    return out
