"""A small reproducible study: train and evaluate methods x seeds on one prepared dataset, then print a
Markdown table of test metrics (mean ± std over seeds) — the table in docs/results.md.

Completed runs (with a metrics.json) are reused, so an interrupted study continues where it stopped.
Usage (see the Makefile's study-* targets):
    python benchmarks/study.py --data data/ciao --aux social,category --methods single,ew,pmtrec \
        --seeds 0,1,2 --lr 0.005 --runs-dir runs/study-ciao
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import print_machine  # noqa: E402

from recmtl.config import build, read_toml  # noqa: E402
from recmtl.eval.run_eval import evaluate_run  # noqa: E402
from recmtl.train.config import TrainConfig  # noqa: E402
from recmtl.train.loop import fit  # noqa: E402

METRICS = ("recall@20", "ndcg@20", "recall@40", "ndcg@40")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="TOML with TrainConfig options shared by every run")
    parser.add_argument("--aux", default=None, help="auxiliary tasks (overrides --config)")
    parser.add_argument("--methods", default="single,ew,pmtrec")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/study"))
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    print_machine()
    base = (
        build(TrainConfig, read_toml(args.config), where=str(args.config)) if args.config else TrainConfig()
    )
    overrides = {"data": args.data}
    overrides |= {
        k: v for k, v in {"aux": args.aux, "lr": args.lr, "epochs": args.epochs}.items() if v is not None
    }
    base = build(TrainConfig, overrides, base=base, where="command line")
    results: dict[str, list[dict[str, float]]] = {}
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run_dir = args.runs_dir / f"{args.data.name}-{method}-s{seed}"
            if not (run_dir / "metrics.json").is_file():
                config = build(TrainConfig, {"method": method, "seed": seed}, base=base, where="study")
                start = time.perf_counter()
                if run_dir.exists():
                    fit(config, run_dir, resume=(run_dir / "last.safetensors").is_file())
                else:
                    fit(config, run_dir)
                evaluate_run(run_dir, split="test")
                print(
                    f"{run_dir.name}: trained and evaluated in {time.perf_counter() - start:.0f}s", flush=True
                )
            metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
            results.setdefault(method, []).append(metrics)
    table = markdown_table(results, base) + "\n\n" + paired_tests(args, results)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


def paired_tests(
    args: argparse.Namespace, results: dict[str, list[dict[str, float]]], metric: str = "ndcg@20"
) -> str:
    """Per seed, a paired t-test over users of each method against the first one (per_user.parquet)."""
    import polars as pl
    from scipy import stats

    methods = list(results)
    reference, lines = methods[0], []
    for method in methods[1:]:
        parts = []
        for seed in (int(s) for s in args.seeds.split(",")):
            runs = {
                m: args.runs_dir / f"{args.data.name}-{m}-s{seed}" / "per_user.parquet"
                for m in (method, reference)
            }
            joined = pl.read_parquet(runs[method]).join(
                pl.read_parquet(runs[reference]), on="user_id", suffix="_ref"
            )
            diff = float((joined[metric] - joined[f"{metric}_ref"]).mean())
            p = float(stats.ttest_rel(joined[metric], joined[f"{metric}_ref"]).pvalue)
            parts.append(f"seed {seed}: {diff:+.4f} (p = {p:.3g})")
        lines.append(f"- {method} − {reference}, test {metric}, per-user paired t-test: " + "; ".join(parts))
    return "\n".join(lines)


def markdown_table(results: dict[str, list[dict[str, float]]], config: TrainConfig) -> str:
    header = "| method | " + " | ".join(f"test {m}" for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for method, runs in results.items():
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {std:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    aux = ",".join(config.aux) or "none"
    lines.append("")
    seeds = len(next(iter(results.values())))
    lines.append(
        f"mean ± std over {seeds} seeds; aux {aux}; lr {config.lr}; dim {config.dim}; "
        f"batch {config.batch_size} (aux {config.aux_batch_size or config.batch_size}); "
        f"epochs ≤ {config.epochs}, early stopping on valid {config.select_metric} "
        f"(patience {config.patience})."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
