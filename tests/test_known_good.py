"""No silent passes: a variant known to build (its expected structure is recorded, or it built in a named
run) that now fails to build fails its tests; only one never seen to build is an expected failure.
(tests/test_plugin.py runs the same through the suite.)"""

import json

import pytest

from ortgate.build.plan import FailedStep
from ortgate.record.known_good import known_good_from_run_record
from ortgate.record.result import MeasureSettings, ModelInfo, RecordError, RunResult, VariantResult
from ortgate.spec.matrix import full
from ortgate.verdict.known_good import KnownGood, build_failure_verdict, known_good_from_structures

STEP = FailedStep("O99", "optimize (level=99)", "RuntimeError: simulated optimizer failure")


def _record(*rows: VariantResult) -> RunResult:
    return RunResult(generated="2026-11-26T09:00:00+0000", machine={"id": "abc"}, versions={},
                     model=ModelInfo("tiny", "/m", "fp", "bert", ["NEGATIVE", "POSITIVE"]), data="d.csv",
                     settings=MeasureSettings(2, 32, 1, 8, 3, 1, 1), variants=list(rows))


def test_a_variant_known_to_build_fails_and_names_the_failing_step():
    known = KnownGood({"O99-dynamic-int8-arm64": ("its structure is recorded in s.json for CPU abc",)},
                      ("the expected structure in s.json",))
    verdict = build_failure_verdict("O99-dynamic-int8-arm64", "parent O99: RuntimeError: simulated optimizer failure",
                                    STEP, known, strict=False)
    assert not verdict.expected
    assert verdict.message.startswith(
        "O99-dynamic-int8-arm64 built before (its structure is recorded in s.json for CPU abc) and now fails to "
        "build at the optimize (level=99) step of O99: RuntimeError: simulated optimizer failure. ")


def test_a_variant_never_seen_to_build_is_an_expected_failure_unless_strict():
    known = KnownGood({"O99": ("recorded",)}, ("the expected structure in s.json", "the run recorded in main.json"))
    reason = "parent O99: RuntimeError: simulated optimizer failure"
    verdict = build_failure_verdict("O99-int8", reason, STEP, known, strict=False)
    assert verdict.expected
    assert verdict.message == (
        f"O99-int8 build failed: {reason} (at the optimize (level=99) step of O99); never seen to build (not in the "
        "expected structure in s.json nor in the run recorded in main.json), so an expected failure (a variant known "
        "to build would fail)")
    strict = build_failure_verdict("O99-int8", reason, STEP, known, strict=True)
    assert not strict.expected and strict.message.endswith("; it fails under --ortgate-strict")


def test_the_expected_structure_is_evidence_for_the_variants_current_definition_only():
    variants = full()
    records = {
        "onnx": {"step_hash": variants.content_hash("onnx"), "recorded": "2026-11-26", "versions": {}},
        "O99@cpu-a": {"step_hash": variants.content_hash("O99"), "recorded": "2026-11-27", "versions": {}},
        "O2": {"step_hash": "an earlier definition", "recorded": "2026-11-26", "versions": {}},
        "gone": {"step_hash": "x", "recorded": "2026-11-26", "versions": {}},  # no longer in the matrix
    }
    known = known_good_from_structures(records, "s.json", variants)
    assert set(known.seen) == {"onnx", "O99"}
    assert known.seen["O99"] == ("its structure is recorded in s.json for CPU cpu-a (2026-11-27, onnxruntime None)",)
    assert known.looked_in == ("the expected structure in s.json",)


def test_a_named_run_record_gives_the_variants_it_built(tmp_path):
    record = _record(VariantResult("onnx", build="cache hit"), VariantResult("O99", build="built"),
                     VariantResult("O4", build="not applicable"), VariantResult("X", build="build failed"))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(record.to_dict()))
    known = known_good_from_run_record(summary)
    assert set(known.seen) == {"onnx", "O99"}
    assert known.seen["O99"] == (f"built in the run recorded in {summary} (2026-11-26T09:00:00+0000, model tiny)",)
    bench = tmp_path / "bench.json"  # a pytest-benchmark file carries the same record
    bench.write_text(json.dumps({"benchmarks": [], "ortgate": record.to_dict(with_predictions=True)}))
    both = known_good_from_structures({}, "s.json", full()) + known_good_from_run_record(bench)
    assert set(both.seen) == {"onnx", "O99"} and len(both.looked_in) == 2
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(RecordError, match="neither an ortgate summary.json nor a pytest-benchmark JSON"):
        known_good_from_run_record(tmp_path / "other.json")
