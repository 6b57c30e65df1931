"""Cross-machine report from real tiny-model runs; the second machine's fingerprint is fabricated."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ortgate.errors import OrtgateError
from ortgate.record.result import VariantResult
from ortgate.report.crossmachine import build_report, load_summaries, pareto_front, render_markdown, write_report
from records import make_run

SUITE = Path(__file__).resolve().parents[1] / "benchmarks"
OTHER_CPU = {"arch": "x86_64", "vendor": "GenuineIntel", "model_name": "Intel(R) Core(TM) i7-8700 (fabricated)",
             "flags": ["avx2"], "id": "fabricated01"}


def run_suite(tmp: Path, model: Path, data: Path, name: str) -> Path:
    results = tmp / name
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE), "--rootdir", str(tmp),
         f"--ortgate-model={model}", f"--ortgate-dataset={data}", f"--ortgate-cache-dir={tmp / 'cache'}",
         "--ortgate-variants=onnx,O99-dynamic-int8-arm64,O99-dynamic-int8-avx2", "--ortgate-bench-samples=8",
         "--ortgate-bench-rounds=3", f"--ortgate-results-dir={results}", "--ortgate-max-length=32",
         "-k", "not harness"],
        capture_output=True, text=True, cwd=tmp, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return results / "summary.json"


@pytest.fixture(scope="module")
def two_machines(tiny_model, tiny_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cross")
    here = run_suite(tmp, tiny_model, tiny_csv, "here")
    there = run_suite(tmp, tiny_model, tiny_csv, "there")  # real measurements, second run
    doc = json.loads(there.read_text())
    doc["machine"] = OTHER_CPU
    there.write_text(json.dumps(doc))
    return here, there


def test_matrix_has_one_column_per_machine_with_the_measured_values(two_machines):
    here, there = two_machines
    report = build_report(load_summaries([here, there]))
    assert len(report.machines) == 2 and report.machines[1].id == "fabricated01"
    assert report.variants == ["pytorch", "onnx", "O99-dynamic-int8-arm64", "O99-dynamic-int8-avx2"]
    assert report.isa["O99-dynamic-int8-avx2"] == "avx2" and report.isa["onnx"] is None
    for path, machine in zip((here, there), report.machines, strict=True):
        rows = {r["variant"]: r for r in json.loads(path.read_text())["variants"]}
        for vid, row in rows.items():
            cell = report.cell(vid, machine.id)
            assert cell.accuracy == row["accuracy"] and cell.median_samples_per_s == row["samples_per_s"]
            assert cell.median_ratio == row["speed_ratio"]
        passing = [r for r in rows.values() if r["gate"] in ("pass", "baseline")]
        best = max(passing, key=lambda r: r["samples_per_s"])["variant"]
        assert [v for v in report.variants if report.cell(v, machine.id).best] == [best]


def test_markdown_html_and_plots_are_written(two_machines, tmp_path):
    outputs = write_report(list(two_machines), tmp_path / "report")
    markdown = outputs["markdown"].read_text()
    assert "`fabricated01`" in markdown and "| O99-dynamic-int8-arm64 | arm64 |" in markdown and "★" in markdown
    page = outputs["html"].read_text()
    assert page.count("data:image/png;base64,") == 2 and "fabricated" in page
    for name in ("accuracy_vs_speed", "speed_by_preset"):
        assert outputs[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_renders_in_headless_chromium(two_machines, tmp_path):
    outputs = write_report(list(two_machines), tmp_path / "report")
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1500,1400",
         outputs["html"].as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (1400, 1500)
    # A rendered page: a table and two plots, not a blank or error page.
    assert pixels.std() > 0.05 and (pixels[..., :3].mean(axis=2) < 0.5).mean() > 0.001


def test_lost_accuracy_is_flagged_and_best_needs_a_passing_gate(tmp_path):
    def doc(mid, int8_accuracy, gate):
        return make_run([
            VariantResult("pytorch", accuracy=0.80, gate="baseline", samples_per_s=50, speed_ratio=1.0),
            VariantResult("int8", isa="avx512", accuracy=int8_accuracy, gate=gate, samples_per_s=200, speed_ratio=4.0),
        ], cpu=mid).to_dict()
    paths = []
    for name, d in (("a", doc("a", 0.80, "pass")), ("b", doc("b", 0.70, "FAIL")), ("c", doc("c", 0.795, "pass"))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(d))
    report = build_report(load_summaries(paths))
    assert report.cell("int8", "a").flag is None and report.cell("int8", "a").best
    assert "failed its accuracy gate" in report.cell("int8", "b").flag and report.cell("pytorch", "b").best
    assert "0.50pp below" in report.cell("int8", "c").flag
    assert "⚠" in render_markdown(report)


def test_pareto_front():
    points = [(1.0, 0.80), (2.0, 0.79), (3.0, 0.70), (2.5, 0.60), (1.5, 0.78)]
    assert pareto_front(points) == [(1.0, 0.80), (2.0, 0.79), (3.0, 0.70)]


def test_runs_of_different_models_are_not_mixed(two_machines, tmp_path):
    here, there = two_machines
    doc = json.loads(there.read_text())
    doc["model"]["fingerprint"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(doc))
    with pytest.raises(OrtgateError, match="another model or data set"):
        build_report(load_summaries([here, tmp_path / "other.json"]))


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(OrtgateError, match="cannot read"):
        load_summaries([tmp_path / "missing.json"])
    (tmp_path / "x.json").write_text(json.dumps(make_run([], machine={"id": "x"}).to_dict()))
    with pytest.raises(OrtgateError, match="no machine fingerprint"):
        build_report(load_summaries([tmp_path / "x.json"]))
