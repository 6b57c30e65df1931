"""Every encoder architecture people ship, through the whole suite: a tiny model of each (built from a config in
seconds, with the tokenizer kind it really uses) runs the default preset end to end (builds, accuracy gates,
benchmarks, speed checks, structure checks), plus a DistilBERT saved with a BERT tokenizer that emits
token_type_ids the model has no argument for, and three-class models with generic LABEL_i names.

No timing is asserted: benchmarks must run and report, not be fast. Accuracy gates run at the default
tolerance; the tiny models' int8 variants keep their fp32 predictions on these rows.
"""

import json
from pathlib import Path

import pytest

from ortgate.sources.tiny_models import MATRIX_CASES, build_tiny_classifier, write_labeled_csv
from ortgate.spec.variants import DEFAULT_VARIANTS

SUITE = Path(__file__).resolve().parents[1] / "benchmarks"
pytest_plugins = ["pytester"]
# Steps that cannot apply to an architecture are results with their reason, not failures: DeBERTa-v2's export
# has If nodes (subgraphs), which Optimum does not quantize statically.
NOT_APPLICABLE = {("deberta-v2", "static-int8"): "static quantization of a graph with subgraphs (If)"}
# DeBERTa-v2 (relative positions only) states no length limit: the run falls back to 512 and says so.
NO_STATED_LIMIT = {"deberta-v2"}


@pytest.fixture(scope="session")
def matrix_models(tmp_path_factory) -> dict[str, Path]:
    """Every case's tiny model, built before any test runs: pytester restores sys.modules after each test, and
    torch's lazily imported modules cannot be imported a second time in one process."""
    folder = tmp_path_factory.mktemp("architectures")
    return {case: build_tiny_classifier(arch, folder / case, tokenizer=tokenizer, num_labels=num_labels)
            for case, arch, tokenizer, num_labels in MATRIX_CASES}


@pytest.mark.parametrize("case, arch, tokenizer, num_labels", MATRIX_CASES, ids=[c[0] for c in MATRIX_CASES])
def test_the_default_preset_runs_end_to_end(matrix_models, pytester, tmp_path, case, arch, tokenizer, num_labels):
    model = matrix_models[case]
    data = write_labeled_csv(tmp_path / "reviews.csv", 48, num_labels, seed=11)
    for name in ("test_accuracy.py", "test_throughput.py", "test_structure.py"):
        (pytester.path / name).write_text((SUITE / name).read_text())
    label_map = ["--ortgate-label-map=negative=NEGATIVE,positive=POSITIVE"] if num_labels == 2 else []
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--ortgate-model={model}", f"--ortgate-dataset={data}",
        "--ortgate-text-column=review", "--ortgate-label-column=sentiment", *label_map,
        f"--ortgate-cache-dir={tmp_path / 'cache'}", "--ortgate-bench-samples=4", "--ortgate-bench-rounds=2",
        "--ortgate-strict", "-k", "not harness", "--benchmark-json=bench.json", timeout=900)
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    rows = {r["variant"]: r for r in doc["variants"]}
    assert list(rows) == list(DEFAULT_VARIANTS.specs)
    assert doc["model"]["model_type"] == arch and len(doc["model"]["labels"]) == num_labels
    # No max_length given: the model's own limit (its position table), and nothing truncated.
    expected_source = "512: the model states no limit" if arch in NO_STATED_LIMIT else "the model's own limit"
    assert doc["truncation"]["source"].startswith(expected_source) and doc["truncation"]["truncated_rows"] == 0
    for vid, row in rows.items():
        if (arch, vid) in NOT_APPLICABLE:
            assert row["build"] == "not applicable" and NOT_APPLICABLE[arch, vid] in row["build_error"]
            continue
        assert row["accuracy"] > 0.9, (vid, row["accuracy"])  # the tiny head learned the sentiment words
        assert "samples_per_s" in row or row.get("same_graph_as"), vid
        if vid != "pytorch":
            # 24 rows: one flipped prediction is 4.2pp, so a variant that flips any is inconclusive, never FAIL
            assert row["gate"] in ("pass", "inconclusive"), (vid, row["accuracy_delta_pp"])
            assert row["structure"]["passed"], (vid, row["structure"]["problems"])
            low, high = row["speed_check"]["interval"]  # the interleaved speed check ran against its reference
            assert row["speed_check"]["reference"] in rows and low <= row["speed_check"]["ratio"] <= high
    # Nothing failed, errored or xfailed; skipped: the throughput tests and speed checks of the avx512 and
    # avx512_vnni graphs (byte-identical to arm64's), and the 6 tests of a variant that does not apply; the
    # round-robin of each mode passes (53 tests in all).
    skipped = 6 + 6 * sum(1 for a, _ in NOT_APPLICABLE if a == arch)
    result.assert_outcomes(passed=53 - skipped, skipped=skipped, deselected=1)
    assert result.ret == 0
