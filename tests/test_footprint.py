"""Footprints: each probe in a fresh process, memory and load time reported per round.

Sizes, not speeds, are asserted: a float initializer of N bytes is resident once the session is made, and the
kernel counts those pages alike on every run (the 67 MB graph's peak: 205.26 and 205.28 MB in two processes
here), whereas load times on a noisy 2-core machine are only checked for being positive.
"""

from pathlib import Path

import numpy as np
import pytest

from ortgate.errors import OrtgateError
from ortgate.measure.footprint import (
    Footprint,
    FootprintError,
    Probe,
    _reset_high_water_mark,
    load_inputs,
    measure_footprints,
    round_order,
    save_inputs,
    summarize,
)

WIDTH = 512
SMALL, BIG = 512, 32768  # output widths of x[1, 512] @ W[512, out]: float32 initializers of 1 MB and 67 MB


def matmul_model(path: Path, outputs: int) -> Path:
    """y = x @ W with a WIDTH x outputs float initializer: the graph's memory is the initializer's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).random((WIDTH, outputs), dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any onnxruntime >= 1.14
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def features(rows: int = 3) -> list[dict]:
    # The tiny BERT takes input_ids/attention_mask/token_type_ids, the MatMul graphs x: each child feeds only
    # what its model takes, so one set of inputs serves all.
    ids = np.array([[2, 10, 11, 3]], dtype=np.int64)
    return [{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids),
             "x": np.ones((1, WIDTH), dtype=np.float32)} for _ in range(rows)]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("footprint")
    small, big = matmul_model(root / "small" / "model.onnx", SMALL), matmul_model(root / "big" / "model.onnx", BIG)
    probes = [Probe("small", "onnx", small.parent), Probe("big", "onnx", big), Probe("torch", "pytorch", tiny_model)]
    seen, lines = [], []
    results = measure_footprints(probes, features(), threads=1, rounds=2, log=lines.append, on_probe=seen.append)
    return probes, results, seen, lines


def test_every_probe_reports_sane_memory_and_times(measured):
    _, results, seen, lines = measured
    assert set(results) == {"small", "big", "torch"}
    assert [f.variant for f in seen] == ["small", "big", "torch"] + ["torch", "big", "small"]  # round 1 reversed
    for variant, footprints in results.items():
        assert [f.round for f in footprints] == [0, 1]
        # VmHWM, reset before the load, where the kernel allows the reset (this process tries it too)
        expected_source = ("VmHWM" if _reset_high_water_mark() else
                           "VmHWM since start" if Path("/proc/self/status").exists() else "ru_maxrss")
        for f in footprints:
            assert f.variant == variant and f.calls == 3
            assert f.peak_rss_mb >= f.rss_before_load_mb > 0
            assert f.peak_rss_mb == max(f.load_peak_rss_mb, f.run_peak_rss_mb)
            assert f.load_peak_rss_mb >= f.rss_before_load_mb + f.load_rss_mb - 0.5  # a sample within a page or so
            assert f.peak_rss_mb >= f.sampled_peak_rss_mb > 0
            assert f.model_rss_mb == pytest.approx(f.peak_rss_mb - f.rss_before_load_mb)
            assert f.load_seconds > 0 and f.inference_seconds > 0
            assert f.peak_source == expected_source
    assert any("footprints" in line for line in lines)


def test_a_bigger_initializer_costs_its_size_in_memory(measured):
    _, results, _, _ = measured
    small, big = summarize(results["small"]), summarize(results["big"])
    difference = WIDTH * (BIG - SMALL) * 4 / 1e6
    # The initializer's pages are resident from load on, so the difference is at least its size; half of it
    # leaves room for allocator rounding and a page cache that the kernel may count differently.
    assert big.model_rss_mb - small.model_rss_mb >= difference / 2
    assert big.load_rss_mb - small.load_rss_mb >= difference / 2


def test_file_sizes_match_the_files(measured, tiny_model):
    probes, results, _, _ = measured
    by_name = {p.variant: p for p in probes}
    assert results["big"][0].file_mb == pytest.approx(by_name["big"].path.stat().st_size / 1e6)
    assert results["small"][0].file_mb == pytest.approx((by_name["small"].path / "model.onnx").stat().st_size / 1e6)
    weights = sum(p.stat().st_size for p in Path(tiny_model).glob("*.safetensors"))
    assert weights > 0 and results["torch"][0].file_mb == pytest.approx(weights / 1e6)


def test_each_probe_is_a_fresh_process(measured):
    _, results, _, _ = measured
    pids = [f.pid for footprints in results.values() for f in footprints]
    assert len(set(pids)) == len(pids)
    # Nothing of round 0 is loaded in round 1: its process starts from the same baseline.
    small = results["small"]
    assert small[1].rss_before_load_mb == pytest.approx(small[0].rss_before_load_mb, rel=0.2)


def test_the_peak_is_the_childs_own_not_the_spawning_processs(measured):
    import resource

    _, results, _, _ = measured
    # A spawned child's ru_maxrss starts at this (pytest, torch loaded) process's high-water mark; VmHWM does not.
    parent_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    small = results["small"][0]
    assert small.peak_rss_mb < parent_peak_mb
    assert small.peak_rss_mb - small.sampled_peak_rss_mb < 0.5 * small.peak_rss_mb  # the two roughly agree


def test_a_child_that_runs_too_long_raises_the_project_error(measured):
    probes, _, _, _ = measured
    with pytest.raises(FootprintError, match="big.*did not finish"):
        measure_footprints(probes[1:2], features(), threads=1, rounds=1, timeout=0.05, log=None)


def test_a_failing_child_raises_the_project_error_naming_the_variant(tmp_path):
    probe = Probe("missing-variant", "onnx", tmp_path / "nowhere" / "model.onnx")
    with pytest.raises(FootprintError, match="missing-variant") as caught:
        measure_footprints([probe], features(), threads=1, rounds=1, log=None)
    assert isinstance(caught.value, OrtgateError)
    assert "exit" in str(caught.value) and "nowhere" in str(caught.value)


def test_rounds_go_in_reversed_pairs_and_rotate_so_each_takes_every_position():
    assert ["".join(round_order("abc", r)) for r in range(4)] == ["abc", "cba", "bca", "acb"]
    for n in range(1, 7):
        items = list(range(n))
        orders = [round_order(items, r) for r in range(2 * n)]
        assert all(sorted(o) == items for o in orders)
        for position in range(n):  # over 2n rounds, every item twice in every position
            assert sorted(o[position] for o in orders) == sorted(items * 2)
        for first, second in zip(orders[::2], orders[1::2], strict=True):  # a pair cancels a steady drift
            assert all(first.index(i) + second.index(i) == n - 1 for i in items)


def test_probes_and_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        Probe("x", "tensorflow", tmp_path)
    with pytest.raises(ValueError, match="once"):
        measure_footprints([Probe("a", "onnx", tmp_path)] * 2, features(), threads=1, log=None)
    with pytest.raises(ValueError, match="input"):
        measure_footprints([Probe("a", "onnx", tmp_path)], [], threads=1, log=None)


def test_inputs_round_trip_through_the_npz(tmp_path):
    saved = features(rows=2)
    loaded = load_inputs(save_inputs(saved, tmp_path / "inputs.npz"))
    assert len(loaded) == 2
    for a, b in zip(saved, loaded, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert b[name].dtype == a[name].dtype and np.array_equal(a[name], b[name])


def _footprint(variant: str, round_index: int, load: float, peak: float) -> Footprint:
    return Footprint(variant, "onnx", round_index, 100 + round_index, 1.0, 50.0, 10.0, peak, 60.0, peak, peak,
                     peak - 50.0, load, 0.1, 3, "VmHWM")


def test_summary_takes_medians():
    footprints = [_footprint("v", r, load, peak) for r, (load, peak) in enumerate([(0.3, 90), (0.1, 80), (0.2, 70)])]
    summary = summarize(footprints)
    assert (summary.rounds, summary.peak_rss_mb, summary.model_rss_mb, summary.load_seconds) == (3, 80, 30, 0.2)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError, match="several"):
        summarize([footprints[0], _footprint("w", 0, 0.1, 80)])
