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
    broken = {vid: s for vid, s in stats.items() if not (0 < s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms)
              or not all(lo <= hi for lo, hi in s.intervals.values())}
    assert not broken, f"request latencies out of order (p50 ≤ p90 ≤ p99 ≤ max): {broken}"


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
