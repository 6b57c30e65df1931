"""Statistics of measurements: distributions, paired accuracy tests, speed ratios, run comparisons.

Pure functions (no I/O); scipy supplies the distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def distribution(values: Sequence[float]) -> dict[str, float]:
    """count, mean, std (sample, ddof=1; 0 for one value), min, quartiles and max."""
    if len(values) == 0:
        raise ValueError("no values")
    x = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {
        "count": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(x.max()),
    }


# ---------------------------------------------------------------- paired accuracy


@dataclass(frozen=True)
class PairedComparison:
    """A variant against the baseline on the same rows: the 2×2 table of correct/wrong, McNemar's
    exact test and mid-p on its discordant cells, and an Agresti–Min interval for the accuracy
    difference (variant − baseline)."""

    n: int
    both_right: int
    baseline_only: int  # baseline right, variant wrong
    variant_only: int  # variant right, baseline wrong
    both_wrong: int
    differing_predictions: int
    confidence: float

    @property
    def difference(self) -> float:
        return (self.variant_only - self.baseline_only) / self.n

    @property
    def discordant(self) -> int:
        return self.baseline_only + self.variant_only

    @property
    def p_exact(self) -> float:
        if self.discordant == 0:
            return 1.0
        from scipy.stats import binomtest

        return float(binomtest(min(self.baseline_only, self.variant_only), self.discordant, 0.5).pvalue)

    @property
    def p_mid(self) -> float:
        """Mid-p McNemar: less conservative than the exact test, close to nominal size (Fagerland 2013)."""
        if self.discordant == 0:
            return 1.0
        from scipy.stats import binom

        # Two-sided mid-p = 2·P(X ≤ k) − P(X = k), X ~ Bin(b + c, 1/2), k = min(b, c). Not "exact p − P(X = k)":
        # the exact p is capped at 1 when b = c, and subtracting from the cap gave 0.5 for b = c = 1 (it is 1).
        k, n = min(self.baseline_only, self.variant_only), self.discordant
        return float(min(1.0, 2 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5)))

    @property
    def interval(self) -> tuple[float, float]:
        """Agresti–Min (2005): Wald on the table with 0.5 added to each cell; good coverage at any n."""
        from scipy.stats import norm

        n = self.n + 2
        p12, p21 = (self.baseline_only + 0.5) / n, (self.variant_only + 0.5) / n
        d = p21 - p12
        se = math.sqrt(max(p12 + p21 - d * d, 0.0) / n)
        z = float(norm.ppf(0.5 + self.confidence / 2))
        return max(-1.0, d - z * se), min(1.0, d + z * se)

    def as_dict(self) -> dict:
        low, high = self.interval
        return {"n": self.n, "both_right": self.both_right, "baseline_only": self.baseline_only,
                "variant_only": self.variant_only, "both_wrong": self.both_wrong,
                "differing_predictions": self.differing_predictions, "difference": self.difference,
                "interval": [low, high], "confidence": self.confidence, "mcnemar_p_exact": self.p_exact,
                "mcnemar_p_mid": self.p_mid}


def paired_comparison(labels, baseline_predictions, variant_predictions, confidence: float = 0.95
                      ) -> PairedComparison:
    y, a, b = (np.asarray(v) for v in (labels, baseline_predictions, variant_predictions))
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise ValueError("labels and both prediction arrays need the same, non-zero length")
    ra, rb = a == y, b == y
    return PairedComparison(
        n=int(len(y)),
        both_right=int(np.sum(ra & rb)),
        baseline_only=int(np.sum(ra & ~rb)),
        variant_only=int(np.sum(~ra & rb)),
        both_wrong=int(np.sum(~ra & ~rb)),
        differing_predictions=int(np.sum(a != b)),
        confidence=confidence,
    )


def logit_differences(baseline_logits, variant_logits) -> dict[str, float]:
    """max, mean and 99th percentile of |variant − baseline| over every logit."""
    diff = np.abs(np.asarray(variant_logits, dtype=float) - np.asarray(baseline_logits, dtype=float))
    return {"max": float(diff.max()), "mean": float(diff.mean()), "p99": float(np.percentile(diff, 99))}


def paired_bootstrap_interval(statistic, labels, baseline_predictions, variant_predictions,
                              confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Interval of statistic(variant) − statistic(baseline), resampling rows together (scipy.stats.bootstrap,
    paired; BCa, or percentile where BCa is undefined, e.g. when no prediction differs)."""
    y, a, b = (np.asarray(v) for v in (labels, baseline_predictions, variant_predictions))
    return bca_else_percentile((y, a, b), lambda y_, a_, b_: statistic(y_, b_) - statistic(y_, a_), confidence,
                               resamples, seed, paired=True, vectorized=False)


