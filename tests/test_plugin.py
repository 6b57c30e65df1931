"""The pytest plugin end to end: the real suite in benchmarks/ on the tiny model and a tiny csv."""

import json
from pathlib import Path

import pytest

from ortgate.cli import main as cli_main
from ortgate.record.result import RunResult

SUITE = Path(__file__).resolve().parents[1] / "benchmarks"
pytest_plugins = ["pytester"]


@pytest.fixture
def suite(pytester, tiny_model, tiny_csv, tmp_path_factory):
    for name in ("test_accuracy.py", "test_throughput.py", "test_structure.py"):
        (pytester.path / name).write_text((SUITE / name).read_text())
    cache = tmp_path_factory.getbasetemp() / "plugin-cache"
    base = ["-p", "no:cacheprovider", f"--ortgate-model={tiny_model}", f"--ortgate-dataset={tiny_csv}",
            f"--ortgate-cache-dir={cache}", "--ortgate-bench-samples=8", "--ortgate-bench-rounds=3",
            "--ortgate-max-length=32", "--ortgate-cycles=3"]

    def run(*args):
        return pytester.runpytest_subprocess(*base, *args, timeout=600)

    return run


def test_suite_gates_benchmarks_summarizes_and_reuses_the_cache(suite, pytester):
    # The harness check is left out here: on a model this small a call takes ~50 µs, and a 10% bound
    # is within scheduling noise (tests/test_throughput.py checks its arithmetic; the main job runs it).
    first = suite("--ortgate-variants=onnx,O99-dynamic-int8-arm64", "--benchmark-json=out/bench.json",
                  "--ortgate-label-map=negative=NEGATIVE,positive=POSITIVE", "-k", "not harness")
    # 2 gates × 2 variants, 2 modes × 3 variants, the bare loop, a speed check and a structure check per variant,
    # the round-robin of each mode
    first.assert_outcomes(passed=4 + 6 + 1 + 2 + 2 + 2)
    first.stdout.fnmatch_lines(["*ortgate summary*", "*pytorch*baseline*", "*O99-dynamic-int8-arm64*pass*",
                                "results: *summary.json*"])
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    rows = {r["variant"]: r for r in doc["variants"]}
    assert list(rows) == ["pytorch", "onnx", "O99-dynamic-int8-arm64"]  # O99 is built as a parent, not run
    int8 = rows["O99-dynamic-int8-arm64"]
    for key in ("accuracy", "f1", "precision", "recall", "samples_per_s", "speed_ratio", "size_mb", "latency_ms"):
        assert int8[key] > 0, key
    assert int8["graph"]["fused_operators"]["QAttention"] == 2 and doc["best"] in rows
    assert len(doc["data_fingerprint"]) == 64 and doc.get("source_control") is None  # not run in a git repository
    assert "| O99-dynamic-int8-arm64 |" in (pytester.path / "ortgate-results" / "summary.md").read_text()
    bench = json.loads((pytester.path / "out" / "bench.json").read_text())  # its folder was created
    infos = [b["extra_info"] for b in bench["benchmarks"] if b["group"] == "throughput model-only"]
    assert infos and all(i["samples_per_s"] > 0 and i["samples_per_round"] == 8 for i in infos)
    assert bench["machine_info"]["ortgate_cpu"]["arch"]
    # The benchmark JSON carries the run's record, with predictions; both files read back unchanged.
    record = RunResult.from_dict(bench["ortgate"])
    assert record.to_dict(with_predictions=True) == bench["ortgate"] and RunResult.from_dict(doc).to_dict() == doc
    assert set(record.predictions) == set(rows) and len(record.labels) == rows["onnx"]["n"]
    assert record.variant("onnx").round_seconds["end-to-end"] == next(
        b["extra_info"]["round_seconds"] for b in bench["benchmarks"]
        if b["extra_info"].get("variant") == "onnx" and b["extra_info"].get("mode") == "end-to-end")
    first.stdout.fnmatch_lines(["*variant O99-dynamic-int8-arm64: built*"])
    # Every graph of the run (O99 too: the int8 variant's floor may be stated against its parent) in 3 cycles.
    robin = [b for b in bench["benchmarks"] if b["group"] == "round-robin end-to-end"]
    assert robin and robin[0]["extra_info"]["graphs"] == ["pytorch", "onnx", "O99-dynamic-int8-arm64", "O99"]
    for vid in ("onnx", "O99-dynamic-int8-arm64"):
        cycles = record.variant(vid).interleaved
        assert set(cycles) == {"end-to-end", "model-only"} and len(cycles["model-only"].cycle_seconds) == 3
        r = cycles["end-to-end"]
        assert r.reference == "pytorch" and r.interval[0] <= r.ratio <= r.interval[1]

    second = suite("--ortgate-variants=O99-dynamic-int8-arm64", "--benchmark-skip", "-k", "not harness")
    # gates, speed and structure checks run (the speed check times the round-robin itself); benchmarks skip,
    # the round-robin's two included
    second.assert_outcomes(passed=4, skipped=7)
    second.stdout.fnmatch_lines(["*variant O99-dynamic-int8-arm64: cache hit*"])
    assert "building" not in second.stdout.str()


