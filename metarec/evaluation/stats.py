"""Confidence intervals and paired comparisons over episodes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its two-sided 95% confidence interval (Student t).

    With one value the half-width is ``nan`` (no spread to estimate from).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci95 of an empty sequence")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    return mean, float(stats.t.ppf(0.975, x.size - 1) * sem)


@dataclass
class PairedResult:
    """Method A minus reference B on the same episodes."""

    mean_diff: float
    ci95: float
    p_value: float
    n: int
    test: str


def paired_test(a: Sequence[float], b: Sequence[float], test: str = "t") -> PairedResult:
    """Paired comparison of per-episode scores ``a`` and ``b`` (same episodes, same order).

    Args:
        test: ``"t"`` (paired t-test) or ``"wilcoxon"`` (signed-rank).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired test needs equal lengths, got {x.shape} and {y.shape}")
    d = x - y
    mean, ci = mean_ci95(d)
    if np.allclose(d, d[0]):
        p = 1.0 if d[0] == 0 else 0.0
    elif test == "t":
        p = float(stats.ttest_rel(x, y).pvalue)
    elif test == "wilcoxon":
        p = float(stats.wilcoxon(x, y).pvalue)
    else:
        raise ValueError(f"paired test must be 't' or 'wilcoxon', got {test!r}")
    return PairedResult(mean_diff=mean, ci95=ci, p_value=p, n=int(d.size), test=test)
