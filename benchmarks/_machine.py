"""What every benchmark prints and records: machine, versions, git sha; and a median timer."""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def git_sha() -> str:
    """The checkout's short commit, ``+dirty`` when its library code has uncommitted changes (what a run's
    config.json records, recmtl.provenance), or ``unknown``."""
    from recmtl.provenance import source_commit

    commit = source_commit()
    return commit if commit == "unknown" else commit[:7] + commit[40:]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """Device, versions and sha, for printing and for the results CSV."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_sha(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def print_machine() -> dict[str, str]:
    info = machine()
    print(" · ".join(f"{k} {v}" for k, v in info.items()))
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux: ru_maxrss is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def append_results(name: str, rows: list[dict[str, object]]) -> Path:
    """Append rows (with the machine fields) to benchmarks/results/<name>.csv."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    info = machine()
    rows = [info | {k: str(v) for k, v in row.items()} for row in rows]
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return path