def bca_else_percentile(data: tuple, statistic, confidence: float, resamples: int, seed: int,
                        **options) -> tuple[float, float]:
    """scipy.stats.bootstrap's BCa interval, or its percentile interval where BCa is undefined (it warns and
    gives nan on a degenerate distribution, e.g. tied values); seeded, so reproducible."""
    import warnings

    from scipy.stats import bootstrap

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap(data, statistic, confidence_level=confidence, n_resamples=resamples, method=method,
                           rng=np.random.default_rng(seed), **options).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


# Power of the paired design (Connor 1987, "Sample size for testing differences in proportions for the
# paired-sample design", Biometrics 43(1):207–211, p. 209): McNemar's two-sided z test at level α = 1 − confidence
# detects a drop δ = p10 − p01 (p10: baseline-only right, p01: variant-only right) among n rows with discordant
# proportion ψ = p10 + p01 with power Φ((δ√n − z_{1−α/2}√ψ) / √(ψ − δ²)) (the opposite tail, negligible here,
# left out), i.e. n = [z_{1−α/2}√ψ + z_{power}√(ψ − δ²)]² / δ². ψ is the run's observed discordant rate, but
# never below δ itself: a drop of δ makes at least δ of the rows discordant (so ψ = 0, no row told apart, is
# judged as if every discordant row went against the variant: the conservative figure ≈ (z_{1−α/2} + z_{power})²/n).

DETECTION_POWER = 0.8


def _z_scores(confidence: float, power: float = DETECTION_POWER) -> tuple[float, float]:
    """z_{1−α/2} of the two-sided level α = 1 − confidence, and z_{power}."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2)), float(norm.ppf(power))


def paired_power(drop: float, discordant_rate: float, n: int, confidence: float = 0.95) -> float:
    """Connor's power to detect an accuracy drop `drop` (a fraction) over `n` paired rows whose discordant
    proportion is `discordant_rate` (floored at `drop`)."""
    if not 0 < drop <= 1:
        raise ValueError(f"a drop to detect is in (0, 1], got {drop!r}")
    from scipy.stats import norm

    z_alpha, _ = _z_scores(confidence)
    psi = max(discordant_rate, drop)
    shift, spread = drop * math.sqrt(n) - z_alpha * math.sqrt(psi), math.sqrt(max(psi - drop * drop, 0.0))
    if spread == 0.0:  # every row discordant, all one way: no variance left
        return 1.0 if shift > 0 else 0.0
    return float(norm.cdf(shift / spread))


def minimum_detectable_drop(discordant_rate: float, n: int, confidence: float = 0.95,
                            power: float = DETECTION_POWER) -> float:
    """The smallest accuracy drop (a fraction) that `n` paired rows detect with `power`, given the observed
    discordant proportion ψ: Connor's equation solved for δ. With b = [z_{1−α/2}√n + z_{power}√(n + z_{power}²
    − z_{1−α/2}²)] / (n + z_{power}²), δ = b√ψ while that is at most ψ, else b² (ψ floored at δ). 1.0 when no drop
    is detectable (n ≤ z_{1−α/2}²)."""
    z_alpha, z_power = _z_scores(confidence, power)
    if n <= z_alpha * z_alpha:
        return 1.0
    b = (z_alpha * math.sqrt(n) + z_power * math.sqrt(n + z_power**2 - z_alpha**2)) / (n + z_power**2)
    return min(1.0, b * max(math.sqrt(max(discordant_rate, 0.0)), b))


def rows_needed(drop: float, discordant_rate: float, confidence: float = 0.95,
                power: float = DETECTION_POWER) -> int | None:
    """Paired rows needed to detect an accuracy drop `drop` (a fraction) with `power`, at the observed
    discordant proportion (floored at `drop`): Connor's n, rounded up. None for a drop of 0 (no number does)."""
    if drop <= 0:
        return None
    z_alpha, z_power = _z_scores(confidence, power)
    drop = min(drop, 1.0)
    psi = max(discordant_rate, drop)
    n = ((z_alpha * math.sqrt(psi) + z_power * math.sqrt(max(psi - drop * drop, 0.0))) / drop) ** 2
    return math.ceil(n - 1e-9)  # not one row more for float rounding of a whole number


