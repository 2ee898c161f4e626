"""Pure statistics for comparisons: paired tests (scipy.stats) and Holm's step-down correction.

- Paired t-test: ``scipy.stats.ttest_rel(a, b)`` (two-sided), H0: mean(a - b) = 0.
- Wilcoxon signed-rank: ``scipy.stats.wilcoxon(a, b)`` (two-sided, zero differences dropped).
- Holm (1979), "A simple sequentially rejective multiple test procedure": with the m p-values sorted
  p_(1) <= ... <= p_(m), the adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); NaN p-values are
  left out of m and stay NaN.

When every difference is zero neither test is defined; both then give p = 1 (no evidence of a difference).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison: n pairs, mean difference (a - b), test statistics and two-sided p-values."""

    n: int
    mean_diff: float
    t_stat: float
    t_p: float
    w_stat: float
    w_p: float


def paired_tests(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``a`` [N] against ``b`` [N] (NaN pairs dropped).

    Fewer than 2 pairs: NaN p-values. All differences zero: p = 1 for both."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = int(a.size)
    nan = math.nan
    if n < 2:
        return PairedTest(n, float(np.mean(a - b)) if n else nan, nan, nan, nan, nan)
    diff = a - b
    if not np.any(diff != 0):
        return PairedTest(n, 0.0, 0.0, 1.0, 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (constant non-zero differences: t is infinite)
        t = stats.ttest_rel(a, b)
        w = stats.wilcoxon(a, b)
    return PairedTest(
        n, float(diff.mean()), float(t.statistic), float(t.pvalue), float(w.statistic), float(w.pvalue)
    )


def ttest_only(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of the paired t-test of ``a`` against ``b`` (NaN below 2 pairs; p = 1 when
    every difference is zero)."""
    result = paired_tests(a, b)
    return result.t_stat, result.t_p


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-adjusted p-values [m] of ``pvalues`` [m], in the input order (NaN left out and kept NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def mean_std(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value, NaN for none) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def relative_improvement(value: float, reference: float) -> float:
    """(value - reference) / |reference| in percent; NaN when the reference is 0 or NaN."""
    if reference == 0 or math.isnan(reference):
        return math.nan
    return 100.0 * (value - reference) / abs(reference)


def activity_thresholds(counts: np.ndarray) -> tuple[float, float]:
    """The tercile cut points (q1/3, q2/3; linear interpolation, as ``torch.quantile``) of the per-user
    training interaction counts [U]: cold <= q1 < mid <= q2 < heavy, the trainer's user row groups
    (recmtl.train.loop.row_groups)."""
    q1, q2 = np.quantile(np.asarray(counts, dtype=np.float64), [1 / 3, 2 / 3])
    return float(q1), float(q2)


def activity_bucket(n_train: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """[N] 0 (cold), 1 (mid) or 2 (heavy) for the training interaction counts ``n_train`` [N]."""
    n = np.asarray(n_train, dtype=np.float64)
    return (n > thresholds[0]).astype(np.int64) + (n > thresholds[1]).astype(np.int64)