TIME_STATS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "total")


def test_saved_benchmarks_compare_and_gate(suite, pytester, capsys):
    args = ["test_throughput.py::test_throughput", "--ortgate-variants=dynamic-int8", "--benchmark-storage=file://./bstore"]
    saved_run = suite(*args, "--benchmark-autosave", "--ortgate-store")  # bare, after the test paths
    saved_run.assert_outcomes(passed=4)
    saved_run.stdout.fnmatch_lines([f"history: stored as run 1 in sqlite:///{pytester.path}/.ortgate/history.db"])
    # A store that cannot be reached stops only the store step: the tests pass, the files are written.
    compared = suite(*args, "--benchmark-compare", "--benchmark-compare-fail=median:100000%",
                     "--ortgate-store=postgresql://ortgate:secret@127.0.0.1:1/history")
    compared.assert_outcomes(passed=4)
    compared.stdout.fnmatch_lines(["*test_throughput[[]dynamic-int8-model-only[]] (0001_*",  # the saved run
                                   "*the run was not stored: the store postgresql://ortgate:***@127.0.0.1:1/"
                                   "history cannot be reached*store it later with: ortgate history import "
                                   "*summary.json --store postgresql://ortgate:***@127.0.0.1:1/history"])
    assert "secret" not in compared.stdout.str() and compared.ret == 0
    assert (pytester.path / "ortgate-results" / "summary.json").exists()
    # The autosaved file is the run stored above: importing it stores nothing new.
    assert cli_main(["history", "import", str(pytester.path / "bstore"), "--store",
                     str(pytester.path / ".ortgate" / "history.db")]) == 0
    assert "1 run(s) read: 0 stored, 1 stored already" in capsys.readouterr().out
    # An injected regression that does not depend on this machine's timing: the saved run, made 1,000 times
    # faster, against which any new run is far slower than 30%.
    [saved] = (pytester.path / "bstore").rglob("*.json")
    doc = json.loads(saved.read_text())
    for bench in doc["benchmarks"]:
        stats = bench["stats"]
        stats.update({key: stats[key] / 1000 for key in TIME_STATS}, ops=stats["ops"] * 1000)
    saved.write_text(json.dumps(doc))
    failing = suite(*args, "--benchmark-compare", "--benchmark-compare-fail=median:30%")
    assert failing.ret != 0
    assert "Performance has regressed" in failing.stdout.str() + failing.stderr.str()
    failing.stdout.fnmatch_lines(["*--benchmark-compare-fail compares this process's raw times*ortgate compare*"])


