"""A run that fails its gates explains them: the accuracy and speed benchmarks on a fragile tiny model (rows near its
decision boundary, a 0pp tolerance, an unreachable speed floor), with --ortgate-repair. Nothing here asserts a time:
the floor of 100x its parent fails on any machine, and the 0pp gate fails on the rows int8 flips."""

import json
from pathlib import Path

from ortgate.record.result import RunResult

SUITE = Path(__file__).resolve().parents[1] / "benchmarks"
pytest_plugins = ["pytester"]
FAILING = "O99-dynamic-int8-arm64"


def test_a_failed_run_says_why_and_repairs(pytester, fragile, tmp_path_factory):
    for name in ("test_accuracy.py", "test_throughput.py"):
        (pytester.path / name).write_text((SUITE / name).read_text())
    model, data = fragile
    cache = tmp_path_factory.getbasetemp() / "explain-cache"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--ortgate-model={model}", f"--ortgate-dataset={data}",
        f"--ortgate-cache-dir={cache}", "--ortgate-bench-samples=8", "--ortgate-bench-rounds=2", "--ortgate-cycles=3",
        "--ortgate-threads=1",
        f"--ortgate-variants=onnx,O99,{FAILING}", "--ortgate-tolerance=0pp", "--ortgate-repair",
        f"--ortgate-speed-floor={FAILING}=100:parent", "-k", "within_tolerance or floor or interleaved", timeout=900)
    result.stdout.fnmatch_lines([f"*{FAILING}: accuracy lost most at *", f"*{FAILING}: repaired as {FAILING}+*"])
    record = RunResult.from_dict(json.loads((pytester.path / "ortgate-results" / "summary.json").read_text()))
    row = record.variant(FAILING)
    assert row.gate == "FAIL"
    assert len(row.diagnosis["top_nodes"]) == 3 and row.diagnosis["against"] == "O99"
    assert row.profile["against"] == "O99" and "below its floor" in row.profile["why"]
    assert {c["status"] for c in row.profile["changes"]} & {"new", "gone"}  # int8 brings new kernels
    assert row.repair["chosen"].startswith(f"{FAILING}+")
    assert row.repair["entry"].startswith(f"[tool.ortgate.variants.{FAILING}-repaired-")
    assert all(c["speed_ratio"] is not None for c in row.repair["candidates"] if c["build"] != "build failed")
    assert record.variant("O99").diagnosis is None  # passed its gate: nothing to diagnose
    md = (pytester.path / "ortgate-results" / "summary.md").read_text()
    for heading in ("## Where the time goes", "## Where the accuracy goes", "## Repairs (--ortgate-repair)"):
        assert heading in md, heading
    out = pytester.path / "ortgate-results" / "repair" / FAILING
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG") and (out / "chosen.toml").is_file()
