"""Per-request latency: single stream, batch 1, every call timed on its own.

Throughput divides a round's time by its samples: an average, blind to the tail a user waits on. Here each
request (tokenize + run + argmax, one text) is timed with `perf_counter_ns`, and the run reports p50/p90/p99/max
with bootstrap intervals, plus MLPerf SingleStream's early-stopping estimates of p90 and p99 (the latency that
the true percentile lies below with 99% confidence, from the binomial count of calls above it).

The variants' passes are interleaved in blocks (variant after variant, in `rotation.round_order`, like the throughput
round-robin): noise that comes and goes within a run lands on every variant alike, so one variant's
tail is not another's quiet minute. Each block starts with one untimed call (the switch from another session
leaves cold caches that a deployed model serving one stream would not see). The pass is adaptive: it stops
when every variant's p99 is known to within `precision` (a distribution-free order-statistic interval, cheap
enough to check every cycle), after at least `min_calls`, and at most at `max_calls` a variant or `max_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ortgate.measure.rotation import round_order

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
EARLY_STOPPING_CONFIDENCE = 0.99  # MLPerf loadgen's


@dataclass(frozen=True)
class TimerOverhead:
    """What timing one call adds: the gap between two back-to-back `perf_counter_ns` reads."""

    median_ns: float
    p99_ns: float
    reads: int

    def as_dict(self) -> dict:
        return asdict(self)


def timer_overhead(reads: int = 20_000) -> TimerOverhead:
    clock = time.perf_counter_ns
    stamps = np.fromiter((clock() for _ in range(reads + 1)), dtype=np.int64, count=reads + 1)
    gaps = np.diff(stamps)
    return TimerOverhead(float(np.median(gaps)), float(np.quantile(gaps, 0.99)), reads)


def early_stopping_estimate(latencies: Sequence[float], percentile: float,
                            confidence: float = EARLY_STOPPING_CONFIDENCE) -> float | None:
    """MLPerf SingleStream's early-stopping estimate of a percentile (loadgen `results.cc`, `early_stopping.cc`):
    the largest t such that t or fewer of n calls above a latency would happen with probability below 1 −
    confidence if the true percentile were above it (Binomial(n, 1 − percentile) cdf at t); the estimate is the
    t-th largest latency (t − 1 discarded). None: too few calls for any t (loadgen's minimum: 662 calls for p99,
    64 for p90, at 99% confidence)."""
    from scipy.stats import binom

    x = np.sort(np.asarray(latencies, dtype=float))
    n = x.size
    if n == 0:
        return None
    t = np.arange(1, n + 1)
    passing = np.flatnonzero(binom.cdf(t, n, 1 - percentile) < 1 - confidence)  # a prefix: the cdf grows with t
    if passing.size == 0:
        return None
    return float(x[n - int(t[passing[-1]])])


def order_statistic_interval(sorted_latencies: np.ndarray, q: float, confidence: float) -> tuple[float, float]:
    """A distribution-free interval for the q-quantile from order statistics (the binomial ranks that bracket
    it): coverage at least `confidence` whatever the distribution, no resampling. When too few calls lie above
    the quantile for its upper rank (p99 at 95%: fewer than ~370 calls), the upper end is +inf: those calls do
    not bound it, and the largest call is no bound either (the true p99 lies above the largest of 50 calls with
    probability 0.99**50 ≈ 0.6)."""
    from scipy.stats import binom

    n = sorted_latencies.size
    alpha = 1 - confidence
    low = int(binom.ppf(alpha / 2, n, q)) - 1
    high = int(binom.ppf(1 - alpha / 2, n, q))
    return (float(sorted_latencies[max(low, 0)]),
            float(sorted_latencies[high]) if high < n else float("inf"))


@dataclass(frozen=True)
class LatencyStats:
    """One variant's request latencies (ms): quantiles with bootstrap intervals, max, mean, MLPerf estimates."""

    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    intervals: dict[str, tuple[float, float]]  # p50/p90/p99 -> bootstrap interval (percentile method)
    # p50/p90/p99 -> order-statistic interval (distribution-free; upper None: the calls do not bound it): what a
    # budget judges, since a percentile bootstrap of a tail quantile cannot reach past the largest call
    exact_intervals: dict[str, tuple[float, float | None]]
    confidence: float
    early_stopping_p90_ms: float | None
    early_stopping_p99_ms: float | None

    def as_dict(self) -> dict:
        return {**asdict(self), "intervals": {k: list(v) for k, v in self.intervals.items()},
                "exact_intervals": {k: list(v) for k, v in self.exact_intervals.items()}}


