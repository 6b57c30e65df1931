import json

from ortgate.cli import main


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
    doc = {"best": "onnx", "variants": [{"variant": "onnx", "accuracy": 0.75, "samples_per_s": 130.0,
                                          "speed_ratio": 2.4, "gate": "pass"}]}
    (tmp_path / "summary.json").write_text(json.dumps(doc))
    assert main(["summary", str(tmp_path / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "best for this machine: onnx" in out and "0.7500" in out and "2.40x" in out
