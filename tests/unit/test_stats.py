import math

import numpy as np
import pytest
from scipy import stats

from metarec.evaluation.stats import mean_ci95, paired_test
from metarec.evaluation.tables import format_acc


def test_ci_matches_scipy_t_interval():
    x = np.random.default_rng(0).uniform(0.4, 0.9, size=57)
    mean, half = mean_ci95(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean())
    assert mean - half == pytest.approx(lo) and mean + half == pytest.approx(hi)


def test_ci_of_one_value_is_nan_and_empty_is_an_error():
    assert math.isnan(mean_ci95([0.5])[1])
    with pytest.raises(ValueError):
        mean_ci95([])


def test_paired_test_known_answer():
    # differences: 0.1, 0.2, 0.3, 0.4 -> mean 0.25, sd 0.1291, t = 0.25 / (0.1291 / 2) = 3.873, df 3
    a = np.array([0.6, 0.7, 0.8, 0.9])
    b = np.array([0.5, 0.5, 0.5, 0.5])
    r = paired_test(a, b)
    assert r.mean_diff == pytest.approx(0.25)
    assert r.p_value == pytest.approx(2 * stats.t.sf(3.8729833, 3), rel=1e-5)
    assert r.p_value == pytest.approx(0.030466, abs=1e-5)
    assert r.n == 4


def test_paired_test_needs_equal_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([0.1, 0.2], [0.1])


def test_format_acc():
    assert format_acc(0.7134, 0.0123) == "71.3 ± 1.2"