def latency_stats(latencies_ms: Sequence[float], confidence: float = 0.95, resamples: int = 1000,
                  seed: int = 0) -> LatencyStats:
    """Quantiles of the calls, with scipy.stats.bootstrap percentile intervals (BCa's jackknife is degenerate for
    a quantile: it moves in steps of one order statistic), seeded so a record reproduces."""
    from scipy.stats import bootstrap

    x = np.asarray(latencies_ms, dtype=float)
    if x.size < 2:
        raise ValueError("need at least two timed calls")
    points = dict(zip(QUANTILES, np.quantile(x, list(QUANTILES.values())), strict=True))
    intervals, exact, ordered = {}, {}, np.sort(x)
    for name, q in QUANTILES.items():
        ci = bootstrap((x,), lambda s, axis, q=q: np.quantile(s, q, axis=axis), confidence_level=confidence,
                       n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        intervals[name] = (float(ci.low), float(ci.high))
        low, high = order_statistic_interval(ordered, q, confidence)
        exact[name] = (low, high if np.isfinite(high) else None)
    return LatencyStats(int(x.size), float(points["p50"]), float(points["p90"]), float(points["p99"]),
                        float(x.max()), float(x.mean()), intervals, exact, confidence,
                        early_stopping_estimate(x, 0.90), early_stopping_estimate(x, 0.99))


class LatencyPass:
    """Single-stream request latencies of several variants, interleaved in blocks, until every variant's p99 is
    known to within `precision` (relative half-width of its order-statistic interval) or a cap is reached.

    `requests[name](i)` serves request i (batch 1); `times_ns[name]` holds each timed call."""

    def __init__(self, requests: dict[str, Callable[[int], object]], *, block: int = 50, min_calls: int = 400,
                 max_calls: int = 4000, max_seconds: float = 90.0, precision: float = 0.05,
                 confidence: float = 0.95) -> None:
        if not requests:
            raise ValueError("no variant to time")
        if min_calls > max_calls:
            raise ValueError(f"min_calls ({min_calls}) is more than max_calls ({max_calls})")
        self.requests, self.block = dict(requests), min(block, max_calls)
        self.min_calls, self.max_calls, self.max_seconds = min_calls, max_calls, max_seconds
        self.precision, self.confidence = precision, confidence
        self.times_ns: dict[str, list[int]] = {name: [] for name in requests}
        self.cycles = 0
        self.stopped = ""  # why the pass ended: "converged", "max calls", "max seconds"

    def _block(self, name: str) -> None:
        request, times, clock = self.requests[name], self.times_ns[name], time.perf_counter_ns
        start = len(times)
        request(start)  # untimed: the first call after another session ran
        for i in range(start, start + self.block):
            began = clock()
            request(i)
            times.append(clock() - began)

    def cycle(self) -> None:
        for name in round_order(list(self.requests), self.cycles):
            self._block(name)
        self.cycles += 1

    def p99_precision(self, name: str) -> float:
        """The larger side of the p99's order-statistic interval, relative to the p99 (inf: not bounded yet)."""
        x = np.sort(np.asarray(self.times_ns[name], dtype=float))
        p99 = float(np.quantile(x, 0.99))
        low, high = order_statistic_interval(x, 0.99, self.confidence)
        return max(high - p99, p99 - low) / p99 if p99 > 0 else float("inf")

    def converged(self) -> bool:
        return all(len(t) >= self.min_calls and self.p99_precision(n) <= self.precision
                   for n, t in self.times_ns.items())

    def run(self, on_cycle: Callable[[int], None] | None = None) -> dict[str, list[int]]:
        started = time.perf_counter()
        while True:
            self.cycle()
            if on_cycle is not None:
                on_cycle(self.cycles)
            if self.converged():
                self.stopped = "converged"
            elif max(len(t) for t in self.times_ns.values()) + self.block > self.max_calls:
                self.stopped = "max calls"
            elif time.perf_counter() - started > self.max_seconds:
                self.stopped = "max seconds"
            if self.stopped:
                return self.times_ns

    def stats(self, name: str, resamples: int = 1000) -> LatencyStats:
        return latency_stats(np.asarray(self.times_ns[name], dtype=float) / 1e6, self.confidence, resamples)


def request_workload(predictor, texts: Sequence[str]) -> Callable[[int], object]:
    """One request end to end, as a deployed classifier serves it: tokenize one text, run, take the argmax."""

    def request(i: int) -> object:
        return predictor.run(predictor.encode([texts[i % len(texts)]])).argmax(-1)

    return request
