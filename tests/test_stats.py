import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ortgate.measure.stats import (
    compare_normalized_times,
    distribution,
    logit_differences,
    paired_bootstrap_interval,
    paired_comparison,
    speed_ratio_interval,
)


def test_distribution_of_known_values():
    d = distribution([1, 2, 3, 4, 5])
    assert d == {"count": 5, "mean": 3.0, "std": pytest.approx(1.5811, abs=1e-4), "min": 1.0, "q1": 2.0,
                 "median": 3.0, "q3": 4.0, "max": 5.0}
    assert distribution([7.0])["std"] == 0.0
    with pytest.raises(ValueError):
        distribution([])


@given(st.lists(st.floats(0.1, 1e4), min_size=1, max_size=50))
def test_order_statistics_are_ordered(values):
    d = distribution(values)
    assert d["min"] <= d["q1"] <= d["median"] <= d["q3"] <= d["max"]
    assert d["min"] - 1e-9 <= d["mean"] <= d["max"] + 1e-9 and d["std"] >= 0


# ---------------------------------------------------------------- paired accuracy


def table(b, c, both_right=50, both_wrong=10):
    """Rows with `b` baseline-only and `c` variant-only correct answers (label 1 everywhere)."""
    labels = np.ones(both_right + both_wrong + b + c, dtype=int)
    base = np.array([1] * both_right + [0] * both_wrong + [1] * b + [0] * c)
    var = np.array([1] * both_right + [0] * both_wrong + [0] * b + [1] * c)
    return labels, base, var


def test_known_mcnemar_values():
    cmp = paired_comparison(*table(b=10, c=2))
    assert (cmp.baseline_only, cmp.variant_only, cmp.differing_predictions) == (10, 2, 12)
    assert cmp.difference == pytest.approx(-8 / 72)
    assert cmp.p_exact == pytest.approx(0.03857, abs=1e-4)  # 2 * P(X <= 2), X ~ Bin(12, 0.5)
    assert cmp.p_mid == pytest.approx(0.03857 - 66 / 4096, abs=1e-4)
    low, high = cmp.interval
    assert low < cmp.difference < high < 0


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_mid_p_is_one_when_the_discordant_cells_are_equal(k):
    """b = c is the most probable table under the null: 2·P(X ≤ k) − P(X = k) = 1 (it read 0.5 for b = c = 1)."""
    cmp = paired_comparison(*table(b=k, c=k))
    assert cmp.p_exact == 1.0 and cmp.p_mid == pytest.approx(1.0)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mid_p_doubles_the_lower_tail_with_half_the_table_seen(b, c):
    """Fagerland et al. (2013): mid-p = 2·[P(X < k) + ½·P(X = k)], X ~ Bin(b + c, ½), k = min(b, c), by
    enumeration; at most 1."""
    from math import comb

    n, k = b + c, min(b, c)
    lower = sum(comb(n, x) for x in range(k)) / 2**n
    assert paired_comparison(*table(b, c)).p_mid == pytest.approx(min(1.0, 2 * (lower + comb(n, k) / 2**n / 2)))


def test_no_discordant_pairs():
    cmp = paired_comparison(*table(b=0, c=0))
    assert cmp.p_exact == 1.0 and cmp.p_mid == 1.0 and cmp.difference == 0.0
    low, high = cmp.interval
    assert low < 0 < high  # tiny n still gets an honest interval


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 200))
def test_mcnemar_is_symmetric_and_bounded(b, c, rest):
    one, other = paired_comparison(*table(b, c, rest)), paired_comparison(*table(c, b, rest))
    assert one.p_exact == pytest.approx(other.p_exact) and one.p_mid == pytest.approx(other.p_mid)
    assert 0 <= one.p_mid <= one.p_exact <= 1
    low, high = one.interval
    assert -1 <= low <= high <= 1
    assert one.interval == pytest.approx(tuple(-x for x in reversed(other.interval)))


@given(st.integers(0, 40), st.integers(1, 30))
def test_a_larger_effect_is_more_significant(b, extra):
    weaker, stronger = paired_comparison(*table(b + extra, b)), paired_comparison(*table(b + extra + 5, b))
    assert stronger.p_exact <= weaker.p_exact + 1e-12


def test_logit_differences_and_bootstrap_interval():
    d = logit_differences([[0.0, 1.0], [2.0, 2.0]], [[0.5, 1.0], [2.0, 0.0]])
    assert d["max"] == 2.0 and d["mean"] == pytest.approx(0.625)
    labels, base, var = table(b=30, c=5, both_right=200)
    low, high = paired_bootstrap_interval(lambda y, p: float(np.mean(y == p)), labels, base, var)
    assert low < -25 / 245 < high < 0


# ---------------------------------------------------------------- speed


def test_speed_ratio_interval_contains_the_ratio():
    ratio, low, high = speed_ratio_interval([2.0, 2.1, 1.9, 2.0, 2.2], [1.0, 1.05, 0.95, 1.0, 1.1])
    assert ratio == pytest.approx(2.0) and low <= ratio <= high


@given(st.lists(st.floats(0.5, 2.0), min_size=3, max_size=15))
def test_same_data_is_never_a_regression(times):
    result = compare_normalized_times(times, list(times))
    assert result.verdict == "no change" and result.effect == pytest.approx(0.0)


@given(st.lists(st.floats(0.9, 1.1), min_size=8, max_size=20), st.floats(1.3, 3.0))
def test_a_large_uniform_slowdown_is_a_regression_and_the_reverse_an_improvement(times, factor):
    slower = [t * factor for t in times]
    assert compare_normalized_times(times, slower).verdict == "regression"
    assert compare_normalized_times(slower, times).verdict == "improvement"


def test_tiny_samples_and_ties():
    assert compare_normalized_times([1.0, 1.0], [2.0, 2.0]).verdict == "insufficient evidence"
    assert compare_normalized_times([1.0] * 5, [1.0] * 5).verdict == "no change"
    # A big but noisy change on few rounds: not enough evidence either way.
    noisy = compare_normalized_times([1.0, 3.0, 1.0], [1.1, 3.3, 1.2], min_effect=0.05)
    assert noisy.verdict == "insufficient evidence"
