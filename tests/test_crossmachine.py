"""Cross-machine report from real tiny-model runs; the second machine's fingerprint is fabricated."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ortgate.errors import OrtgateError
from ortgate.record.result import InterleavedResult, SpeedCheckResult, VariantResult
from ortgate.report.crossmachine import (
    build_report,
    fastest_text,
    load_summaries,
    pareto_front,
    render_html,
    render_markdown,
    separated,
    speed_of,
    write_report,
)
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
            if row.get("same_graph_as"):
                assert cell.same_as == row["same_graph_as"]
                continue
            assert cell.accuracy == row["accuracy"] and cell.median_samples_per_s == row["samples_per_s"]
            check = row.get("speed_check") or {}
            expected = (row["interleaved"]["end-to-end"]["ratio"] if "end-to-end" in row.get("interleaved", {})
                        else check["ratio"] if check.get("reference") == "pytorch" and vid != "pytorch"
                        else 1.0 if vid == "pytorch" else row["speed_ratio"])
            assert cell.median_ratio == pytest.approx(expected)
        best = [v for v in report.variants if report.cell(v, machine.id).best]
        verdict = report.fastest[machine.id]
        assert best == ([verdict.best] if verdict.best else []) and (verdict.best is None) == bool(verdict.tied)
        for v in best:  # a ★ only where its interval lies above every other passing variant's
            others = [c for o in report.variants if o != v and (c := report.cell(o, machine.id))
                      and not c.same_as and c.gate in ("pass", "baseline") and c.speeds]
            assert all(separated(report.cell(v, machine.id), c) for c in others)


def test_markdown_html_and_plots_are_written(two_machines, tmp_path):
    outputs = write_report(list(two_machines), tmp_path / "report")
    markdown = outputs["markdown"].read_text()
    assert "`fabricated01`" in markdown and "| O99-dynamic-int8-arm64 | arm64 |" in markdown
    assert "★" in markdown or "indistinguishable here" in markdown
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
            VariantResult("int8", isa="avx512", accuracy=int8_accuracy, gate=gate, samples_per_s=200, speed_ratio=4.0,
                          interleaved=interleaved(4.0, 3.5, 4.5)),
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


ARM, AVX512, VNNI = "O99-dynamic-int8-arm64", "O99-dynamic-int8-avx512", "O99-dynamic-int8-avx512_vnni"


def interleaved(ratio: float, low: float, high: float, reference: str = "pytorch") -> dict:
    return {"end-to-end": InterleavedResult(reference, (0.5, 0.5, 0.5), ratio, (low, high), 0.95)}


def base() -> VariantResult:
    return VariantResult("pytorch", accuracy=0.80, gate="baseline", samples_per_s=50, speed_ratio=1.0)


def int8(vid: str, ratio: float | None = None, low: float = 0, high: float = 0, **kw) -> VariantResult:
    speed = {"interleaved": interleaved(ratio, low, high), "speed_ratio": ratio} if ratio else {}
    return VariantResult(vid, isa=vid.rsplit("-", 1)[1], accuracy=0.80, gate="pass", samples_per_s=200,
                         **{**speed, **kw})


def report_of(tmp_path: Path, *runs) -> object:
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run.to_dict()))
    return build_report(load_summaries(paths))


def test_identical_graphs_are_shown_once(tmp_path):
    """The issue's case: two runs on one machine, three byte-identical graphs; one run's record names the
    duplicates (`same_graph_as`), the other's only gives equal graph digests and times each of them."""
    g = {"sha256": "ab" * 32, "nodes": 10}
    first = make_run([base(), int8(ARM, 6.32, 5.9, 6.8, graph=g),
                      int8(AVX512, 6.32, 5.9, 6.8, graph=g, same_graph_as=ARM),
                      int8(VNNI, 6.32, 5.9, 6.8, graph=g, same_graph_as=ARM)])
    second = make_run([base(), int8(ARM, 4.7, 4.3, 5.1, graph=g), int8(AVX512, 4.58, 4.2, 5.0, graph=g),
                       int8(VNNI, 4.6, 4.2, 5.0, graph=g)])
    report = report_of(tmp_path, first, second)
    assert report.cell(AVX512, "epyc").same_as == ARM and report.cell(VNNI, "epyc").same_as == ARM
    arm = report.cell(ARM, "epyc")
    assert [s.ratio for s in arm.speeds] == [6.32, 4.7, 4.58, 4.6] and arm.interval == (4.2, 6.8)
    markdown = render_markdown(report)
    assert f"| {AVX512} | avx512 | = {ARM} |" in markdown and f"| {VNNI} | avx512_vnni | = {ARM} |" in markdown
    assert "6.32x" not in markdown and "4.58x" not in markdown and f"{ARM} 4.65x [4.20, 6.80]" in markdown
    # Against the baseline alone, the one graph is separated: ★ on the graph, not on one of its names.
    assert arm.best and report.fastest["epyc"].best == ARM and report.fastest["epyc"].runner_up == "pytorch"
    assert f"= {ARM}" in render_html(report, [])


