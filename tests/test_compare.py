"""`ortgate compare` on saved runs: synthetic interleaved ratios with known effects (seeded), one or more runs a
side, Holm over the rows, equivalence, and the CLI's exit code."""

import json

import numpy as np
import pytest

from ortgate.cli import main
from ortgate.errors import OrtgateError
from ortgate.record.result import InterleavedResult, VariantResult
from ortgate.report.compare import compare_runs, render_markdown
from records import benchmark_json, make_run


def run(ratios: dict, cpu="epyc", accuracy=None, predictions=None, labels=None):
    """A run record whose variants have these interleaved speed ratios to the baseline per (variant, mode)."""
    names = list(dict.fromkeys(["pytorch", *(v for v, _ in ratios), *(accuracy or {})]))
    variants = []
    for v in names:
        modes = {m: InterleavedResult("pytorch", (1 / r,) * 3, r, (r * 0.98, r * 1.02), 0.95)
                 for (w, m), r in ratios.items() if w == v}
        if v == "pytorch" and ratios:
            modes = {m: InterleavedResult("pytorch", (1.0,) * 3, 1.0, (1.0, 1.0), 0.95) for _, m in ratios}
        variants.append(VariantResult(v, interleaved=modes or None, accuracy=(accuracy or {}).get(v)))
    return make_run(variants, cpu=cpu, labels=labels, predictions=predictions)


def runs(ratio, n, sd=0.02, seed=0, variant="int8", mode="end-to-end", **extra):
    """n runs whose variant's ratio wanders between runs with a log-sd of `sd` (seeded)."""
    noise = np.random.default_rng(seed).normal(0, sd, n)
    return [run({(variant, mode): ratio * float(np.exp(e)), **extra}) for e in noise]


def test_a_slower_variant_over_several_runs_is_a_regression_and_the_reverse_an_improvement():
    old, new = runs(4.0, 4, seed=1), runs(4.0 / 1.2, 4, seed=2)  # the variant's time up 20% against the baseline
    [row] = compare_runs(old, new)
    assert row.verdict == "regression" and row.change == pytest.approx(0.2, abs=0.05) and row.p_value < 0.05
    assert row.interval[0] < row.change < row.interval[1] and "4 vs 4 runs" in row.note
    assert "**regression**" in render_markdown([row], "old", "new") and row.reference == "pytorch"
    [back] = compare_runs(new, old)
    assert back.verdict == "improvement"


def test_the_same_runs_are_no_change_only_when_the_interval_is_inside_the_minimum_effect():
    quiet = runs(4.0, 4, sd=0.01, seed=3)
    [row] = compare_runs(quiet, runs(4.0, 4, sd=0.01, seed=4))
    assert row.verdict == "no change"
    noisy = [run({("int8", "end-to-end"): 4.0 * float(np.exp(e))}) for e in (0.15, -0.15)]
    [row] = compare_runs(noisy, noisy)  # no change at all, but runs spread ±15%: nothing can be concluded
    assert row.verdict == "insufficient evidence" and "runs a side would likely settle it" in row.note


def test_one_run_a_side_says_the_run_noise_is_assumed():
    [row] = compare_runs(run({("int8", "end-to-end"): 4.0}), run({("int8", "end-to-end"): 4.0 / 1.3}))
    assert row.verdict == "regression" and "assumed, not measured" in row.note
    [row] = compare_runs(run({("int8", "end-to-end"): 4.0}), run({("int8", "end-to-end"): 4.0 / 1.08}))
    assert row.verdict == "insufficient evidence"


def test_holm_keeps_the_job_from_failing_on_one_of_many_borderline_rows():
    """A change that one row alone would call significant is not a regression among 12 rows: the family-wise
    error of the job is what α bounds."""
    names = [f"v{i}" for i in range(12)]
    rng = np.random.default_rng(7)

    def side(shift):
        return [run({(v, "end-to-end"): 3.0 * float(np.exp(rng.normal(0, 0.02) - (shift if v == "v0" else 0)))
                     for v in names}) for _ in range(3)]

    old, new = side(0.0), side(0.06)
    rows = {r.variant: r for r in compare_runs(old, new)}
    alone = compare_runs([run({("v0", "end-to-end"): r.variant("v0").interleaved["end-to-end"].ratio}) for r in old],
                         [run({("v0", "end-to-end"): r.variant("v0").interleaved["end-to-end"].ratio}) for r in new])
    assert rows["v0"].p_value > alone[0].p_value  # adjusted for the 11 other rows
    assert "Holm-adjusted" in render_markdown(list(rows.values()), "old", "new")


