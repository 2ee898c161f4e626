"""`recmtl compare`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from cli._shell import comma_list, console, user_errors
from recmtl.compare import compare as build_comparison
from recmtl.compare import load_runs
from recmtl.compare.buckets import BUCKET_KINDS, aux_ratio_table, friends_of, write_aux_ratio
from recmtl.compare.report import fmt_p, fmt_pct, fmt_value, write_reports
from recmtl.compare.table import Comparison
from recmtl.errors import RecmtlError

Opt = typer.Option


def comparison_table(c: Comparison) -> Table:
    """Groups x the focus metric (mean ± std over seeds, the best bold with *), then its change over the
    baseline and its Holm-adjusted p-values."""
    table = Table(title=f"{c.dataset} · {c.split} · {c.focus}, mean ± std over seeds")
    table.add_column("group", overflow="fold")
    table.add_column("seeds", justify="right")
    table.add_column(c.focus, justify="right", no_wrap=True)
    if c.baseline:
        for header in ("Δ%", "p t users", "p W users", "p t seeds"):
            table.add_column(header, justify="right")
    for g in c.groups:
        r = c.cell(g.label, c.focus)
        text = f"{fmt_value(r['mean'])} ± {fmt_value(r['std'])}"
        cells = [f"[bold]{text} *[/bold]" if r["best"] else text]
        if c.baseline:
            if g.label == c.baseline:
                cells += ["baseline", "", "", ""]
            else:
                ps = (r["p_ttest_holm"], r["p_wilcoxon_holm"], r["p_seeds_holm"])
                cells += [fmt_pct(r["rel_impr_pct"]), *map(fmt_p, ps)]
        table.add_row(escape(g.label), str(len(g.runs)), *cells)
    return table


def metrics_at_k(c: Comparison) -> Table:
    """Groups x every metric at the focus metric's K (means over seeds; the best per column bold with *)."""
    k = c.focus.partition("@")[2]
    shown = [m for m in c.metrics if m.partition("@")[2] == k]
    table = Table(title=f"every metric @{k} (mean over seeds; all K in --out's files)")
    table.add_column("group")
    for m in shown:
        table.add_column(m, justify="right")
    for g in c.groups:
        cells = []
        for m in shown:
            r = c.cell(g.label, m)
            cells.append(f"[bold]{fmt_value(r['mean'])}*[/bold]" if r["best"] else fmt_value(r["mean"]))
        table.add_row(escape(g.label), *cells)
    return table


def bucket_table(table: pl.DataFrame, c: Comparison) -> Table:
    """Groups x auxiliary-to-main ratio buckets: the focus metric minus the baseline (mean ± std, seeds)."""
    title = f"{c.focus} − {c.baseline} by #friends / #training interactions (mean ± std over seeds)"
    out = Table(title=title)
    out.add_column("group", min_width=12, overflow="fold")
    buckets = table.unique("bucket", maintain_order=True)
    for r in buckets.iter_rows(named=True):
        out.add_column(f"{r['bucket']} {r['ratio']}\n{r['n_users']} users", justify="right")
    for label in table.unique("group", maintain_order=True)["group"]:
        rows = table.filter(pl.col("group") == label).iter_rows(named=True)
        cells = [f"{fmt_signed(r['diff_mean'])} ± {fmt_value(r['diff_std'])}" for r in rows]
        out.add_row(escape(label), *cells)
    return out


def fmt_signed(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:+.4f}"


