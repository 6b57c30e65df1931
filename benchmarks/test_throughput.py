"""Throughput of every variant, batch 1, on a fixed sample of evaluation texts: each variant on its own with
pytest-benchmark (its figures and saved baselines), and all of them in interleaved round-robin cycles with the
baseline (the same-run ratios that speed floors and `ortgate compare` rest on).

Compare runs with `ortgate compare --old RUN.json ... --new RUN.json ...`. pytest-benchmark's own
`--benchmark-compare-fail=median:10%` compares raw times of separate processes: on a shared machine those
move 15-30% between runs of one build, so a native threshold tells a gross slowdown only (README).
"""

import math
import warnings

import pytest

from ortgate.measure.throughput import MODES
from ortgate.plugin import benchmark_interleaved, benchmark_throughput, time_with_benchmark
from ortgate.spec.variants import BASELINE_ID


def _skip_if_same_graph(ortgate, variant_id):
    original = ortgate.plan.duplicate_of(variant_id)
    if original is not None:
        pytest.skip(f"{variant_id} has the same graph as {original} (byte-identical model.onnx): "
                    f"its speed is {original}'s")


@pytest.mark.parametrize("mode", MODES)
def test_throughput(benchmark, ortgate, ortgate_variant, mode, ortgate_repeat):
    _skip_if_same_graph(ortgate, ortgate_variant)
    benchmark_throughput(benchmark, ortgate, ortgate_variant, mode, ortgate_repeat)


def _int8_variant(ortgate):
    variant_id = ortgate.plan.first_int8_variant()
    if variant_id is None:
        pytest.skip("no quantized variant selected")
    return variant_id


def test_bare_onnxruntime_loop(benchmark, ortgate):
    """The yardstick for the harness: a plain InferenceSession.run loop on the same inputs."""
    variant_id = _int8_variant(ortgate)
    benchmark.group = "throughput model-only"
    benchmark.extra_info.update({"variant": variant_id, "mode": "bare onnxruntime loop"})
    s = ortgate.settings
    time_with_benchmark(benchmark, ortgate.meter.bare_onnxruntime(variant_id), len(ortgate.meter.texts),
                        s.bench_rounds, s.warmup_rounds)


def test_harness_does_not_distort_speed(ortgate):
    """Model-only samples/s through ortgate stays within 10% of the bare loop (same run, interleaved)."""
    check = ortgate.meter.harness_overhead(_int8_variant(ortgate))
    assert check.ratio >= 0.90, check.message


def test_speed_ratio_above_floor(ortgate, ortgate_candidate):
    """Same-run speed ratio to the baseline (or the parent), interleaved rounds, bootstrap interval;
    fails only when the whole interval lies below the variant's floor (--ortgate-speed-floor)."""
    original = ortgate.floors.same_check_as(ortgate_candidate)
    if original is not None:
        pytest.skip(f"{ortgate_candidate} has the same graph, reference and floor as {original}: its check is "
                    f"{original}'s")
    check = ortgate.floors.check(ortgate_candidate)
    assert check.passed, check.message


@pytest.mark.ortgate_interleaved
@pytest.mark.parametrize("mode", MODES)
def test_interleaved_speed(benchmark, ortgate, mode):
    """Every variant and the baseline timed in turn, cycle after cycle; each variant's speed ratio to the
    baseline is the trimmed mean of its per-cycle log ratios. The cycles go into the run record (`ortgate
    compare`)."""
    times = benchmark_interleaved(benchmark, ortgate, mode)
    s = ortgate.settings
    ran = len(next(iter(times.values())))  # a precision target may stop it early, never before min-cycles
    low = s.cycles if s.cycle_precision is None else min(s.min_cycles, s.cycles)
    assert low <= ran <= s.cycles, f"the round-robin ran {ran} cycles; expected {low} to {s.cycles}"
    broken = [vid for vid, t in times.items() if len(t) != ran or not all(math.isfinite(x) and x > 0 for x in t)]
    assert not broken, f"round-robin timing of {broken} did not give {ran} positive times, as every graph did"
    ratios = {vid: ortgate.meter.same_run_ratio(vid, BASELINE_ID, mode) for vid in times if vid != BASELINE_ID}
    wide = [f"{vid} {r.ratio:.2f}x [{r.interval[0]:.2f}, {r.interval[1]:.2f}]" for vid, r in ratios.items()
            if r.interval[1] / r.interval[0] > 1.2]
    if wide:
        warnings.warn(f"{mode}: within-run intervals wider than ±10% ({'; '.join(wide)}): this run is noisy; "
                      "compare needs more runs (or --ortgate-cycles) to tell a small change", stacklevel=1)
