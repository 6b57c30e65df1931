import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ortgate.measure.stats import (
    PairedComparison,
    compare_run_ratios,
    distribution,
    holm,
    logit_differences,
    minimum_detectable_drop,
    paired_bootstrap_interval,
    paired_comparison,
    paired_power,
    paired_ratio_interval,
    rows_needed,
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


def simulated_power(drop, discordant_rate, n, reps=2000, seed=0, confidence=0.95):
    """Share of seeded simulated runs of `n` paired rows (a true drop `drop`, discordant proportion at least
    `drop`) in which the gate's own interval of the difference lies wholly below zero: the drop is detected."""
    psi = max(discordant_rate, drop)
    cells = np.random.default_rng(seed).multinomial(n, [(psi + drop) / 2, (psi - drop) / 2, 1 - psi], size=reps)
    detected = [PairedComparison(n, int(n - b - c), int(b), int(c), 0, int(b + c), confidence).interval[1] < 0
                for b, c, _ in cells]
    return float(np.mean(detected))


def test_rows_needed_reproduces_connors_worked_example():
    # p10 = 0.45, p01 = 0.05 (a difference of 0.4, discordant 0.5), two-sided α = 0.05, 80% power: 23 pairs.
    assert rows_needed(0.4, 0.5, confidence=0.95, power=0.8) == 23
    assert paired_power(0.4, 0.5, 23) == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize("discordant_rate, n", [(0.08, 372), (0.05, 3000), (0.3, 200)])
def test_the_minimum_detectable_drop_is_detected_four_times_in_five(discordant_rate, n):
    """At the figure the formula gives, simulated runs detect the drop with about 80% power."""
    drop = minimum_detectable_drop(discordant_rate, n)
    assert paired_power(drop, discordant_rate, n) == pytest.approx(0.8, abs=1e-6)
    assert simulated_power(drop, discordant_rate, n) == pytest.approx(0.8, abs=0.05)


def test_the_rows_needed_detect_the_tolerance_four_times_in_five():
    n = rows_needed(0.015, 0.04)
    assert 1000 < n < 2000  # a 1.5pp drop among 4% discordant rows
    assert simulated_power(0.015, 0.04, n, seed=1) == pytest.approx(0.8, abs=0.05)
    assert simulated_power(0.015, 0.04, n // 3, seed=2) < 0.5  # a third of them: far too few


def test_no_discordant_row_gives_the_conservative_one_sided_figure():
    """ψ = 0: judged as if every discordant row went against the variant, ≈ (z_{.975} + z_{.8})² / n."""
    drop = minimum_detectable_drop(0.0, 372)
    assert drop == pytest.approx((1.96 + 0.8416) ** 2 / 372, rel=0.05)
    assert simulated_power(drop, 0.0, 372, seed=3) >= 0.8  # conservative: at least the power stated
    assert rows_needed(0.015, 0.0) == pytest.approx((1.96 + 0.8416) ** 2 / 0.015, rel=0.05)


@given(st.floats(0.0, 0.5), st.integers(10, 100_000))
def test_rows_needed_inverts_the_minimum_detectable_drop(discordant_rate, n):
    drop = minimum_detectable_drop(discordant_rate, n)
    assert 0 < drop <= 1
    assert n - 1 <= rows_needed(drop, discordant_rate) <= n + 1
    assert minimum_detectable_drop(discordant_rate, 4 * n) < drop  # more rows detect a smaller drop
    assert minimum_detectable_drop(min(1.0, discordant_rate + 0.1), n) >= drop  # more flips, noisier


def test_power_edge_cases():
    assert rows_needed(0.0, 0.1) is None  # no number of rows detects a drop of zero
    assert minimum_detectable_drop(0.1, 3) == 1.0  # three rows detect nothing
    assert minimum_detectable_drop(0.1, 400, confidence=0.99) > minimum_detectable_drop(0.1, 400, confidence=0.9)
    assert paired_power(1.0, 1.0, 10) == 1.0
    with pytest.raises(ValueError):
        paired_power(0.0, 0.1, 100)


# ---------------------------------------------------------------- speed


def test_paired_ratio_interval_contains_the_ratio_and_pairs_cancel_drift():
    drift = np.linspace(1.0, 3.0, 15)  # the machine slows threefold during the run, both alike
    wobble = 1 + np.random.default_rng(0).normal(0, 0.01, 15)
    ratio, low, high = paired_ratio_interval(2.0 * drift, drift * wobble)
    assert ratio == pytest.approx(2.0, rel=0.02) and low <= ratio <= high and high / low < 1.05


def test_paired_ratio_interval_coverage_is_near_nominal():
    """Seeded synthetic runs of 12 cycles with a known ratio: the 95% interval covers it about 95% of the time."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        machine = np.exp(rng.normal(0, 0.2, 12))  # cycle-to-cycle noise shared by both (cancels)
        reference = 2.0 * machine * np.exp(rng.normal(0, 0.05, 12))
        variant = machine * np.exp(rng.normal(0, 0.05, 12))
        _, low, high = paired_ratio_interval(reference, variant, resamples=500)
        covered += low <= 2.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_few_pairs_give_their_range():
    assert paired_ratio_interval([2.0, 2.2], [1.0, 1.0]) == (pytest.approx(4.4 ** 0.5), 2.0, 2.2)


def simulated_runs(reps, m, n, effect, sd, seed):
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        yield rng.normal(0, sd, m), rng.normal(-np.log1p(effect), sd, n)


@pytest.mark.parametrize("m, n", [(3, 3), (2, 4), (6, 6)])
def test_run_level_interval_coverage_and_false_alarms_are_nominal(m, n):
    """Runs as the unit, seeded normal log ratios: the 95% interval covers the true change ~95% of the time,
    and an A/A comparison calls the variant slower (one-sided p < 0.05) ~5% of the time."""
    results = [compare_run_ratios(x, y, run_noise=0.05) for x, y in simulated_runs(1000, m, n, 0.10, 0.04, m * n)]
    coverage = np.mean([r.interval[0] <= 0.10 <= r.interval[1] for r in results])
    assert 0.93 <= coverage <= 0.97  # ±3 standard errors of 1,000 draws around 0.95
    aa = [compare_run_ratios(x, y, run_noise=0.05) for x, y in simulated_runs(1000, m, n, 0.0, 0.04, 7)]
    assert 0.03 <= np.mean([r.p_slower < 0.05 for r in aa]) <= 0.07


def test_one_run_a_side_assumes_the_run_noise():
    result = compare_run_ratios([np.log(2.0)], [np.log(2.0 / 1.2)], run_noise=0.05)
    assert not result.estimated and result.run_sd == 0.05 and result.effect == pytest.approx(0.2)
    assert result.p_slower < 0.01 and result.interval[0] > 0


def test_runs_needed_grows_with_the_spread_and_shrinks_with_the_gap():
    noisy = compare_run_ratios([0.0, 0.1, -0.1], [0.0, 0.1, -0.1], run_noise=0.05)
    quiet = compare_run_ratios([0.0, 0.01, -0.01], [0.0, 0.01, -0.01], run_noise=0.05)
    assert noisy.runs_needed(0.05, 0.05) > quiet.runs_needed(0.05, 0.05) >= 2


def test_holm_matches_the_step_down_procedure():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_ratios_within_stops_only_when_every_ratio_is_tight():
    from ortgate.measure.stats import ratios_within

    rng = np.random.default_rng(5)
    base = rng.uniform(1.0, 1.5, 40)  # the machine's state per cycle, shared by every graph in that cycle
    quiet = {"ref": base, "a": base / 2 * np.exp(rng.normal(0, 0.01, 40)),
             "b": base / 3 * np.exp(rng.normal(0, 0.01, 40))}
    noisy = {**quiet, "b": base / 3 * np.exp(rng.normal(0, 0.2, 40))}
    refs = {"a": "ref", "b": "ref"}
    assert ratios_within(quiet, refs, 0.02)  # sd 1%, 40 cycles: half-width ~0.3%
    assert not ratios_within(noisy, refs, 0.02)  # one noisy graph keeps the round-robin going
    assert not ratios_within({k: v[:2] for k, v in quiet.items()}, refs, 0.5)  # two cycles tell nothing