def test_overlapping_intervals_are_indistinguishable_not_starred(tmp_path):
    report = report_of(tmp_path, make_run([base(), int8(ARM, 6.3, 5.0, 7.0), int8(AVX512, 4.6, 4.0, 5.2),
                                           int8("int8-avx2", 2.0, 1.8, 2.2)]))
    assert not any(report.cell(v, "epyc").best for v in report.variants)
    verdict = report.fastest["epyc"]
    assert verdict.best is None and verdict.tied == [ARM, AVX512]
    assert report.cell(ARM, "epyc").tied == [AVX512] and not report.cell("int8-avx2", "epyc").tied
    text = fastest_text(report, "epyc")
    assert text.startswith("indistinguishable here: ") and ARM in text and AVX512 in text and "avx2" not in text
    markdown, page = render_markdown(report), render_html(report, [])
    table = markdown.split("| variant |", 1)[1]  # past the legend
    assert "★" not in table and "faster than" not in table and "indistinguishable here" in table
    assert "★" not in page.split("</p>", 1)[1] and "indistinguishable here" in page


def test_separated_intervals_get_the_star(tmp_path):
    report = report_of(tmp_path, make_run([base(), int8(ARM, 6.3, 5.6, 7.0), int8(AVX512, 4.6, 4.0, 5.2)]))
    assert report.cell(ARM, "epyc").best and not report.cell(AVX512, "epyc").best
    assert report.fastest["epyc"].best == ARM and report.fastest["epyc"].runner_up == AVX512
    markdown = render_markdown(report)
    assert "★ 0.8000 · 200.0/s · 6.30x [5.60, 7.00]" in markdown
    assert f"★ {ARM} 6.30x [5.60, 7.00]: faster than every other passing variant here" in markdown
    assert "indistinguishable" not in markdown.split("| variant |", 1)[1] and 'class="best"' in render_html(report, [])


def test_a_cell_without_an_interval_is_not_separable(tmp_path):
    """The speed check's interval stands in when it is to the baseline; a ratio to another reference, or
    one from two medians, has none and cannot be told apart from anything."""
    check_to_onnx = SpeedCheckResult("onnx", 1.5, (1.4, 1.6), True)
    check_to_base = SpeedCheckResult("pytorch", 6.0, (5.5, 6.5), True)
    assert speed_of(int8(ARM, speed_ratio=2.0, speed_check=check_to_onnx), "pytorch").interval is None
    assert speed_of(int8(ARM, speed_ratio=5.9, speed_check=check_to_base), "pytorch").interval == (5.5, 6.5)
    report = report_of(tmp_path, make_run([base(), int8(ARM, speed_ratio=5.9, speed_check=check_to_base),
                                           int8(AVX512, speed_ratio=2.0, speed_check=check_to_onnx)]))
    assert report.cell(AVX512, "epyc").interval is None and "2.00x (no interval)" in render_markdown(report)
    assert report.fastest["epyc"].tied == [ARM, AVX512] and not report.cell(ARM, "epyc").best


def test_runs_of_one_machine_that_disagree_are_not_separated(tmp_path):
    """Each run alone separates ARM from AVX512, in opposite directions: merged, the spans overlap."""
    report = report_of(tmp_path, make_run([base(), int8(ARM, 6.3, 5.6, 7.0), int8(AVX512, 4.6, 4.0, 5.2)]),
                       make_run([base(), int8(ARM, 4.0, 3.6, 4.4), int8(AVX512, 6.0, 5.5, 6.5)]))
    assert report.machines[0].runs == 2 and report.cell(ARM, "epyc").interval == (3.6, 7.0)
    assert report.fastest["epyc"].best is None and set(report.fastest["epyc"].tied) == {ARM, AVX512}
