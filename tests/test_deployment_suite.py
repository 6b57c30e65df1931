"""The deployment benchmarks end to end (benchmarks/test_deployment.py, benchmarks/test_shapes.py) on the tiny
model: latency, memory and load, shapes, threads, the distance to the CPU's limit, and budgets. Nothing here
asserts a time: a budget of 0 is above no measured figure, whatever the machine's speed."""

import json
from pathlib import Path

import pytest

from ortgate.record.result import RunResult

SUITE = Path(__file__).resolve().parents[1] / "benchmarks"
pytest_plugins = ["pytester"]


@pytest.fixture
def deployment_suite(pytester, tiny_model, tiny_csv, tmp_path_factory):
    for name in ("test_deployment.py", "test_shapes.py"):
        (pytester.path / name).write_text((SUITE / name).read_text())
    cache = tmp_path_factory.getbasetemp() / "deployment-cache"
    base = ["-p", "no:cacheprovider", f"--ortgate-model={tiny_model}", f"--ortgate-dataset={tiny_csv}",
            f"--ortgate-cache-dir={cache}", "--ortgate-bench-samples=8", "--ortgate-bench-rounds=3",
            "--ortgate-max-length=32", "--ortgate-cycles=3", "--ortgate-latency-min-calls=20",
            "--ortgate-latency-max-calls=60", "--ortgate-latency-max-seconds=20", "--ortgate-footprint-rounds=2",
            "--ortgate-batch-sizes=1,2", "--ortgate-seq-lengths=8,16,64", "--ortgate-variants=onnx,dynamic-int8"]

    def run(*args):
        return pytester.runpytest_subprocess(*base, *args, timeout=600)

    return run


def test_budgets_fail_below_a_measured_figure_and_the_summary_shows_every_deployment_figure(deployment_suite,
                                                                                               pytester):
    result = deployment_suite("--ortgate-budgets=*int8*=p99_ms:0;memory_mb:0;size_mb:0,onnx=size_mb:1e6;p50_ms:1e6",
                              "--benchmark-json=out/bench.json", "-rs")
    # latency + footprints; budgets: onnx passes, dynamic-int8 fails, pytorch has none (skip); shapes: 3 graphs × 2
    # batch sizes × 2 lengths (64 is more than max_length 32: skipped); threads: no sweep asked (3 skips); the limit
    result.assert_outcomes(passed=2 + 1 + 12 + 1, failed=1, skipped=1 + 6 + 3)
    result.stdout.fnmatch_lines(["*test_within_budget*dynamic-int8*", "*over budget*",
                                 "*p99_ms = * against the budget ≤ 0 ('[*]int8[*]'): over budget*"])
    result.stdout.fnmatch_lines(["*sequence length 64 is more than the 32 tokens*"])
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    record = RunResult.from_dict(doc)
    for vid in ("pytorch", "onnx", "dynamic-int8"):
        row = record.variant(vid)
        assert row.latency.calls >= 20 and row.latency.intervals["p99"][0] <= row.latency.p99_ms
        assert row.footprint.rounds == 2 and row.footprint.peak_rss_mb > 0 and row.footprint.load_ms > 0
        assert {(s.batch, s.seq_len) for s in row.shapes} == {(1, 8), (1, 16), (2, 8), (2, 16)}
    assert record.variant("dynamic-int8").roofline.fraction > 0
    assert record.variant("pytorch").roofline is None  # the ceiling is counted from an ONNX graph
    int8_budget = {b.metric: b.outcome for b in record.variant("dynamic-int8").budget}
    assert int8_budget == {"p99_ms": "FAIL", "memory_mb": "FAIL", "size_mb": "FAIL"}
    assert {b.metric: b.outcome for b in record.variant("onnx").budget} == {"size_mb": "pass", "p50_ms": "pass"}
    assert record.timer_overhead_ns > 0 and record.latency_pass["stopped"] in ("converged", "max calls", "max seconds")
    assert {c["kind"] for c in record.gemm_ceilings} >= {"fp32", "u8s8"}
    md = (pytester.path / "ortgate-results" / "summary.md").read_text()
    for heading in ("## Request latency", "## Memory and load time", "## Throughput by shape",
                    "## Distance to this CPU's limit", "## Budgets"):
        assert heading in md, heading
    png = (pytester.path / "ortgate-results" / "shapes.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    bench = json.loads((pytester.path / "out" / "bench.json").read_text())
    latency = next(b for b in bench["benchmarks"] if b["group"] == "request latency")
    assert set(latency["extra_info"]["latency_ms"]) == {"pytorch", "onnx", "dynamic-int8"}
    assert {b["group"] for b in bench["benchmarks"]} >= {"shape b1 s8", "shape b2 s16", "memory and load"}


def test_a_thread_sweep_times_each_onnx_graph_per_count(deployment_suite, pytester):
    result = deployment_suite("--ortgate-threads-sweep=1,2", "-k", "threads", "--benchmark-json=out/bench.json")
    result.assert_outcomes(passed=2 * 2, skipped=2)  # onnx and dynamic-int8 at 1 and 2 threads; pytorch skips
    record = RunResult.from_dict(json.loads((pytester.path / "ortgate-results" / "summary.json").read_text()))
    assert sorted(s.threads for s in record.variant("onnx").threads) == [1, 2]
    assert (pytester.path / "ortgate-results" / "threads.png").read_bytes().startswith(b"\x89PNG")
