"""What a deployment sees: request latency (single stream, batch 1, every call timed, p50/p90/p99 with intervals),
memory and cold load time (each variant in fresh processes), and the budgets set on them
(--ortgate-budgets / [tool.ortgate] budgets), which fail only when a figure's whole interval lies above the limit.
"""

import math

import pytest

from ortgate.plugin import benchmark_footprints, benchmark_latency


@pytest.mark.ortgate_latency
def test_request_latency(benchmark, ortgate):
    """Every graph's requests timed one by one, interleaved in blocks, until each p99 is known to within
    --ortgate-latency-precision (or a cap); the figures go to the record and the benchmark's extra_info."""
    stats = benchmark_latency(benchmark, ortgate)
    robin, s = ortgate.meter.latency_pass, ortgate.settings
    calls = {vid: len(t) for vid, t in robin.times_ns.items()}
    assert len(set(calls.values())) == 1, f"the graphs took turns, so each has as many calls: {calls}"
    assert robin.stopped in ("converged", "max calls", "max seconds"), robin.stopped
    if robin.stopped == "converged":  # the stop rule held when it stopped: every p99 within the precision
        loose = {vid: p for vid in calls if (p := robin.p99_precision(vid)) > s.latency_precision}
        assert not loose and min(calls.values()) >= s.latency_min_calls, (loose, calls)
    else:
        assert robin.stopped != "max calls" or max(calls.values()) <= s.latency_max_calls, calls
    # MLPerf's estimate lies above the sample percentile (it is an upper confidence bound), whenever there is one
    below = [vid for vid, x in stats.items()
             if x.early_stopping_p90_ms is not None and x.early_stopping_p90_ms < x.p90_ms]
    assert not below, f"early-stopping p90 estimate below the sample p90 for {below}"


@pytest.mark.ortgate_latency
def test_memory_and_load_time(benchmark, ortgate):
    """Peak RSS, the RSS the variant adds, and the cold session creation, each graph in fresh processes
    (--ortgate-footprint-rounds, rotated order)."""
    summaries = benchmark_footprints(benchmark, ortgate)
    broken = [vid for vid, rounds in summaries.items()
              if not all(math.isfinite(f.peak_rss_mb) and f.peak_rss_mb >= f.rss_before_load_mb > 0
                         and f.load_seconds > 0 for f in rounds)]
    assert not broken, f"footprint probes of {broken} gave no usable figures"


def test_within_budget(ortgate, ortgate_variant):
    """Each budget that names the variant: fails only when the figure's whole interval lies above the limit, or
    when the figure could not be measured."""
    check = ortgate.budgets.check(ortgate_variant)
    if check is None:
        pytest.skip(f"no budget names {ortgate_variant} (--ortgate-budgets)")
    assert check.passed, check.message
