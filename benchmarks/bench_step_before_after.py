"""The training step before and after a change, measured in one process: the code before the change is
imported beside today's under another name, both steps are built on the same prepared data, and their
rounds are interleaved (the order rotates every round), so the machine's drift hits both alike.

Usage:
    git worktree add /tmp/before <commit>      # the code before the change
    python benchmarks/bench_step_before_after.py --before /tmp/before --data data/ciao [--aux social,category]
        [--rounds 15]

``--before DIR``'s ``recmtl/`` package is copied into a temporary directory as ``recmtl_before`` (every
``recmtl`` name in its sources renamed), so each version runs its own step exactly as committed. Prints the
median ms/step of ``pmtrec`` and ``ew`` for each version, the after/before ratio (median of the per-round
ratios), and pmtrec / ew for each version, with the machine.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import print_machine  # noqa: E402

NAME = re.compile(r"\brecmtl\b")


def import_renamed(tree: Path, workdir: Path) -> str:
    """Copy ``tree``/recmtl into ``workdir`` as ``recmtl_before`` with its imports renamed; its name."""
    target = workdir / "recmtl_before"
    shutil.copytree(tree / "recmtl", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(NAME.sub("recmtl_before", path.read_text()))
    sys.path.insert(0, str(workdir))
    return "recmtl_before"


def make_step(
    package: str, data_dir: Path, method: str, batch: int, aux: tuple[str, ...]
) -> Callable[[], None]:
    """One step of ``package``'s trainer (built as `recmtl train` builds it) on random rec batches."""
    try:
        config_mod = importlib.import_module(f"{package}.train.config")
    except ModuleNotFoundError:  # before TrainConfig moved to recmtl/train/config.py
        config_mod = importlib.import_module(f"{package}.config")
    store = importlib.import_module(f"{package}.data.store")
    loop = importlib.import_module(f"{package}.train.loop")
    step_mod = importlib.import_module(f"{package}.train.step")
    try:
        tensors = importlib.import_module(f"{package}.data.tensors")
    except ModuleNotFoundError:  # before the layering change
        tensors = importlib.import_module(f"{package}.train.data")
    data = tensors.TrainData.load(store.open_dataset(data_dir), torch.device("cpu"))
    config = config_mod.TrainConfig(aux=aux, method=method, batch_size=batch).validate()
    model, plan = loop.build_training(config, data, torch.device("cpu"))
    sampler = torch.Generator().manual_seed(1)
    train_step = step_mod.train_step
    if "info" in inspect.signature(train_step).parameters:  # the step before StepInfo moved inside it
        info = importlib.import_module(f"{package}.aggregators.base").StepInfo(epoch=3)
        extra: tuple = (info, None)
    else:
        extra = (3, 0, plan.aggregator.init_state(plan.n_tasks, model.weight.shape[0]))

    def step() -> None:
        idx = torch.randint(len(data.train), (batch,), generator=sampler)
        train_step(model, plan, data.train.a[idx], data.train.b[idx], sampler, *extra)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset (e.g. data/ciao)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--aux", default="social,category", help="comma-separated auxiliary tasks")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (medians reported)")
    args = parser.parse_args()
    aux = tuple(args.aux.split(","))
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        before = import_renamed(args.before, Path(tmp))
        steps = {
            (version, method): make_step(package, args.data, method, args.batch_size, aux)
            for version, package in (("before", before), ("after", "recmtl"))
            for method in ("pmtrec", "ew")
        }
        print(f"before: {args.before} · after: {Path(__file__).resolve().parents[1]}")
        print(
            f"data {args.data} · aux {args.aux} · batch {args.batch_size} · "
            f"{args.rounds} rounds of {args.steps} steps"
        )
        for fn in steps.values():
            fn()  # warm-up
        times: dict[tuple[str, str], list[float]] = {k: [] for k in steps}
        keys = list(steps)
        for r in range(args.rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                start = time.perf_counter()
                for _ in range(args.steps):
                    steps[key]()
                times[key].append((time.perf_counter() - start) * 1000 / args.steps)
    print("ms/step, median over rounds; after/before: median of the per-round ratios")
    for method in ("pmtrec", "ew"):
        b, a = times[("before", method)], times[("after", method)]
        ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
        print(
            f"  {method:<7} before {statistics.median(b):7.2f}   after {statistics.median(a):7.2f}   "
            f"after/before {ratio:.3f}x"
        )
    for version in ("before", "after"):
        p, e = times[(version, "pmtrec")], times[(version, "ew")]
        ratio = statistics.median(x / y for x, y in zip(p, e, strict=True))
        print(f"  pmtrec / ew ({version}): {ratio:.3f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