def test_accuracy_drop_beyond_tolerance_with_paired_test():
    labels = [1] * 400
    old = run({}, accuracy={"int8": 0.90}, predictions={"int8": [1] * 360 + [0] * 40}, labels=labels)
    new = run({}, accuracy={"int8": 0.85}, predictions={"int8": [1] * 340 + [0] * 60}, labels=labels)
    [row] = compare_runs(old, new)
    assert row.kind == "accuracy" and row.verdict == "regression" and "20 predictions changed" in row.note
    assert row.p_value < 1e-4
    [same] = compare_runs(old, old)
    assert same.verdict == "no change"
    few = run({}, accuracy={"int8": 0.85}, predictions={"int8": [1] * 340 + [0] * 60}, labels=labels)
    few_old = run({}, accuracy={"int8": 0.8625}, predictions={"int8": [1] * 345 + [0] * 55}, labels=labels)
    [row] = compare_runs(few_old, few, tolerance=None)  # 1.25pp > 1pp but 5 discordant rows: McNemar p 0.06
    assert row.verdict == "insufficient evidence"


def test_runs_from_different_cpus_need_consent():
    old = run({("int8", "end-to-end"): 4.0}, cpu="epyc")
    new = run({("int8", "end-to-end"): 4.0}, cpu="graviton")
    with pytest.raises(OrtgateError, match="different CPUs.*--cross-machine"):
        compare_runs(old, new)
    assert compare_runs(old, new, cross_machine=True)[0].kind == "speed"


