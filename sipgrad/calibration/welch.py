"""Closed-form statistics for calibration, vectorised over channels and classes.

``scipy.stats`` is imported where it is used: it adds about 60 MiB to every process that
imports sipgrad, and plain explaining never needs it.
"""

from __future__ import annotations

import numpy as np


def welch_greater_pvalues(count: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> np.ndarray:
    """One-sided Welch t-test p-values, class vs rest, alternative "greater", from moments.

    Args:
        count: samples per class (K,).
        total: per-class sums of the (shifted) values (K, C).
        total_sq: per-class sums of squares (K, C).

    Returns:
        (C, K) p-values equal to ``scipy.stats.ttest_ind(class, rest, equal_var=False,
        alternative="greater")``; NaN where a group has fewer than two samples or no variance.
    """
    from scipy import stats

    count = np.asarray(count, dtype=np.float64)[:, None]
    total = np.asarray(total, dtype=np.float64)
    total_sq = np.asarray(total_sq, dtype=np.float64)
    n1 = count
    n2 = count.sum() - count
    with np.errstate(divide="ignore", invalid="ignore"):
        # Each class's and the rest's mean and sample variance from the moments; scipy does the test.
        m1 = total / n1
        m2 = (total.sum(axis=0, keepdims=True) - total) / n2
        v1 = np.maximum((total_sq - n1 * m1 * m1) / (n1 - 1), 0.0)
        v2 = np.maximum((total_sq.sum(axis=0, keepdims=True) - total_sq - n2 * m2 * m2) / (n2 - 1), 0.0)
        p = stats.ttest_ind_from_stats(m1, np.sqrt(v1), n1, m2, np.sqrt(v2), n2, equal_var=False,
                                       alternative="greater").pvalue
    p = np.where((n1 >= 2) & (n2 >= 2) & (v1 / n1 + v2 / n2 > 0), p, np.nan)
    return p.T


def shapiro_pvalues(samples: np.ndarray) -> np.ndarray:
    """Shapiro-Wilk p-value of each column of ``samples`` (N x C); NaN for constant columns or N < 3."""
    from scipy import stats

    samples = np.asarray(samples, dtype=np.float64)
    out = np.full(samples.shape[1], np.nan)
    if samples.shape[0] < 3:
        return out
    varying = samples.std(axis=0) > 0
    if varying.any():
        out[varying] = stats.shapiro(samples[:, varying], axis=0).pvalue
    return out
