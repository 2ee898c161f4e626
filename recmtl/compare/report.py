"""A :class:`~recmtl.compare.table.Comparison` as text: Markdown, CSV and LaTeX (booktabs), and the files.

- Markdown: first a summary in a few columns (recall and NDCG at the focus metric's K, the change of the
  focus metric over the baseline and its Holm-adjusted p-values), for pasting into a report; then the
  full tables below.
- Markdown and LaTeX: (1) mean ± std over seeds of every metric at every K, the best per column in bold;
  (2) with a baseline, the change over it in percent for every metric with the pooled per-user paired
  t-test's Holm-adjusted p-value; (3) every test of the focus metric (pooled per-user t-test and
  Wilcoxon, across-seed t-test), raw and Holm-adjusted.
- CSV: ``compare.csv`` is the tidy summary (one row per group x metric, every number at full precision)
  and ``compare_tests.csv`` every test (per seed, pooled, across seeds).
- Runs with the training instruments (:mod:`recmtl.compare.instruments`) add a Markdown section (where
  tasks meet, the main task's weight by user activity) and ``compare_instruments.csv``.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from recmtl.compare.instruments import ACTIVITY
from recmtl.compare.table import Comparison
from recmtl.data.store import atomic_write_text

FILES = ("compare.md", "compare.csv", "compare_tests.csv", "compare.tex")
INSTRUMENTS_FILE = "compare_instruments.csv"


def fmt_value(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.4f}"


def fmt_pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:+.2f}%"


def fmt_p(p: float) -> str:
    """A p-value: 3 decimals, scientific notation below 0.001, ``—`` when undefined."""
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _heading(c: Comparison) -> str:
    seeds = sorted({s for g in c.groups for s in g.seeds})
    base = f" · baseline {c.baseline}" if c.baseline else ""
    return f"{c.dataset} · {c.split} split · seeds {','.join(map(str, seeds))}{base}"


def _focus_rows(c: Comparison) -> list[tuple[str, list[str]]]:
    """(group, [Δ%, p t, Holm, p W, Holm, p seeds, Holm]) for every group but the baseline."""
    out = []
    for g in c.groups:
        if g.label == c.baseline:
            continue
        r = c.cell(g.label, c.focus)
        out.append(
            (
                g.label,
                [
                    fmt_pct(r["rel_impr_pct"]),
                    fmt_p(r["p_ttest"]),
                    fmt_p(r["p_ttest_holm"]),
                    fmt_p(r["p_wilcoxon"]),
                    fmt_p(r["p_wilcoxon_holm"]),
                    fmt_p(r["p_seeds"]),
                    fmt_p(r["p_seeds_holm"]),
                ],
            )
        )
    return out


FOCUS_HEADERS = [
    "Δ%",
    "t-test p (users)",
    "Holm",
    "Wilcoxon p (users)",
    "Holm",
    "t-test p (seeds)",
    "Holm",
]


def summary_metrics(c: Comparison) -> list[str]:
    """The summary's metric columns: recall and NDCG at the focus metric's K (those measured), and the
    focus metric itself if it is neither."""
    k = c.focus.partition("@")[2]
    shown = [m for m in (f"recall@{k}", f"ndcg@{k}") if m in c.metrics]
    return shown if c.focus in shown else [*shown, c.focus]


def _summary(c: Comparison) -> list[str]:
    """The Markdown summary table: a few metrics, then the focus metric's change and Holm-adjusted p."""
    shown = summary_metrics(c)
    headers = ["group", "seeds", *shown]
    if c.baseline:
        headers += [f"{c.focus} Δ%", "p t (users)", "p W (users)", "p t (seeds)"]
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    for g in c.groups:
        cells = []
        for m in shown:
            r = c.cell(g.label, m)
            text = f"{fmt_value(r['mean'])} ± {fmt_value(r['std'])}"
            cells.append(f"**{text}**" if r["best"] else text)
        if c.baseline:
            r = c.cell(g.label, c.focus)
            if g.label == c.baseline:
                cells += ["baseline", "", "", ""]
            else:
                ps = (r["p_ttest_holm"], r["p_wilcoxon_holm"], r["p_seeds_holm"])
                cells += [fmt_pct(r["rel_impr_pct"]), *map(fmt_p, ps)]
        lines.append(f"| {_md(g.label)} | {len(g.runs)} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(c: Comparison) -> str:
    """The comparison as Markdown tables (best per column in bold)."""
    lines = [f"# Comparison: {_heading(c)}", ""]
    k = c.focus.partition("@")[2]
    tested = ""
    if c.baseline:
        tested = "; p: Holm-adjusted over the compared groups, t = paired t-test, W = Wilcoxon"
    lines += [f"## Summary @{k} (mean ± std over seeds, best in bold{tested})", ""]
    lines += [*_summary(c), ""]
    lines += ["## Mean ± std over seeds (best per column in bold)", ""]
    lines.append("| group | seeds | " + " | ".join(c.metrics) + " |")
    lines.append("|---|---:|" + "---:|" * len(c.metrics))
    for g in c.groups:
        cells = []
        for m in c.metrics:
            r = c.cell(g.label, m)
            text = f"{fmt_value(r['mean'])} ± {fmt_value(r['std'])}"
            cells.append(f"**{text}**" if r["best"] else text)
        lines.append(f"| {_md(g.label)} | {len(g.runs)} | " + " | ".join(cells) + " |")
    if c.baseline:
        lines += ["", f"## Change vs {_md(c.baseline)} (Holm-adjusted p of the per-user paired t-test)", ""]
        lines.append("| group | " + " | ".join(c.metrics) + " |")
        lines.append("|---|" + "---:|" * len(c.metrics))
        for g in c.groups:
            if g.label == c.baseline:
                continue
            cells = []
            for m in c.metrics:
                r = c.cell(g.label, m)
                cells.append(f"{fmt_pct(r['rel_impr_pct'])} (p {fmt_p(r['p_ttest_holm'])})")
            lines.append(f"| {_md(g.label)} | " + " | ".join(cells) + " |")
        n = len(c.groups) - 1
        plural = "s" * (n != 1)
        lines += [
            "",
            f"## Paired tests vs {_md(c.baseline)} on {c.focus} (Holm over {n} compared group{plural})",
            "",
            "Users: per-user differences of every shared seed pooled; seeds: per-seed means paired by seed.",
            "",
        ]
        lines.append("| group | " + " | ".join(FOCUS_HEADERS) + " |")
        lines.append("|---|" + "---:|" * len(FOCUS_HEADERS))
        for label, cells in _focus_rows(c):
            lines.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
    if c.instruments.height:
        lines += ["", *_instruments(c)]
    return "\n".join(lines) + "\n"


def _instruments(c: Comparison) -> list[str]:
    """The instruments section: meet fraction, and the main task's weight (median, q25-q75) by activity."""
    lines = [
        "## Where tasks meet, and the main task's weight by user activity",
        "",
        "Meet: fraction of a step's touched rows where at least two tasks meet (mean over epochs). Main "
        "weight: per user, the mean main-task weight over the selected epoch; median (q25–q75) over the "
        "activity group's users. Mean over the runs that recorded them.",
        "",
        "| group | runs | meet | main weight, cold users | mid users | heavy users |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in c.instruments.iter_rows(named=True):
        cells = [fmt_value(r["meet_fraction"])]
        for group in ACTIVITY:
            q = [r[f"main_weight_{s}@{group}"] for s in ("q50", "q25", "q75")]
            cells.append("—" if math.isnan(q[0]) else f"{q[0]:.3f} ({q[1]:.3f}–{q[2]:.3f})")
        lines.append(f"| {_md(r['group'])} | {r['runs']} | " + " | ".join(cells) + " |")
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def to_csv(c: Comparison) -> str:
    """The tidy summary: one row per group x metric (mean, std, change, p-values raw and Holm, best)."""
    return _csv(c.summary)


def tests_csv(c: Comparison) -> str:
    """Every test: one row per group x metric x scope (seed S, pooled, seeds) x test."""
    return _csv(c.tests)


def _csv(frame: pl.DataFrame) -> str:
    """CSV text: values to 6 decimals, p-values (``p``, ``p_*``) to 6 significant digits, so that a p of
    5.2e-11 is not written as 0.000000; NaN as empty."""
    p_values = [c for c in frame.columns if c == "p" or c.startswith("p_")]
    shown = frame.fill_nan(None).with_columns(
        pl.col(c).map_elements(lambda p: f"{p:.6g}", return_dtype=pl.String) for c in p_values
    )
    return shown.write_csv(float_precision=6)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}  # fmt: skip


def _tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(c: Comparison) -> str:
    """The comparison as LaTeX booktabs tables (best per column in bold; needs \\usepackage{booktabs})."""
    out = [f"% recmtl compare: {_heading(c)}", r"\begin{table}[t]", r"\centering", r"\small"]
    out.append(r"\begin{tabular}{l" + "r" * (len(c.metrics) + 1) + "}")
    out.append(r"\toprule")
    out.append("group & seeds & " + " & ".join(_tex(m) for m in c.metrics) + r" \\")
    out.append(r"\midrule")
    for g in c.groups:
        cells = []
        for m in c.metrics:
            r = c.cell(g.label, m)
            text = f"{fmt_value(r['mean'])} \\pm {fmt_value(r['std'])}"
            cells.append(f"$\\mathbf{{{text}}}$" if r["best"] else f"${text}$")
        out.append(f"{_tex(g.label)} & {len(g.runs)} & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out.append(rf"\caption{{Mean $\pm$ std over seeds ({_tex(c.dataset)}, {_tex(c.split)}); best in bold.}}")
    out.append(r"\end{table}")
    if c.baseline:
        headers = [_tex(h).replace("Δ", r"$\Delta$") for h in FOCUS_HEADERS]
        out += ["", r"\begin{table}[t]", r"\centering", r"\small"]
        out.append(r"\begin{tabular}{l" + "r" * len(headers) + "}")
        out.append(r"\toprule")
        out.append("group & " + " & ".join(headers) + r" \\")
        out.append(r"\midrule")
        for label, cells in _focus_rows(c):
            out.append(f"{_tex(label)} & " + " & ".join(_tex(x).replace("—", "--") for x in cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        out.append(
            rf"\caption{{Paired tests of {_tex(c.focus)} against {_tex(c.baseline)}: per-user (pooled over "
            r"seeds) and across seeds; Holm-adjusted over the compared groups.}}"
        )
        out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def write_reports(c: Comparison, out: Path) -> list[Path]:
    """Write :data:`FILES` into ``out`` (created if need be), each atomically; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = [to_markdown(c), to_csv(c), tests_csv(c), to_latex(c)]
    paths = []
    for name, text in zip(FILES, texts, strict=True):
        atomic_write_text(out / name, text)
        paths.append(out / name)
    if c.instruments.height:
        atomic_write_text(out / INSTRUMENTS_FILE, _csv(c.instruments))
        paths.append(out / INSTRUMENTS_FILE)
    return paths
