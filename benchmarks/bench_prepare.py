"""Benchmark: wall time, throughput and peak memory of ``recmtl prepare``.

Cases:

* ``ciao`` — the recipe ``datasets/ciao.toml`` on the raw files in ``../shared/data/ciao`` (relative to the
  project root; skipped with a message when absent): 284,086 raw rating rows read, 282,619 interactions
  written. Median of ``--repeats`` runs (default 3).
* ``synthetic10m`` — the synthetic source with 500,000 users, 200,000 items and 10,000,000 interactions
  (other synthetic fields default; ``min_rating=0``, ``k_core=0``, random 80/10/10 split, every auxiliary
  table the source offers). One run unless ``--repeats`` is given. Target (issue): "10 million interactions
  must generate and write within a few minutes on 2 cores without holding more than a few GB".
  ``--interactions N`` scales the case (users and items scale in proportion).

    .venv/bin/python benchmarks/bench_prepare.py [--cases ciao,synthetic10m] [--repeats R]
        [--interactions N]

Every run is a fresh subprocess (``--case NAME``, internal) so that its peak RSS is that run's own; the
child imports only recmtl and polars (no torch, as the ``recmtl prepare`` command), times ``prepare()``
alone, records the time of every stage message from the ``progress`` callback, and prints one JSON line.
Outputs go to a temporary directory that is deleted afterwards. Prints the machine line, a table (case,
rows read, interactions written, median seconds, rows/s, peak RSS MB), the per-stage breakdown, and appends
one row per case to ``benchmarks/results/prepare.csv``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIAO_RAW = ROOT.parent / "shared" / "data" / "ciao"
CIAO_RECIPE = ROOT / "datasets" / "ciao.toml"
CASES = ("ciao", "synthetic10m")
DEFAULT_REPEATS = {"ciao": 3, "synthetic10m": 1}
SYNTH_USERS, SYNTH_ITEMS, SYNTH_INTERACTIONS = 500_000, 200_000, 10_000_000


# --------------------------------------------------------------------------------------------------
# child: one prepare() run


def case_config(case: str, interactions: int):
    from recmtl.config import PrepareConfig, build
    from recmtl.data.recipes import load_recipe

    if case == "ciao":
        return load_recipe(CIAO_RECIPE).config({"raw": str(CIAO_RAW)}), load_recipe(CIAO_RECIPE).expected
    scale = interactions / SYNTH_INTERACTIONS
    synthetic = {
        "users": max(2, round(SYNTH_USERS * scale)),
        "items": max(2, round(SYNTH_ITEMS * scale)),
        "interactions": interactions,
    }
    values = {
        "source": "synthetic",
        "min_rating": 0.0,
        "k_core": 0,
        "split": "random:0.8,0.1,0.1",
        "synthetic": synthetic,
    }
    return build(PrepareConfig, values, where="bench_prepare"), {}


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MB.

    ``VmHWM`` (Linux) rather than ``ru_maxrss``: the latter survives ``execve`` and so would include the
    parent's resident set at fork time (the parent has imported torch); ``VmHWM`` belongs to the new image.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(case: str, interactions: int) -> None:
    """Run prepare() once for ``case`` and print the measurements as JSON on the last line."""
    sys.path.insert(0, str(ROOT))
    from recmtl.data.pipeline import prepare

    config, expected = case_config(case, interactions)
    rss_before = peak_rss_mb()
    marks: list[tuple[str, float, float]] = []  # (stage message, start time, peak RSS before it)

    def progress(message: str) -> None:
        marks.append((message, time.perf_counter(), peak_rss_mb()))

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        start = time.perf_counter()
        manifest = prepare(config, Path(tmp) / case, progress=progress)
        end = time.perf_counter()
    peak = peak_rss_mb()
    counts, dropped = manifest["counts"], manifest["dropped"]
    # per stage: (message, seconds, peak RSS MB at its end: the running peak, so the stage that raises it
    # is the one holding the most)
    ends = [(t, hwm) for _, t, hwm in marks[1:]] + [(end, peak)]
    stages = [(msg, t_end - t, hwm) for (msg, t, _), (t_end, hwm) in zip(marks, ends, strict=True)]
    mismatched = {k: (counts.get(k), v) for k, v in expected.items() if counts.get(k) != v}
    print(
        json.dumps(
            {
                "case": case,
                "seconds": end - start,
                "setup_seconds": (marks[0][1] - start) if marks else 0.0,
                "stages": stages,
                "rows_read": counts["interactions"] + sum(int(v) for v in dropped.values()),
                "interactions": counts["interactions"],
                "users": counts["users"],
                "items": counts["items"],
                "dropped": dropped,
                "expected_mismatch": mismatched,
                "rss_before_mb": rss_before,
                "peak_rss_mb": peak,
            }
        )
    )


# --------------------------------------------------------------------------------------------------
# parent: spawn runs, summarise, record


def spawn(case: str, interactions: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--interactions", str(interactions)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{case}: child exited with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(label: str, runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    first = runs[0]
    stage_names = [stage[0] for stage in first["stages"]]
    stage_medians = {
        name: statistics.median(r["stages"][i][1] for r in runs) for i, name in enumerate(stage_names)
    }
    stage_peaks = {name: max(r["stages"][i][2] for r in runs) for i, name in enumerate(stage_names)}
    return {
        "case": label,
        "repeats": len(runs),
        "rows_read": first["rows_read"],
        "interactions": first["interactions"],
        "users": first["users"],
        "items": first["items"],
        "seconds": round(median, 3),
        "seconds_min": round(min(seconds), 3),
        "seconds_runs": " ".join(f"{s:.2f}" for s in seconds),
        "rows_per_s": round(first["rows_read"] / median),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "rss_after_imports_mb": round(max(r["rss_before_mb"] for r in runs), 1),
        "stages": "; ".join(f"{name}={s:.2f}" for name, s in stage_medians.items()),
        "_stage_medians": stage_medians,
        "_stage_peaks": stage_peaks,
        "_mismatch": first["expected_mismatch"],
    }


def print_table(rows: list[dict]) -> None:
    header = ("case", "rows read", "written", "seconds", "rows/s", "peak RSS MB")
    lines = [
        (
            r["case"],
            f"{r['rows_read']:,}",
            f"{r['interactions']:,}",
            f"{r['seconds']:.2f}",
            f"{r['rows_per_s']:,}",
            f"{r['peak_rss_mb']:,.1f}",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    for line in (header, *lines):
        cells = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        print("  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--repeats", type=int, default=None, help="runs per case (ciao 3, synthetic 1)")
    parser.add_argument("--interactions", type=int, default=SYNTH_INTERACTIONS, help="synthetic case size")
    parser.add_argument("--case", choices=CASES, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.case is not None:
        run_child(args.case, args.interactions)
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case {unknown[0]!r} (known: {', '.join(CASES)})")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import append_results, print_machine  # imports torch: parent only

    print_machine()
    rows = []
    for case in cases:
        if case == "ciao" and not CIAO_RAW.is_dir():
            print(f"ciao: skipped ({CIAO_RAW} not found)")
            continue
        label = case
        if case == "synthetic10m" and args.interactions != SYNTH_INTERACTIONS:
            label = f"synthetic{args.interactions:_}"
        repeats = args.repeats or DEFAULT_REPEATS[case]
        runs = []
        for i in range(repeats):
            runs.append(spawn(case, args.interactions))
            print(
                f"  {label} run {i + 1}/{repeats}: {runs[-1]['seconds']:.2f} s, "
                f"peak RSS {runs[-1]['peak_rss_mb']:.1f} MB",
                flush=True,
            )
        rows.append(summarise(label, runs))
    if not rows:
        print("nothing to run")
        return

    print()
    print_table(rows)
    for row in rows:
        total = row["seconds"]
        after_imports = row["rss_after_imports_mb"]
        print(
            f"\n{row['case']}: {row['users']:,} users, {row['items']:,} items; stage medians, and the "
            f"running peak RSS at the end of each stage (after imports: {after_imports:.0f} MB)"
        )
        for name, s in row["_stage_medians"].items():
            peak = row["_stage_peaks"][name]
            print(f"  {name:<28} {s:8.2f} s  {100 * s / total:5.1f}%   peak {peak:8.1f} MB")
        if row["_mismatch"]:
            print(f"  WARNING: counts differ from the recipe's [expected] (got, want): {row['_mismatch']}")
    path = append_results("prepare", [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    print(f"\nappended {len(rows)} row(s) to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
