"""Throughput of every variant with pytest-benchmark, batch 1, on a fixed sample of evaluation texts.

Compare with a saved run: `pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%`.
"""

import pytest

from ortgate.measure.throughput import MODES
from ortgate.plugin import benchmark_throughput, time_with_benchmark


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