def test_a_baseline_from_another_cpu_is_refused_unless_asked(suite, pytester):
    args = ["test_throughput.py::test_throughput", "--ortgate-variants=onnx", "--benchmark-storage=file://./bstore"]
    suite(*args, "--benchmark-autosave").assert_outcomes(passed=4)
    [saved] = (pytester.path / "bstore").rglob("*.json")
    doc = json.loads(saved.read_text())
    assert doc["machine_info"]["ortgate_cpu_id"]  # the fingerprint travels with the saved run
    doc["machine_info"]["ortgate_cpu_id"] = "fabricated01"
    doc["machine_info"]["ortgate_cpu"]["model_name"] = "Intel i7-8700 (fabricated)"
    saved.write_text(json.dumps(doc))
    refused = suite(*args, "--benchmark-compare")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*measured on another CPU (Intel i7-8700 (fabricated)*--ortgate-cross-machine*"])
    suite(*args, "--benchmark-compare", "--ortgate-cross-machine").assert_outcomes(passed=4)


def test_repeat_runs_the_whole_matrix_per_repeat_and_reports_the_distribution(suite, pytester):
    result = suite("test_throughput.py::test_throughput", "--ortgate-variants=onnx", "--ortgate-repeat=3", "-v")
    result.assert_outcomes(passed=12)
    ids = [line.split("[")[1].split("]")[0] for line in result.stdout.lines
           if "::test_throughput[" in line and "PASSED" in line]
    assert [i.split("-")[0] for i in ids] == ["r1"] * 4 + ["r2"] * 4 + ["r3"] * 4
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    dist = {r["variant"]: r["samples_per_s_repeats"] for r in doc["variants"]}
    assert dist["onnx"]["count"] == 3 and dist["onnx"]["min"] <= dist["onnx"]["median"] <= dist["onnx"]["max"]
    assert "over 3 repeats of the whole matrix" in (pytester.path / "ortgate-results" / "summary.md").read_text()


def test_speed_floors_against_the_parent_and_a_failing_floor(suite, pytester):
    ok = suite("-k", "speed_ratio", "--ortgate-variants=onnx,dynamic-int8",
               "--ortgate-speed-floor=dynamic-int8=0.01:parent")
    ok.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    rows = {r["variant"]: r for r in doc["variants"]}
    assert rows["dynamic-int8"]["speed_check"]["reference"] == "onnx"  # its parent
    assert rows["onnx"]["speed_check"]["reference"] == "pytorch" and rows["onnx"]["speed_check"]["floor"] is None
    low, high = rows["dynamic-int8"]["speed_check"]["interval"]
    assert low <= rows["dynamic-int8"]["speed_check"]["ratio"] <= high
    failing = suite("-k", "speed_ratio", "--ortgate-variants=onnx", "--ortgate-speed-floor=onnx=1000")
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines(["*onnx is *x as fast as pytorch*floor 1000x its baseline: the whole interval*"])


def test_pyproject_settings_apply_and_command_line_wins(suite, pytester):
    pytester.makepyprojecttoml('[tool.ortgate]\nvariants = ["dynamic-int8"]\ntolerance = "0.5pp"\n')
    result = suite("-k", "accuracy")
    result.assert_outcomes(passed=2)  # only dynamic-int8 gated
    result = suite("-k", "accuracy", "--ortgate-variants=onnx,dynamic-int8")
    result.assert_outcomes(passed=4)


USER_MATRIX = """
[tool.ortgate.variants.my-O2]
parent = "onnx"
optimize = {{ level = 2{extra} }}

[tool.ortgate.variants.my-O2-int8]
parent = "my-O2"
quantize = {{ mode = "dynamic", isa = "avx512_vnni", per_channel = true, operators = ["MatMul"] }}
"""


def test_a_user_matrix_runs_and_a_removed_fusion_fails_the_structure_check(suite, pytester):
    pytester.makepyprojecttoml(USER_MATRIX.format(extra=""))
    first = suite("--ortgate-variants=my-O2*", "-k", "structure or accuracy", "--ortgate-preset=quick")
    first.assert_outcomes(passed=2 * 2 + 2)  # two gates and a structure check per user variant
    [record] = (pytester.path / "ortgate-structure").glob("*.json")
    recorded = json.loads(record.read_text())["variants"]
    assert recorded["my-O2"]["structure"]["fused_operators"]["Attention"] == 2
    assert recorded["my-O2-int8"]["structure"]["quantized_nodes"]["dynamic"] > 0
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    rows = {r["variant"]: r for r in doc["variants"]}
    assert doc["user_variants"] == ["my-O2", "my-O2-int8"] and doc["preset"] == "quick"
    assert rows["my-O2-int8"]["operators_quantized"] == ["MatMul"] and rows["my-O2-int8"]["structure"]["passed"]
    assert rows["my-O2"]["graph"]["nodes_vs_export"] < 0

    # The same variant without its attention fusion, as a library upgrade that lost it would build it:
    pytester.makepyprojecttoml(USER_MATRIX.format(extra=", disable_attention_fusion = true"))
    lost = suite("--ortgate-variants=my-O2", "-k", "structure")
    lost.assert_outcomes(failed=1)
    lost.stdout.fnmatch_lines(["*my-O2: graph structure check failed: lost fusion Attention: 2 → 0 nodes*"])
    again = suite("--ortgate-variants=my-O2", "-k", "structure", "--ortgate-update-structure")
    again.assert_outcomes(passed=1)
    suite("--ortgate-variants=my-O2", "-k", "structure").assert_outcomes(passed=1)


BROKEN_OPTIMIZER = """
import ortgate.build.steps

_real = ortgate.build.steps.optimize


def _optimize(parent_dir, out, step):  # the reference saw no_attention_mask fail to build
    if dict(step.options).get("no_attention_mask"):
        raise RuntimeError("simulated optimizer failure: no attention mask input")
    return _real(parent_dir, out, step)


ortgate.build.steps.optimize = _optimize
"""


NO_MASK_PAIR = """
[tool.ortgate.variants.O99-no-mask]
parent = "onnx"
optimize = { level = 99, no_attention_mask = true }

[tool.ortgate.variants.O99-no-mask-int8]
parent = "O99-no-mask"
quantize = { mode = "dynamic", isa = "arm64", per_channel = false }
"""


def test_a_variant_that_cannot_build_is_a_result_not_a_crash(suite, pytester):
    pytester.makeconftest(BROKEN_OPTIMIZER)
    pytester.makepyprojecttoml(NO_MASK_PAIR)
    args = ("--ortgate-variants=onnx,O99-no-mask*", "-k", "accuracy or structure", "-rx")
    result = suite(*args)
    result.assert_outcomes(passed=3, xfailed=6)  # onnx runs; both broken variants' tests are expected failures
    result.stdout.fnmatch_lines([  # never seen to build: nothing recorded, no --ortgate-known-good run
        "*O99-no-mask build failed: RuntimeError: simulated optimizer failure: no attention mask input*never seen "
        "to build (not in the expected structure in *), so an expected failure*",
        "*O99-no-mask-int8 build failed: parent O99-no-mask: RuntimeError: simulated optimizer failure*(at the "
        "optimize (level=99, no_attention_mask=True) step of O99-no-mask)*",
    ])
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    rows = {r["variant"]: r for r in doc["variants"]}
    assert rows["O99-no-mask"]["build"] == "build failed"
    assert rows["O99-no-mask"]["build_error"] == "RuntimeError: simulated optimizer failure: no attention mask input"
    assert rows["onnx"]["gate"] in ("pass", "inconclusive")  # gated: on the tiny model's rows it may not tell
    summary = (pytester.path / "ortgate-results" / "summary.md").read_text()
    assert "**O99-no-mask**: build failed: RuntimeError: simulated optimizer failure" in summary
    strict = suite(*args, "--ortgate-strict")
    strict.assert_outcomes(passed=3, failed=6)
    strict.stdout.fnmatch_lines(["*O99-no-mask build failed: RuntimeError: simulated*never seen to build*; it fails "
                                 "under --ortgate-strict*"])


NO_MASK_MATRIX = NO_MASK_PAIR + """
[tool.ortgate.variants.O2-no-mask]
parent = "onnx"
optimize = { level = 2, no_attention_mask = true }

[tool.ortgate.variants.O1-no-mask]
parent = "onnx"
optimize = { level = 1, no_attention_mask = true }
"""


def test_a_variant_known_to_build_fails_its_tests_when_its_build_breaks(suite, pytester):
    pytester.makepyprojecttoml(NO_MASK_MATRIX)
    # The variants build (the reference saw no_attention_mask build on some versions): the level-99 ones have
    # their structure recorded, O2-no-mask only its gates run, in the run saved as main.json.
    first = suite("--ortgate-variants=O99-no-mask*,O2-no-mask", "-k", "structure and O99 or accuracy and O2",
                  f"--ortgate-cache-dir={pytester.path / 'cache-before'}")
    first.assert_outcomes(passed=2 + 2)
    (pytester.path / "main.json").write_text((pytester.path / "ortgate-results" / "summary.json").read_text())
    # Then the optimizer breaks (as a library upgrade could break it); built afresh, not from the cache:
    pytester.makeconftest(BROKEN_OPTIMIZER)
    broken = suite("--ortgate-variants=O99-no-mask*,O2-no-mask,O1-no-mask", "-k", "accuracy", "-rx",
                   "--ortgate-known-good=main.json", f"--ortgate-cache-dir={pytester.path / 'cache-after'}")
    broken.assert_outcomes(failed=6, xfailed=2)  # the three that built before fail; O1-no-mask never built
    assert broken.ret == pytest.ExitCode.TESTS_FAILED
    out = broken.stdout.str()
    structure, run = pytester.path / "ortgate-structure", pytester.path / "main.json"
    broken.stdout.fnmatch_lines([
        f"*O99-no-mask built before (its structure is recorded in {structure}/*.json for CPU *; built in the run "
        f"recorded in {run} (*)) and now fails to build at the optimize (level=99, no_attention_mask=True) step of "
        "O99-no-mask: RuntimeError: simulated optimizer failure: no attention mask input. A variant known to build*",
    ])
    assert "O99-no-mask-int8 built before (its structure is recorded in" in out  # failed at its parent's step
    assert "O2-no-mask built before (built in the run recorded in" in out  # the named run is the only evidence
    broken.stdout.fnmatch_lines(["*XFAIL*O1-no-mask build failed: RuntimeError: simulated optimizer failure*never "
                                 f"seen to build (not in the expected structure in {structure}/* nor in the run "
                                 f"recorded in {run}), so an expected failure*"])


STRIPPED_ATTENTION = """
import dataclasses

import ortgate.build.steps

_real = ortgate.build.steps.optimize


def _optimize(parent_dir, out, step):  # an upgrade that no longer fuses attention
    options = tuple(sorted({**dict(step.options), "disable_attention_fusion": True}.items()))
    return _real(parent_dir, out, dataclasses.replace(step, options=options))


ortgate.build.steps.optimize = _optimize
"""


def test_on_a_cpu_without_a_structure_record_the_other_cpus_records_still_catch_a_lost_fusion(suite, pytester):
    args = ("--ortgate-variants=O99", "-k", "structure")
    suite(*args).assert_outcomes(passed=1)
    [path] = (pytester.path / "ortgate-structure").glob("*.json")
    doc = json.loads(path.read_text())
    [(key, record)] = [(k, r) for k, r in doc["variants"].items() if k.startswith("O99@")]  # per CPU
    doc["variants"] = {"O99@0123456789ab": record}  # as if recorded on another CPU only
    path.write_text(json.dumps(doc))
    pytester.makeconftest(STRIPPED_ATTENTION)
    lost = suite(*args, f"--ortgate-cache-dir={pytester.path / 'cache-upgraded'}")
    lost.assert_outcomes(failed=1)
    lost.stdout.fnmatch_lines([
        # The model-type rule catches it too; "lost fusion" is the comparison with the other CPU's record.
        "*O99: graph structure check failed: no Attention fusion in a level-99 graph*; lost fusion Attention: "
        "2 → 0 nodes; *if the change is intended, record it again with --ortgate-update-structure",
        "*no structure recorded for this CPU: compared with what the structures recorded for 1 other CPU(s) "
        "(0123456789ab; *) agree on and does not depend on the CPU*",
        "*not checked on this CPU: node count and file size*",
    ])
    assert list(json.loads(path.read_text())["variants"]) == ["O99@0123456789ab"]  # the loss is not recorded
    (pytester.path / "conftest.py").unlink()
    suite(*args).assert_outcomes(passed=1)  # the graph as it was: passes, and is recorded for this CPU
    assert sorted(json.loads(path.read_text())["variants"]) == sorted(["O99@0123456789ab", key])
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    structure = {r["variant"]: r for r in doc["variants"]}["O99"]["structure"]
    assert structure["passed"] and structure["unchecked"][0].startswith("node count and file size")
    summary = (pytester.path / "ortgate-results" / "summary.md").read_text()
    assert "pass (partial)" in summary and "pass; not checked on this CPU: node count and file size" in summary


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ortgate-variants=O3"], "*unknown variant 'O3'*known variants: pytorch, onnx*"),
        (["--ortgate-tolerance=-2"], "*invalid tolerance '-2'*"),
        (["--ortgate-tolerance=lots"], "*invalid tolerance 'lots'*"),
        (["--ortgate-threads=0"], "*'threads' must be >= 1*"),
        (["--ortgate-preset=huge"], "*'preset' must be one of default, quick, reference, full*"),
        (["--ortgate-matrix=nope.toml"], "*--ortgate-matrix *nope.toml does not exist*"),
    ],
)
def test_bad_options_are_usage_errors(suite, args, message):
    result = suite(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ortgate-text-column=review"], "*no text column 'review'*--ortgate-text-column*"),
        (["--ortgate-dataset={tmp}/missing.csv"], "*dataset file*missing.csv does not exist*"),
        (["--ortgate-dataset={tmp}/empty.csv"], "*dataset file*empty.csv is empty*"),
        (["--ortgate-dataset={tmp}/header.csv"], "*dataset file*header.csv has no rows, only a header*"),
        (["--ortgate-model={tmp}/no-model"], "*model directory*no-model does not exist*"),
        (["--ortgate-model=builtin:bart"], "*unknown built-in model 'builtin:bart'; choose one of builtin:minilm*"),
        (["--ortgate-max-length=100000"], "*max_length 100000 is more than the 64 positions*"),
    ],
)
def test_a_model_or_data_problem_stops_the_run_once_before_any_test(suite, tmp_path, args, message):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    result = suite(*(a.format(tmp=tmp_path) for a in args))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ortgate: {message}"])
    output = result.stdout.str() + result.stderr.str()
    assert output.count("ortgate:") == 1  # once, not once per test
    assert "no tests ran" in result.stdout.str() and "passed" not in output


