"""The training step before and after a change, measured in one run: ``bench_train_step.py`` of two
checkouts run alternately (before, after, after, before, ...) as separate processes on the same prepared
data, each reporting its median ms/step per method; this script prints the median over the alternations
and the after/before ratio per method, with the machine.

Usage:
    git worktree add /tmp/before <commit>      # the code before the change
    python benchmarks/bench_step_before_after.py --before /tmp/before --data data/ciao [--pairs 4]

Both checkouts run with this interpreter and the same options (``--batch-sizes`` one size, ``--steps``,
``--rounds``), so each is measured by its own ``bench_train_step.py`` exactly as it was committed.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

AFTER = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\s+(pmtrec|ew|dense_reference)\s+([0-9.]+) ms/step")


def run(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    """One process of ``tree``'s step benchmark; its median ms/step per step kind."""
    command = [
        sys.executable,
        str(tree / "benchmarks" / "bench_train_step.py"),
        "--data",
        str(args.data.resolve()),
        "--batch-sizes",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--rounds",
        str(args.rounds),
    ]
    out = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True).stdout
    found = {m.group(1): float(m.group(2)) for m in map(LINE.match, out.splitlines()) if m}
    if not {"pmtrec", "ew"} <= set(found):
        raise SystemExit(f"no step figures in the output of {tree}:\n{out}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (e.g. data/ciao)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=4, help="before/after alternations (order flips each)")
    args = parser.parse_args()
    print_machine()
    for name, tree in (("before", args.before), ("after", AFTER)):
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
        )
        print(f"{name}: {tree} at {sha.stdout.strip() or '?'}")
    print(
        f"data {args.data} · batch {args.batch_size} · {args.rounds} rounds of {args.steps} steps per process"
    )
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for pair in range(args.pairs):
        order = [("before", args.before), ("after", AFTER)]
        for name, tree in order if pair % 2 == 0 else order[::-1]:
            results[name].append(run(tree, args))
            print(
                f"  pair {pair} {name:<6} " + "  ".join(f"{k} {v:.2f}" for k, v in results[name][-1].items())
            )
    print("median over processes, ms/step; after/before: median of the ratios within each pair (adjacent in")
    print("time, so robust to the machine's drift) and, in brackets, the ratio of the medians:")
    for kind in ("pmtrec", "ew"):
        before = statistics.median(r[kind] for r in results["before"])
        after = statistics.median(r[kind] for r in results["after"])
        paired = statistics.median(
            a[kind] / b[kind] for a, b in zip(results["after"], results["before"], strict=True)
        )
        print(
            f"  {kind:<7} before {before:7.2f}   after {after:7.2f}   "
            f"after/before {paired:.3f}x ({after / before:.3f}x)"
        )
    for name in ("before", "after"):
        ratio = statistics.median(r["pmtrec"] / r["ew"] for r in results[name])
        print(f"  pmtrec / ew ({name}): {ratio:.3f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