# ---------------------------------------------------------------- speed


TRIM = 0.2  # the share of per-cycle ratios cut at each end before averaging (see `cycle_log_ratio`)


def cycle_log_ratio(log_ratios, axis: int = -1):
    """One run's figure from its per-cycle log ratios: their 20% trimmed mean. Robust to a cycle hit by a burst
    (like the median) and closer to the mean's efficiency: on 6 saved runs of the default matrix (12 cycles
    each) the spread between runs of a row was 3.5% with it, 4.5% with the median (median over rows)."""
    from scipy.stats import trim_mean

    return trim_mean(log_ratios, TRIM, axis=axis)


def paired_ratio_interval(reference_seconds, variant_seconds, confidence: float = 0.95, resamples: int = 2000,
                          seed: int = 0) -> tuple[float, float, float]:
    """Speed ratio (variant speed / reference speed) from paired rounds, round i of each timed side by side:
    the trimmed mean over rounds of log(reference time / variant time) (`cycle_log_ratio`), and a bootstrap
    interval that resamples the pairs together (scipy.stats.bootstrap, BCa; percentile where BCa is
    undefined, e.g. tied ratios). With fewer than 3 pairs the interval is the range of the pair ratios."""
    ref, var = np.asarray(reference_seconds, dtype=float), np.asarray(variant_seconds, dtype=float)
    if len(ref) == 0 or len(ref) != len(var):
        raise ValueError("need the same, non-zero number of rounds of both")
    logs = np.log(ref / var)
    estimate = float(np.exp(cycle_log_ratio(logs)))
    if len(logs) < 3 or np.ptp(logs) == 0:
        return estimate, float(np.exp(logs.min())), float(np.exp(logs.max()))
    low, high = _bootstrap(logs, confidence, resamples, seed)
    return estimate, float(np.exp(low)), float(np.exp(high))


def ratios_within(times: dict[str, Sequence[float]], reference: dict[str, str], precision: float,
                  confidence: float = 0.95) -> bool:
    """Whether every variant's speed ratio to its reference, from round-robin cycles (`times[id][c]`, cycle c of
    each timed side by side), is known to within `precision`: the half-width of the t interval of its mean
    per-cycle log ratio at `confidence` is at most log(1 + precision). A cheap stand-in, checked after every
    cycle, for the bootstrap interval the run records: on 72 rows of 4 saved runs (24 cycles) its half-width
    was 0.97-1.32 times the bootstrap's (median 1.07), so it stops a little later, not sooner."""
    from scipy.stats import t

    limit = math.log1p(precision)
    for variant, ref in reference.items():
        logs = np.log(np.asarray(times[ref], dtype=float) / np.asarray(times[variant], dtype=float))
        n = logs.size
        if n < 3:
            return False
        if float(t.ppf(0.5 + confidence / 2, n - 1)) * float(np.std(logs, ddof=1)) / math.sqrt(n) > limit:
            return False
    return True


