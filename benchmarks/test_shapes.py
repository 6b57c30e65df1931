"""The shapes people deploy at, the thread count that suits this machine, and how close each variant runs to this
CPU's limit.

- Shape sweep: model-only throughput per batch size and sequence length (--ortgate-batch-sizes,
  --ortgate-seq-lengths; every row exactly that many tokens, cut from real texts), pytest-benchmark groups
  `shape bB sS`; the summary plots samples/s against sequence length (shapes.png).
- Thread sweep (--ortgate-threads-sweep 1,2,4): each ONNX graph at batch 1 on the benchmark texts per thread count.
- Distance to the limit: each graph's MACs per sample against this CPU's measured GEMM kernels (fp32, u8×s8,
  u8×u8, cached per CPU), as the share of the GEMM-bound ceiling its model-only speed reaches.
"""

import warnings

import pytest

from ortgate.plugin import benchmark_shape, benchmark_threads
from ortgate.spec.variants import BASELINE_ID


def _skip_if_same_graph(ortgate, variant_id):
    original = ortgate.plan.duplicate_of(variant_id)
    if original is not None:
        pytest.skip(f"{variant_id} has the same graph as {original}: its speeds are {original}'s")


def test_shape_throughput(benchmark, ortgate, ortgate_variant, ortgate_shape):
    batch, seq_len = ortgate_shape
    if seq_len > ortgate.plan.max_length:
        pytest.skip(f"sequence length {seq_len} is more than the {ortgate.plan.max_length} tokens this run's model "
                    "takes (max_length)")
    _skip_if_same_graph(ortgate, ortgate_variant)
    speed = benchmark_shape(benchmark, ortgate, ortgate_variant, batch, seq_len)
    assert speed is None or speed.samples_per_s > 0, f"{ortgate_variant} b{batch} s{seq_len}: no throughput"


def test_threads_sweep(benchmark, ortgate, ortgate_variant, ortgate_threads):
    if ortgate_threads is None:
        pytest.skip("no thread sweep asked for (--ortgate-threads-sweep 1,2,4)")
    if ortgate_variant == BASELINE_ID:
        pytest.skip("the thread sweep times ONNX Runtime sessions; PyTorch's thread count is process-wide")
    _skip_if_same_graph(ortgate, ortgate_variant)
    speed = benchmark_threads(benchmark, ortgate, ortgate_variant, ortgate_threads)
    assert speed is None or speed.samples_per_s > 0, f"{ortgate_variant} at {ortgate_threads} threads: no throughput"


def test_distance_to_limit(ortgate):
    """Every ONNX graph's model-only speed (round-robin cycles) as a share of the GEMM-bound ceiling of its MACs
    at this CPU's measured kernel speeds. A share above 1 means the ceiling was measured on a slower machine
    state than the variant (a noisy run), and warns."""
    limits = ortgate.roofline.measure()
    assert limits, "no ONNX graph to place against this CPU's limit"
    broken = {vid: r for vid, r in limits.items() if not (r.roofline.ceiling_samples_per_s > 0 and r.fraction > 0)}
    assert not broken, f"roofline figures missing or not positive: {broken}"
    above = [f"{vid} {r.fraction:.0%}" for vid, r in limits.items() if r.fraction > 1]
    if above:
        warnings.warn(f"model-only speed above the GEMM-bound ceiling ({', '.join(above)}): the kernels were timed "
                      "while the machine was slower than during the round-robin; rerun to see it settle",
                      stacklevel=1)
