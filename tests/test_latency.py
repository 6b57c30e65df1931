import numpy as np
import pytest

from ortgate.measure.latency import (
    LatencyPass,
    early_stopping_estimate,
    latency_stats,
    order_statistic_interval,
    request_workload,
    timer_overhead,
)


@pytest.mark.parametrize(("n", "discarded"), [(2048, 172), (7469, 685), (659, 47)])
def test_early_stopping_discards_what_mlperf_loadgen_reports(n, discarded):
    """MLPerf SingleStream summaries: 2048 queries -> "Would discard 172 highest latency queries", 7469 -> 685,
    659 -> 47 (and too few for the 99th percentile estimate)."""
    latencies = np.arange(n, dtype=float)  # the k-th smallest is k: the estimate's rank reads off directly
    assert early_stopping_estimate(latencies, 0.90) == n - 1 - discarded
    if n == 659:
        assert early_stopping_estimate(latencies, 0.99) is None


def test_early_stopping_estimate_lies_above_the_sample_percentile():
    x = np.random.default_rng(3).lognormal(1.0, 0.4, 3000)
    assert early_stopping_estimate(x, 0.9) >= np.quantile(x, 0.9)
    assert early_stopping_estimate([], 0.9) is None


def test_order_statistic_interval_covers_the_true_quantile_at_its_level():
    rng = np.random.default_rng(0)
    true_p99 = float(np.exp(1.0 + 0.3 * 2.3263478740408408))  # lognormal(1, 0.3): exp(mu + sigma z_0.99)
    covered = 0
    for _ in range(400):
        x = np.sort(rng.lognormal(1.0, 0.3, 1000))
        low, high = order_statistic_interval(x, 0.99, 0.95)
        covered += low <= true_p99 <= high
    assert covered / 400 >= 0.92  # exact binomial interval: at least 95% up to sampling error of 400 trials


def test_latency_stats_orders_quantiles_and_brackets_them():
    x = np.random.default_rng(1).lognormal(1.0, 0.3, 2000)
    s = latency_stats(x, confidence=0.95, resamples=500)
    assert s.calls == 2000 and s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    for name in ("p50", "p90", "p99"):
        low, high = s.intervals[name]
        assert low <= getattr(s, f"{name}_ms") <= high
    assert s.early_stopping_p90_ms >= s.p90_ms
    assert latency_stats(x, resamples=500) == s  # seeded: a record reproduces
    with pytest.raises(ValueError):
        latency_stats([1.0])


def test_latency_pass_rotates_blocks_and_stops_at_the_first_cap_it_meets():
    calls = []
    requests = {name: (lambda i, n=name: calls.append((n, i))) for name in "abc"}
    robin = LatencyPass(requests, block=10, min_calls=20, max_calls=40, max_seconds=60, precision=1e-9)
    times = robin.run()
    assert robin.stopped == "max calls" and all(len(t) == 40 for t in times.values())
    blocks = [calls[i][0] for i in range(0, len(calls), 11)]  # each block: one untimed call, then 10 timed
    assert "".join(blocks) == "abc" + "cba" + "bca" + "acb"  # pairs of cycles, the second reversed, then rotated
    assert [calls[i][1] for i in range(11)] == [0] + list(range(10))  # the untimed call, then requests 0..9


def test_latency_pass_stops_once_converged_after_the_minimum(monkeypatch):
    from ortgate.measure import latency

    ticks = iter(range(0, 10**9, 1000))  # a fake clock: every call takes 1 µs, so no machine noise decides
    monkeypatch.setattr(latency.time, "perf_counter_ns", lambda: next(ticks))
    robin = LatencyPass({"a": lambda i: None}, block=50, min_calls=500, max_calls=10_000, max_seconds=60,
                        precision=10.0)  # any bounded interval is within ±1000%: converged once the minimum is met
    robin.run()
    assert robin.stopped == "converged" and len(robin.times_ns["a"]) == 500
    assert robin.stats("a").calls == 500


def test_latency_pass_refuses_no_variants():
    with pytest.raises(ValueError):
        LatencyPass({})


def test_a_request_tokenizes_one_text_and_takes_the_argmax():
    class Predictor:
        def __init__(self):
            self.seen = []

        def encode(self, texts):
            self.seen.append(list(texts))
            return {"n": len(texts)}

        def run(self, features):
            return np.array([[0.1, 0.9]])

    predictor = Predictor()
    request = request_workload(predictor, ["x", "y"])
    assert request(3) == np.array([1]) and predictor.seen == [["y"]]


def test_timer_overhead_is_measured_not_assumed():
    overhead = timer_overhead(reads=1000)
    assert overhead.reads == 1000 and 0 <= overhead.median_ns <= overhead.p99_ns


def test_too_few_calls_leave_a_tail_quantile_unbounded_above():
    """50 calls cannot bound p99 (the true p99 lies above the largest of them with probability 0.99**50 ≈ 0.6):
    the interval is open above, where a percentile bootstrap would stop at the largest call."""
    x = np.sort(np.random.default_rng(2).lognormal(1.0, 0.3, 50))
    low, high = order_statistic_interval(x, 0.99, 0.95)
    assert high == float("inf") and low <= np.quantile(x, 0.99)
    s = latency_stats(x, resamples=200)
    assert s.exact_intervals["p99"][1] is None and s.intervals["p99"][1] <= x.max()
    assert s.exact_intervals["p50"][1] is not None  # the median is bounded by 50 calls


def test_latency_pass_refuses_a_minimum_above_its_maximum_and_caps_the_block():
    with pytest.raises(ValueError, match="min_calls"):
        LatencyPass({"a": lambda i: None}, min_calls=500, max_calls=100)
    robin = LatencyPass({"a": lambda i: None}, block=50, min_calls=10, max_calls=20, precision=1e-9)
    robin.run()
    assert robin.block == 20 and len(robin.times_ns["a"]) == 20 and robin.stopped == "max calls"