@user_errors
def compare(
    run_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[RUN_DIR]...",
            help="Evaluated run directories, or folders holding them (e.g. runs/sweeps/ciao).",
            show_default=False,
        ),
    ] = None,
    sweep: Annotated[
        Path | None,
        Opt(help="Compare the cells of this sweep file (`recmtl sweep FILE` first), instead of RUN_DIRs."),
    ] = None,
    only: Annotated[
        str | None,
        Opt(
            help="With --sweep: only the cells of these [methods.LABEL] tables, comma-separated (e.g. "
            "ew-aligned,pmtrec-aligned: each setting against the ew of the same setting)."
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        Opt(help="The reference group: a group label or a method name (e.g. ew); enables Δ% and the tests."),
    ] = None,
    metric: Annotated[
        str, Opt(help="The metric the terminal table, the p-value table and the plots focus on.")
    ] = "ndcg@20",
    out: Annotated[
        Path | None, Opt(help="Write compare.md, .csv, .tex, compare_tests.csv and the PNG plots here.")
    ] = None,
    no_plots: Annotated[bool, Opt("--no-plots", help="With --out, write the tables only.")] = False,
    buckets: Annotated[
        str | None,
        Opt(
            help="Also break the focus metric's change over --baseline down by user bucket: aux-ratio "
            "(#friends / #training interactions: none, then terciles; with --out: buckets_aux_ratio.*).",
        ),
    ] = None,
) -> None:
    """Compare evaluated runs: mean ± std over seeds, paired tests against a baseline, tables and plots.

    The runs are RUN_DIRs, or with --sweep FILE the cells of that sweep (all of them trained and evaluated).

    Runs are grouped by their configuration minus the seed. Against --baseline, each group gets a per-user
    paired t-test and Wilcoxon signed-rank test (per-user differences of every shared seed pooled), and a
    paired t-test across seeds on the per-seed means, Holm-corrected over the compared groups. Runs must
    share the data (hash) and the evaluated split. --buckets aux-ratio adds the change over the baseline by
    each user's #friends / #training interactions (needs the runs' dataset with its social table).
    """
    if (sweep is None) == (not run_dirs):
        raise RecmtlError("give either RUN_DIRs or --sweep FILE (see 'recmtl compare --help')")
    if only is not None and sweep is None:
        raise RecmtlError("--only selects cells of a sweep: it needs --sweep FILE")
    if buckets is not None and buckets not in BUCKET_KINDS:
        raise RecmtlError(f"--buckets {buckets}: expected {' or '.join(BUCKET_KINDS)}")
    if buckets is not None and baseline is None:
        raise RecmtlError(f"--buckets {buckets} needs --baseline (the group to subtract, e.g. single)")
    labels = None if only is None else comma_list(only)
    runs = load_runs(sweep_run_dirs(sweep, labels) if sweep is not None else run_dirs)
    result = build_comparison(runs, baseline=baseline, focus=metric.lower())
    console.print(comparison_table(result))
    console.print(metrics_at_k(result))
    console.print(
        "p: Holm-adjusted over the compared groups; t = paired t-test, W = Wilcoxon signed-rank",
        highlight=False,
    )
    if result.baseline is None:
        console.print("(no --baseline: no change or paired tests)", highlight=False)
    by_bucket = None
    if buckets is not None:
        by_bucket, _ = aux_ratio_table(result, friends_of(result))
        console.print(bucket_table(by_bucket, result))
    if out is None:
        return
    written = write_reports(result, out)
    if not no_plots:
        from recmtl.compare.plots import write_plots  # (matplotlib: imported only when plotting)

        written += write_plots(result, out)
    if by_bucket is not None:
        written += write_aux_ratio(by_bucket, result, out, plots=not no_plots)
    console.print(f"wrote {', '.join(str(p) for p in written)}", soft_wrap=True, highlight=False)


def sweep_run_dirs(path: Path, labels: list[str] | None = None) -> list[Path]:
    """The run directories of every cell of the sweep in ``path`` (of its [methods.LABEL] tables in
    ``labels`` only, when given); RecmtlError naming the unfinished ones or an unknown label."""
    from recmtl.sweeps import load_sweep
    from recmtl.sweeps.runner import cell_status

    spec = load_sweep(path)
    cells = (spec if labels is None else spec.with_labels(tuple(labels))).cells()
    unfinished = [c.name for c in cells if cell_status(c) != "done"]
    if unfinished:
        more = f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else ""
        named = ", ".join(unfinished[:3]) + more
        raise RecmtlError(
            f"{path}: {len(unfinished)} of {len(cells)} cells not finished ({named}); "
            f"run `recmtl sweep {path}` first"
        )
    return [c.run_dir for c in cells]