def _bootstrap(values: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    low, high = bca_else_percentile((values,), cycle_log_ratio, confidence, resamples, seed)
    if np.isfinite(low) and np.isfinite(high):
        return low, high
    return float(values.min()), float(values.max())


@dataclass(frozen=True)
class RunLevelComparison:
    """Two groups of runs, one number per run (its log speed ratio to the reference, measured interleaved):
    the run is the unit. `effect` is the relative change of the variant's time against the reference,
    new vs old (+0.10: 10% slower); `interval` is its two-sided interval at `confidence`, `equivalence` the
    (1 − 2α) interval an equivalence test (TOST) reads; `p_slower`/`p_faster` are one-sided p-values."""

    effect: float
    interval: tuple[float, float]
    equivalence: tuple[float, float]
    p_slower: float
    p_faster: float
    n_old: int
    n_new: int
    run_sd: float  # sd of one run's log ratio used: estimated from the runs, or the assumed run noise
    estimated: bool  # False: too few runs to estimate the between-run spread, `run_noise` was assumed

    def runs_needed(self, min_effect: float, alpha: float, power: float = 0.8) -> int:
        """Runs a side that would likely settle the question at this spread: detect the estimated change
        where it is at least half the minimum effect, else show equivalence within ±min_effect."""
        from scipy.stats import norm

        e, d = abs(math.log1p(self.effect)), math.log1p(min_effect)
        gap = e if e >= d / 2 else d - e
        z = norm.ppf(1 - alpha) + norm.ppf(power)
        return max(2, math.ceil(2 * (self.run_sd * z / max(gap, 1e-9)) ** 2))


def pooled_spread(old_logs, new_logs) -> tuple[float, int]:
    """The pooled within-group variance of two groups of per-run values and its degrees of freedom (m + n − 2)."""
    x, y = np.asarray(old_logs, dtype=float), np.asarray(new_logs, dtype=float)
    df = len(x) + len(y) - 2
    if df < 1:
        return float("nan"), 0
    return float((((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()) / df), df


def compare_run_ratios(old_logs, new_logs, *, run_noise: float, confidence: float = 0.95,
                       alpha: float = 0.05) -> RunLevelComparison:
    """Compare per-run log speed ratios of two groups of runs (the reference and the variant interleaved
    within each run, so a slow run alone cancels). With two or more runs on a side the spread between runs is
    estimated from them: pooled two-sample t on the runs (m + n − 2 degrees of freedom). With one run a side it
    cannot be, and `run_noise` (the sd of one run's log ratio, measured on saved runs of one build) is assumed.

    Tried and left out: a moderated t whose variance borrows from the other rows of the comparison (empirical
    Bayes, Smyth 2004). On 12 saved runs of the default matrix the rows' spreads differ 4-fold (2% to 8%), the
    shared prior understated the noisy rows, and 2 and 3 runs a side failed 10.5% and 6.0% of A/A jobs (4.5%
    and 2.5% with each row's own variance) without catching more slowdowns."""
    from scipy.stats import norm, t

    x, y = np.asarray(old_logs, dtype=float), np.asarray(new_logs, dtype=float)
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("need at least one run on each side")
    diff = float(x.mean() - y.mean())  # > 0: the new runs' variant is slower relative to the reference
    variance, df = pooled_spread(x, y)
    if df >= 1:
        sd, dist, estimated = math.sqrt(variance), t(df), True
    else:
        sd, dist, estimated = run_noise, norm(), False
    se = max(sd * math.sqrt(1 / m + 1 / n), 1e-12)
    half = float(dist.ppf(0.5 + confidence / 2)) * se
    half_eq = float(dist.ppf(1 - alpha)) * se
    stat = diff / se
    return RunLevelComparison(
        effect=math.expm1(diff), interval=(math.expm1(diff - half), math.expm1(diff + half)),
        equivalence=(math.expm1(diff - half_eq), math.expm1(diff + half_eq)),
        p_slower=float(dist.sf(stat)), p_faster=float(dist.cdf(stat)), n_old=m, n_new=n, run_sd=sd,
        estimated=estimated)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down): rejecting where adjusted p < α keeps the family-wise
    error rate over all of them at most α, whatever their dependence."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
