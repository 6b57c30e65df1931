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
    """Percentile interval of statistic(variant) − statistic(baseline), resampling rows together."""
    y, a, b = (np.asarray(v) for v in (labels, baseline_predictions, variant_predictions))
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        diffs[i] = statistic(y[idx], b[idx]) - statistic(y[idx], a[idx])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------- speed


def speed_ratio_interval(reference_seconds, variant_seconds, confidence: float = 0.95, resamples: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """Speed ratio (variant speed / reference speed = median reference time / median variant time)
    and its bootstrap percentile interval, each group resampled on its own."""
    ref, var = np.asarray(reference_seconds, dtype=float), np.asarray(variant_seconds, dtype=float)
    if len(ref) == 0 or len(var) == 0:
        raise ValueError("need round times of both")
    rng = np.random.default_rng(seed)
    ratios = np.median(rng.choice(ref, (resamples, len(ref))), axis=1) / np.median(
        rng.choice(var, (resamples, len(var))), axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(np.median(ref) / np.median(var)), float(low), float(high)


@dataclass(frozen=True)
class RunComparison:
    verdict: str
    effect: float  # relative change of the normalized time: +0.10 = 10% slower
    p_value: float
    n_old: int
    n_new: int


def compare_normalized_times(old, new, alpha: float = 0.05, min_effect: float = 0.05, min_rounds: int = 3
                             ) -> RunComparison:
    """Regression vs noise between two runs' round times, each already divided by its own run's
    baseline median (so a slower machine alone cancels). Two-sided Mann–Whitney U plus a minimum
    effect on the medians: significant and larger than `min_effect` is a regression (slower) or an
    improvement; a change smaller than `min_effect` is no change; a large change that is not
    significant, or too few rounds, is insufficient evidence."""
    old, new = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    if len(old) < min_rounds or len(new) < min_rounds:
        return RunComparison("insufficient evidence", float("nan"), float("nan"), len(old), len(new))
    from scipy.stats import mannwhitneyu

    effect = float(np.median(new) / np.median(old) - 1)
    p = float(mannwhitneyu(old, new, alternative="two-sided").pvalue)
    if abs(effect) < min_effect:
        verdict = "no change"
    elif p >= alpha:
        verdict = "insufficient evidence"
    else:
        verdict = "regression" if effect > 0 else "improvement"
    return RunComparison(verdict, effect, p, len(old), len(new))
