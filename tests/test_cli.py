import dataclasses
import json

from ortgate.cli import main
from ortgate.record.result import VariantResult
from records import make_run


def test_cpu_prints_the_fingerprint(capsys):
    assert main(["cpu"]) == 0
    fp = json.loads(capsys.readouterr().out)
    assert fp["arch"] and isinstance(fp["flags"], list) and len(fp["id"]) == 12
    assert fp["suggested_preset"] in ("arm64", "avx2", "avx512", "avx512_vnni") and fp["why"]
    assert fp["onnxruntime"] and "CPUExecutionProvider" in fp["providers"]


def test_summary_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_summary_renders_a_written_document(tmp_path, capsys):
    run = make_run([VariantResult("onnx", accuracy=0.75, samples_per_s=130.0, speed_ratio=2.4, gate="pass")])
    (tmp_path / "summary.json").write_text(json.dumps(dataclasses.replace(run, best="onnx").to_dict()))
    assert main(["summary", str(tmp_path / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "best for this machine: onnx" in out and "0.7500" in out and "2.40x" in out


def test_variants_lists_a_preset_with_parents_and_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no pyproject here
    assert main(["variants", "--preset", "reference"]) == 0
    out = capsys.readouterr().out
    assert "20 variants (preset reference)" in out
    line = next(x for x in out.splitlines() if x.startswith("O99-dynamic-int8-arm64-fused-ops"))
    assert " O99 " in line and "operators=fused" in line and "per_channel=False" in line
    assert main(["variants", "--preset", "full", "--variants", "O4"]) == 0
    assert "2 variants (preset full)" in capsys.readouterr().out  # the baseline always comes along


def test_build_builds_a_selection_and_reports_each_status(tiny_model, tiny_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text('[variants.q]\nparent = "onnx"\n'
                                     'quantize = { mode = "dynamic", isa = "arm64", per_channel = false, '
                                     'operators = "removed" }\n')
    args = ["build", "--model", str(tiny_model), "--dataset", str(tiny_csv), "--cache-dir", str(tmp_path / "c"),
            "--preset", "quick", "--matrix", "m.toml", "--variants", "onnx,q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "onnx" in out and "built (" in out
    assert "q                                             not applicable: operators='removed'" in out
    assert main(args) == 0
    assert "cache hit" in capsys.readouterr().out


def test_build_with_a_bad_matrix_names_the_field(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text('[variants.q]\nparent = "onnx"\n'
                                     'quantize = { mode = "dynamic", isa = "x86", per_channel = true }\n')
    assert main(["variants", "--matrix", "m.toml"]) == 2
    assert "[variants.q] field 'quantize.isa': unknown ISA preset 'x86'" in capsys.readouterr().err
