"""Row-combination bandwidth: the fused Triton kernels against the unfused PyTorch reference and a copy.

For R rows, T tasks, d columns (every task present on every row: R·T compact (row, task) slots grouped by
row, the layout the kernels read), on one device, medians of interleaved rounds:

* ``fused``: PMTRec's per-row combination in one kernel pass (slots -> update [R, d], c and w [R, T]);
* ``fused+adam``: the same, fused with row-sparse Adam on R unique rows of an [2R, 3, d] optimiser storage;
* ``reference``: the unfused PyTorch path training runs without the kernels (``PMTRec.aggregate`` on the
  entries -> update), and ``reference+adam`` (then ``RowAdam.step``);
* ``copy``: a device-to-device copy moving the same bytes (``dst.copy_(src)`` of half of them: read + write).

Bytes are the minimum each op must move (read + written): the slots, their task ids and row offsets, the
presence mask, the update and c, w (plus, with Adam, the row ids and each touched row's value and two
moments, read and written). GB/s = those bytes / median time, for every row, the reference included (it
moves more in fact: that is the point). Ratios: GB/s against the copy of the same bytes, and the
reference's time over the fused kernel's.

Targets (issue 12, on a GPU): at R = 1e6, T = 4, d = 64 float32, fused >= 70% of copy bandwidth and >= 5x
faster than the reference; fused+adam >= 60% of copy bandwidth.

Without a CUDA device with triton, only the reference and copy rows are measured (the kernels' CPU
interpreter is for tests, not timing). ``--quick``: R in {1e4, 1e5}, fewer rounds (a CPU run of a minute).

Usage: python benchmarks/bench_combine.py [--device cuda|cpu] [--quick] [--rows 1e4,1e5,1e6] [--tasks 2,4]
[--dims 64,128] [--dtype float32|bfloat16] [--rounds N] [--threads N] [--block-r 1,2,4 --num-warps 1,2]
(the last two: a grid of the kernels' block shapes, each timed as its own op)
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import append_results, print_machine  # noqa: E402

from recmtl.aggregators import PMTRec, StepInfo, TaskGrads  # noqa: E402
from recmtl.kernels import resolve_backend  # noqa: E402
from recmtl.kernels.reference import AdamStep  # noqa: E402
from recmtl.kernels.slots import RowSlots  # noqa: E402
from recmtl.train.row_adam import RowAdam  # noqa: E402

METHOD = PMTRec(alpha=1.1, tau=1.0)
EPOCH = 3
ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict[str, float]:
    """Median seconds of each function over ``rounds`` rounds of all of them in turn (after one warm-up)."""
    for fn in fns.values():
        fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_case(n_rows: int, n_tasks: int, dim: int, dtype: torch.dtype, device: torch.device):
    """Slots grouped by row (every task on every row), the same entries as TaskGrads, an optimiser storage
    of 2R rows and R unique touched rows."""
    gen = torch.Generator(device=device).manual_seed(0)
    n_slots = n_rows * n_tasks
    values = torch.randn(n_slots, dim, generator=gen, device=device).to(dtype)
    row_of = torch.arange(n_rows, device=device).repeat_interleave(n_tasks)
    task_of = torch.arange(n_tasks, device=device).repeat(n_rows)
    present = torch.ones(n_rows, n_tasks, dtype=torch.bool, device=device)
    slots = RowSlots.grouped(values, row_of, task_of, present)
    weight = torch.randn(2 * n_rows, dim, generator=gen, device=device)
    rows = torch.randperm(2 * n_rows, generator=gen, device=device)[:n_rows]
    return slots, RowAdam.wrap(weight, ADAM["lr"]), rows


def byte_counts(n_rows: int, n_tasks: int, dim: int, element: int) -> tuple[int, int]:
    """(bytes of the combination, bytes of the combination fused with Adam), read + written."""
    n_slots = n_rows * n_tasks
    meta = n_slots * 8 + (n_rows + 1) * 8 + n_rows * n_tasks  # task ids, row offsets, presence mask
    stats = 2 * n_rows * n_tasks * 4  # c and w written
    combine = n_slots * dim * element + meta + n_rows * dim * element + stats
    adam = n_slots * dim * element + meta + stats + n_rows * 8 + 2 * (3 * n_rows * dim * 4)
    return combine, adam


def copy_fn(n_bytes: int, device: torch.device) -> Callable[[], object]:
    """A copy reading and writing n_bytes / 2 each."""
    src = torch.empty(max(1, n_bytes // 2), dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def bench_case(
    n_rows: int,
    n_tasks: int,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    backend: str,
    rounds: int,
    tunings: list[dict[str, int]],
) -> tuple[dict[str, float], int, int]:
    """Median seconds of every op on one case, and its (combination, with-Adam) byte counts. Each tuning
    (block_r, num_warps; {} = the launcher's choice) times the fused ops once more."""
    slots, adam, rows = make_case(n_rows, n_tasks, dim, dtype, device)
    info = StepInfo(epoch=EPOCH)
    combine_bytes, adam_bytes = byte_counts(n_rows, n_tasks, dim, slots.values.element_size())

    def reference() -> torch.Tensor:
        entries = TaskGrads.from_entries(slots.values, slots.row_of, slots.task_of, n_rows, n_tasks)
        return METHOD.aggregate(entries, {}, info).update

    fns: dict[str, Callable[[], object]] = {
        "reference": reference,
        "reference+adam": lambda: adam.step(rows, reference()),
        "copy": copy_fn(combine_bytes, device),
        "copy (adam)": copy_fn(adam_bytes, device),
    }
    if backend == "triton":
        from recmtl.kernels import triton_combine as kernels

        for tuning in tunings:
            label = "".join(f" {k[0]}{v}" for k, v in tuning.items())  # e.g. " b2 n1": block_r 2, num_warps 1
            fns["fused" + label] = functools.partial(kernels.pmtrec_rows, slots, METHOD, EPOCH, **tuning)
            fns["fused+adam" + label] = functools.partial(
                kernels.pmtrec_adam_rows,
                slots,
                METHOD,
                EPOCH,
                adam.storage,
                rows,
                AdamStep(1, **ADAM),
                **tuning,
            )
    return interleaved(fns, device, rounds), combine_bytes, adam_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="R in {1e4, 1e5}, 5 rounds (a short CPU run)")
    parser.add_argument("--rows", default=None, help="comma-separated R (default 1e4,1e5,1e6)")
    parser.add_argument("--tasks", default="2,4")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 20, quick 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine: no OpenMP stalls)"
    )
    parser.add_argument("--block-r", default=None, help="rows per program to try, e.g. 1,2,4 (default: auto)")
    parser.add_argument(
        "--num-warps", default=None, help="warps per program to try, e.g. 1,2 (default: auto)"
    )
    args = parser.parse_args()
    grid = {
        key: [int(v) for v in value.split(",")]
        for key, value in (("block_r", args.block_r), ("num_warps", args.num_warps))
        if value
    }
    tunings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]

    if args.threads:
        torch.set_num_threads(args.threads)
    info = print_machine()
    device = torch.device(args.device)
    backend = resolve_backend("auto", device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"]
    note = "" if backend == "triton" else " (no CUDA + triton: the fused kernels are not timed)"
    print(f"device {device} ({name}) · kernels: {backend}{note} · {args.dtype}")
    default_rows = "1e4,1e5" if args.quick else "1e4,1e5,1e6"
    rows_list = [int(float(r)) for r in (args.rows or default_rows).split(",")]
    tasks_list = [int(t) for t in args.tasks.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    dtype = getattr(torch, args.dtype)
    rounds = args.rounds or (5 if args.quick else 20)

    header = f"{'R':>9} {'T':>2} {'d':>4}  {'op':<22} {'ms':>9} {'GB/s':>8} {'/copy':>6} {'ref/op':>7}"
    print(header)
    print("-" * len(header))
    results = []
    for n_rows in rows_list:
        for n_tasks in tasks_list:
            for dim in dims:
                times, combine_bytes, adam_bytes = bench_case(
                    n_rows, n_tasks, dim, dtype, device, backend, rounds, tunings
                )
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                for op in times:
                    with_adam = "adam" in op
                    n_bytes = adam_bytes if with_adam else combine_bytes
                    seconds = times[op]
                    gbs = n_bytes / seconds / 1e9
                    copy_gbs = n_bytes / times["copy (adam)" if with_adam else "copy"] / 1e9
                    ref = times["reference+adam" if with_adam else "reference"]
                    speedup = ref / seconds if op.startswith("fused") else float("nan")
                    print(
                        f"{n_rows:>9} {n_tasks:>2} {dim:>4}  {op:<22} {seconds * 1e3:>9.3f} {gbs:>8.2f} "
                        f"{gbs / copy_gbs:>6.3f} {speedup:>7.1f}"
                    )
                    results.append(
                        {
                            "device": device.type,
                            "device_name": name,
                            "backend": backend,
                            "dtype": args.dtype,
                            "rows": n_rows,
                            "tasks": n_tasks,
                            "dim": dim,
                            "op": op,
                            "rounds": rounds,
                            "ms": round(seconds * 1e3, 4),
                            "bytes": n_bytes,
                            "gb_s": round(gbs, 3),
                            "of_copy": round(gbs / copy_gbs, 4),
                            "reference_over_op": round(speedup, 2),
                        }
                    )
    target = {r["op"]: r for r in results if (r["rows"], r["tasks"], r["dim"]) == (1_000_000, 4, 64)}
    if "fused" in target and args.dtype == "float32":
        print(
            f"targets at R=1e6, T=4, d=64: fused {target['fused']['of_copy']:.0%} of copy (>= 70%), "
            f"{target['fused']['reference_over_op']:.1f}x the reference (>= 5x); "
            f"fused+adam {target['fused+adam']['of_copy']:.0%} of copy (>= 60%)"
        )
    print(f"appended to {append_results('combine', results)}")


if __name__ == "__main__":
    main()
