"""The run record: one typed definition, written and read back unchanged, other schema versions refused."""

import dataclasses
import json
from pathlib import Path

import pytest

from ortgate.record.result import (
    SCHEMA_VERSION,
    PairedResult,
    RecordError,
    RunResult,
    SpeedCheckResult,
    StructureResult,
    VariantResult,
    read_run_record,
)
from ortgate.report.tables import render_markdown, write_results
from records import benchmark_json, make_run


def full_run() -> RunResult:
    paired = PairedResult(n=10, both_right=7, baseline_only=1, variant_only=0, both_wrong=2, differing_predictions=1,
                          difference=-0.1, interval=(-0.3, 0.1), confidence=0.95, mcnemar_p_exact=1.0,
                          mcnemar_p_mid=0.5)
    variants = [
        VariantResult("pytorch", accuracy=0.8, f1=0.8, gate="baseline", samples_per_s=10.0,
                      round_seconds={"end-to-end": [1.0, 1.1]}),
        VariantResult("int8", parent="onnx", isa="arm64", build="built", build_seconds=3.0, cache_hit=False,
                      accuracy=0.7, f1=0.7, gate="FAIL", gate_mode="point", paired=paired, f1_interval=(-0.2, 0.0),
                      accuracy_delta_pp=-10.0, f1_delta_pp=-10.0,
                      logit_differences={"max": 1.0, "mean": 0.1, "p99": 0.5},
                      speed_check=SpeedCheckResult("onnx", 1.4, (1.2, 1.6), True, "1.2x its parent", 10),
                      structure=StructureResult(False, ("lost Attention",), ("a note",), "compared"),
                      graph={"nodes": 5, "fused_operators": {}, "quantized_nodes": {"dynamic": 3},
                             "initializer_types": {"int8": 2}}),
        VariantResult("O4", gate="not applicable", build="not applicable", build_error="no GPU"),
    ]
    return make_run(variants, labels=[1, 0] * 5, predictions={"int8": [1] * 10})


def test_a_record_reads_back_equal_through_json(tmp_path):
    run = full_run()
    doc = run.to_dict(with_predictions=True)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON types: what is written is what is read
    back = RunResult.from_dict(json.loads(json.dumps(doc)))
    assert back == run
    assert isinstance(back.variants[1].paired, PairedResult) and back.variants[1].speed_check.interval == (1.2, 1.6)
    assert back.variant("O4").failed_to_build and back.variant("missing") is None


def test_summary_json_leaves_out_predictions_and_unset_fields(tmp_path):
    run = full_run()
    json_path, md_path = write_results(run, tmp_path)
    doc = json.loads(json_path.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and "predictions" not in doc and "labels" not in doc
    assert "samples_per_s" not in doc["variants"][2] and doc["variants"][2]["build_error"] == "no GPU"
    assert read_run_record(json_path) == dataclasses.replace(run, labels=None, predictions=None)
    assert "FAIL: lost Attention" in md_path.read_text() == render_markdown(run)


def test_the_benchmark_json_carries_the_record_with_predictions(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(benchmark_json(full_run())))
    assert read_run_record(path).predictions == {"int8": [1] * 10}


@pytest.mark.parametrize(("doc", "message"), [
    ({"variants": []}, "neither an ortgate summary.json nor a pytest-benchmark"),
    ({"benchmarks": []}, "without an ortgate record"),
    ({"benchmarks": [], "ortgate": {"summary": {}, "labels": None}}, "cannot be read: run the suite again"),
    ({"schema": "ortgate-run", "schema_version": SCHEMA_VERSION + 1}, "upgrade ortgate"),
    ({"schema": "ortgate-run", "schema_version": 0}, "run the suite again with this ortgate"),
])
def test_other_files_and_schema_versions_get_a_message_that_says_what_to_do(tmp_path, doc, message):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match=message):
        read_run_record(path)


def test_a_key_the_schema_does_not_define_is_named():
    doc = full_run().to_dict()
    doc["variants"][0]["speed"] = 1.0
    with pytest.raises(RecordError, match=r"variants\[0\] has key\(s\) \['speed'\]"):
        RunResult.from_dict(doc)


def test_ci_keeps_main_baselines_under_the_schema_version():
    """A baseline saved under another schema version would be refused by `ortgate compare`: CI keys it."""
    workflow = (Path(__file__).resolve().parents[1] / ".github" / "workflows" / "ortgate.yml").read_text()
    assert workflow.count(f"ortgate-baseline-main-schema{SCHEMA_VERSION}-") == 3


def test_an_inconclusive_gate_and_what_its_rows_detect_are_recorded_and_shown():
    paired = PairedResult(n=372, both_right=300, baseline_only=20, variant_only=14, both_wrong=38,
                          differing_predictions=34, difference=-6 / 372, interval=(-0.047, 0.0149), confidence=0.95,
                          mcnemar_p_exact=0.392, mcnemar_p_mid=0.311)
    int8 = VariantResult("int8", accuracy=0.8441, f1=0.9155, gate="inconclusive", gate_mode="point", paired=paired,
                         f1_interval=(-0.0265, 0.0081), accuracy_delta_pp=-1.61, f1_delta_pp=-0.94,
                         min_detectable_drop_pp=4.38, rows_needed=3186,
                         logit_differences={"max": 1.0, "mean": 0.1, "p99": 0.5})
    run = make_run([VariantResult("pytorch", accuracy=0.8602, f1=0.9249, gate="baseline"), int8])
    back = RunResult.from_dict(json.loads(json.dumps(run.to_dict())))
    assert back == run and back.variant("int8").rows_needed == 3186
    markdown = render_markdown(run)
    assert "| inconclusive |" in markdown and "| 4.38 / 3,186 |" in markdown
    assert "Inconclusive: the rows cannot tell the drop from the tolerance" in markdown
    assert "Inconclusive:" not in render_markdown(full_run())  # said only where a gate is
