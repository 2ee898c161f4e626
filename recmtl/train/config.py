"""The configuration of `recmtl train`: :class:`TrainConfig`, one frozen dataclass whose fields are the
options (their defaults, types and help are the only declaration: `recmtl train`'s command-line options
are generated from them), and the method, an aggregator whose own fields are its hyper-parameters.

Built like every config (:func:`recmtl.config.build`): defaults, then a TOML file, then the command line;
unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recmtl.aggregators import Aggregator, PMTRec, aggregator_class, check_option_names
from recmtl.config import coerce
from recmtl.errors import ConfigError
from recmtl.model import ENCODERS
from recmtl.tasks.base import SAMPLINGS


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
    coerced = {k: coerce(v, hints[k], f"{where}: method {name} option {k}") for k, v in options.items()}
    return dataclasses.replace(start, **coerced)


#: Auxiliary task names accepted by ``--aux`` (METHODS.md §2); ``rec`` is always on.
AUX_TASKS = ("social", "category", "coview", "cobuy", "align", "uniform", "rating")

#: The metric names ``--select-metric`` accepts: :data:`recmtl.eval.metrics.METRICS` (not imported, as
#: recmtl.eval imports this module; a test holds the two equal).
METRIC_NAMES = ("recall", "precision", "hit", "ndcg", "mrr", "map")


def _opt(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A config field with its one-line help (``flag`` overrides the command-line name). Defaults are
    immutable (an aggregator is a frozen dataclass), so they are shared as they are."""
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
        build=build_method,  # (recmtl.config.build calls it with a name or a [method] table)
    )
    mode: str = _opt("row", "row: per user/item row (personalised); global: one flattened vector per task.")
    # model and optimisation
    dim: int = _opt(64, "Embedding dimension d.")
    encoder: str = _opt(
        "mf",
        "Embeddings: mf (one user and one item table every task shares) or stem (a shared and a per-task "
        "table per entity, mixed by per-task gates that read the other tasks' tables through "
        "stop-gradient; STEM, AAAI 2024).",
    )
    stem_dim: int | None = _opt(
        None, "Width of STEM's task-specific tables; must equal --dim (default: --dim)."
    )
    stem_asymmetric: bool = _opt(False, "STEM: only the main task reads the other tasks' tables.")
    stem_no_stopgrad: bool = _opt(
        False, "STEM ablation: read the other tasks' tables with their gradient (no stop-gradient)."
    )
    stem_no_shared: bool = _opt(False, "STEM ablation: no shared tables, only the per-task ones.")
    init: str = _opt("normal", "Embedding init: normal (std --init-std) or xavier.")
    init_std: float = _opt(0.1, "Std of the normal init.")
    epochs: int = _opt(50, "Maximum epochs (early stopping may end sooner).")
    batch_size: int = _opt(2048, "Rec positives per step.")
    aux_batch_size: int | None = _opt(None, "Samples per auxiliary task per step (default: --batch-size).")
    aux_sampling: str = _opt(
        "independent",
        "[reading] independent: auxiliary batches drawn from their own tables; aligned: anchored on the rec "
        "batch (an out-edge of each rec user, the rec items' labels and item edges, the rec pairs' ratings; "
        "uniform for an anchor without one). Same for every method.",
    )
    negatives: int = _opt(1, "Negatives per positive for the BPR tasks.")
    lr: float = _opt(1e-3, "Adam learning rate.")
    seed: int = _opt(0, "Seed of init, sampling and shuffling.")
    device: str = _opt("auto", "auto (cuda if available), cpu or cuda.")
    fused_update: str = _opt(
        "auto",
        "Fused row update: the tasks' gradients combined straight into Adam's rows in one Triton kernel "
        "pass. auto (on with CUDA and triton installed), on or off.",
    )
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
            ("encoder", self.encoder, ENCODERS),
            ("aux_sampling", self.aux_sampling, SAMPLINGS),
            ("device", self.device, ("auto", "cpu", "cuda")),
            ("fused_update", self.fused_update, ("auto", "on", "off")),
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
        self._check_stem()
        if self.mode not in self.method.modes:
            supported = ", ".join(sorted(self.method.modes))
            raise ConfigError(
                f"--method {self.method.name} does not support --mode {self.mode} (supports: {supported})"
            )
        self.method.check_mode(self.mode)
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

    def _check_stem(self) -> None:
        """The STEM options need ``--encoder stem``; ``--stem-dim`` must be ``--dim``."""
        flags = ("stem_asymmetric", "stem_no_stopgrad", "stem_no_shared")
        given = [name for name in flags if getattr(self, name)]
        given += ["stem_dim"] if self.stem_dim is not None else []
        if given and self.encoder != "stem":
            raise ConfigError(f"{flag(given[0])} needs --encoder stem (found --encoder {self.encoder})")
        if self.stem_dim is not None and self.stem_dim != self.dim:
            raise ConfigError(
                f"--stem-dim {self.stem_dim}: must equal --dim {self.dim} (STEM sums the task-specific and "
                "shared rows, and every table lives in one row storage; see docs/training.md)"
            )