def test_cli_takes_several_runs_a_side_and_gates_a_shell_script(tmp_path, capsys):
    old, slow = runs(4.0, 3, seed=8, mode="model-only"), runs(4.0 / 1.25, 3, seed=9, mode="model-only")
    paths = {}
    for side, docs in (("old", old), ("new", slow)):
        paths[side] = []
        for i, doc in enumerate(docs):
            path = tmp_path / f"{side}{i}.json"
            path.write_text(json.dumps(benchmark_json(doc)))
            paths[side].append(str(path))
    summary = tmp_path / "summary.md"
    assert main(["compare", "--old", *paths["old"], "--new", *paths["old"]]) == 0
    assert main(["compare", "--old", *paths["old"], "--new", *paths["new"], "--markdown", str(summary)]) == 1
    assert "1 regression(s)" in capsys.readouterr().out and "int8 model-only" in summary.read_text()
    assert main(["compare", paths["old"][0], paths["new"][0]]) in (0, 1)  # the two-file form still works
    assert main(["compare", paths["old"][0], str(tmp_path / "missing.json")]) == 2
    assert main(["compare", paths["old"][0], "--new", paths["new"][0]]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_variant_missing_from_the_new_run_is_a_regression_not_a_silent_pass():
    old = run({("int8", "end-to-end"): 4.0, ("O99", "end-to-end"): 2.0}, accuracy={"int8": 0.9, "O99": 0.9})
    new = run({("O99", "end-to-end"): 2.0}, accuracy={"O99": 0.9})
    rows = {(r.kind, r.variant): r for r in compare_runs(old, new)}
    assert rows[("speed", "O99")].verdict != "regression"
    for kind in ("speed", "accuracy"):
        assert rows[(kind, "int8")].verdict == "regression" and "missing in the new run" in rows[(kind, "int8")].note
    assert "int8 end-to-end" in render_markdown(list(rows.values()), "old", "new")


def test_nothing_comparable_is_an_error_and_exit_code_2(tmp_path, capsys):
    old = run({("int8", "end-to-end"): 4.0})
    new = run({})
    with pytest.raises(OrtgateError, match="nothing to compare"):
        compare_runs(old, new)
    for name, doc in (("old.json", old), ("new.json", new)):
        (tmp_path / name).write_text(json.dumps(benchmark_json(doc)))
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_an_onnx_graph_is_timed_against_the_export_and_the_export_against_the_baseline():
    """Load that slows PyTorch far more than ONNX Runtime moves ratios to the baseline, not to the export."""
    def loaded(torch_factor, seed):
        noise = np.random.default_rng(seed).normal(0, 0.01, 3)
        export = tuple(0.5 * float(np.exp(e)) for e in noise)
        return make_run([VariantResult("pytorch", interleaved={"end-to-end": InterleavedResult(
                             "pytorch", (1.0 * torch_factor,) * 3, 1.0, (1.0, 1.0), 0.95)}),
                         VariantResult("onnx", interleaved={"end-to-end": InterleavedResult(
                             "pytorch", export, 2.0, (2.0, 2.0), 0.95)}),
                         VariantResult("int8", interleaved={"end-to-end": InterleavedResult(
                             "pytorch", tuple(t / 2 for t in export), 4.0, (4.0, 4.0), 0.95)})])
    rows = {r.variant: r for r in compare_runs([loaded(1, s) for s in range(3)], [loaded(3, s) for s in range(3, 6)])}
    assert rows["int8"].reference == "onnx" and rows["int8"].verdict == "no change"
    assert rows["onnx"].reference == "pytorch" and rows["onnx"].verdict == "improvement"


def deployment_run(p99: dict, peak: dict, load: dict, seed: int = 0, sd: float = 0.0):
    """A run record with request latency and footprints (no round-robin): p99 ms, peak RSS MB, load ms per
    variant, each wandering between runs with a log-sd of `sd` (seeded)."""
    from ortgate.record.result import FootprintResult, LatencyResult

    rng = np.random.default_rng(seed)
    variants = []
    for v in p99:
        e = float(np.exp(rng.normal(0, sd))) if sd else 1.0
        q = p99[v] * e
        latency = LatencyResult(1000, q / 3, q / 2, q, q * 1.5, q / 2.5, {"p50": (q / 3.1, q / 2.9),
                                "p90": (q / 2.1, q / 1.9), "p99": (q * 0.9, q * 1.1)}, 0.95)
        loads = tuple(load[v] * e * f for f in (1.0, 1.02, 0.98))
        footprint = FootprintResult(3, 50.0, peak[v], peak[v] - 60, loads[0], (peak[v],) * 3, (peak[v] - 60,) * 3,
                                    loads)
        variants.append(VariantResult(v, latency=latency, footprint=footprint))
    return make_run(variants)


def test_deployment_rows_call_more_memory_and_a_longer_tail_regressions_against_the_reference():
    base = {"p99": {"pytorch": 30.0, "onnx": 15.0, "int8": 10.0},
            "peak": {"pytorch": 570.0, "onnx": 206.0, "int8": 110.0},
            "load": {"pytorch": 110.0, "onnx": 160.0, "int8": 80.0}}
    old = [deployment_run(base["p99"], base["peak"], base["load"], seed=s, sd=0.01) for s in range(3)]
    worse = {"p99": {**base["p99"], "int8": 14.0}, "peak": {**base["peak"], "int8": 150.0},
             "load": {**base["load"], "int8": 80.0}}
    new = [deployment_run(worse["p99"], worse["peak"], worse["load"], seed=10 + s, sd=0.01) for s in range(3)]
    rows = {(r.variant, r.mode): r for r in compare_runs(old, new)}
    tail, memory, load = rows[("int8", "latency p99")], rows[("int8", "peak RSS")], rows[("int8", "load")]
    assert tail.kind == "deployment" and tail.reference == "onnx"  # an ONNX graph's tail against the export's
    assert tail.verdict == "regression" and tail.change == pytest.approx(0.4, abs=0.05)  # 10 → 14 ms: + is worse
    assert memory.verdict == "regression" and memory.change == pytest.approx(40 / 110, abs=0.02)
    assert memory.old == pytest.approx(110, rel=0.02) and memory.reference == ""
    assert load.verdict == "no change" and rows[("onnx", "load")].reference == "pytorch"
    assert ("onnx", "latency p99") not in rows  # PyTorch's tail is no reference (it moves with the machine)
    assert rows[("pytorch", "peak RSS")].verdict == "no change"
    [back] = [r for r in compare_runs(new, old) if (r.variant, r.mode) == ("int8", "peak RSS")]
    assert back.verdict == "improvement"
    md = render_markdown(list(rows.values()), "old", "new")
    assert "| int8 | latency p99 | onnx |" in md and "| int8 | peak RSS | – | 110 | 150 |" in md
    # A new run that did not measure the footprints is no silent pass.
    bare = [make_run([VariantResult(v, latency=r.latency) for r in n.variants for v in [r.variant]]) for n in new]
    missing = [r for r in compare_runs(old, bare) if r.mode in ("peak RSS", "load")]
    assert missing and all(r.verdict == "regression" and "missing" in r.note for r in missing)