def test_tests_that_do_not_use_ortgate_never_resolve_the_model(pytester, tmp_path):
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--ortgate-model={tmp_path / 'no-model'}")
    result.assert_outcomes(passed=1)


def test_an_inconclusive_gate_warns_by_default_and_fails_or_passes_as_told(suite, pytester):
    """The tiny data's 20 evaluation rows cannot tell any accuracy drop from 1pp: even onnx, with the baseline's
    very predictions, is inconclusive. (Its F1 gate is not: the bootstrap interval of identical predictions is
    [0, 0].)"""
    args = ("-k", "accuracy", "--ortgate-variants=onnx")
    warned = suite(*args)
    warned.assert_outcomes(passed=2)
    warned.stdout.fnmatch_lines(["*InconclusiveGate: INCONCLUSIVE: accuracy of onnx*a drop of 0.00pp*"
                                 "holds both no drop and more than the allowed drop*rows would detect one of 1.00pp*"])
    assert warned.stdout.str().count("InconclusiveGate: INCONCLUSIVE") == 1
    doc = json.loads((pytester.path / "ortgate-results" / "summary.json").read_text())
    onnx = next(r for r in doc["variants"] if r["variant"] == "onnx")
    assert onnx["gate"] == "inconclusive" and onnx["rows_needed"] > 40 and onnx["min_detectable_drop_pp"] > 1
    assert "| inconclusive |" in (pytester.path / "ortgate-results" / "summary.md").read_text()

    failed = suite(*args, "--ortgate-inconclusive=fail")
    failed.assert_outcomes(failed=1, passed=1)
    failed.stdout.fnmatch_lines(["*INCONCLUSIVE: accuracy of onnx*"])
    quiet = suite(*args, "--ortgate-inconclusive=pass")
    quiet.assert_outcomes(passed=2)
    assert "InconclusiveGate" not in quiet.stdout.str()
