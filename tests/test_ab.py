"""`ortgate ab`: input checks before anything runs, the ABBA order, the base venv's reuse, the manifest, and
the orchestration with real processes on two tiny stand-in trees (the real suite takes minutes per process;
the README reports one measured run of it)."""

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import ortgate.ab as ab
from ortgate.ab import AbError, RunRecord, Side, abba_order, run_suite_process, venv_reuse, write_manifest
from ortgate.cli import main

# pytest-benchmark as briefly as it goes; the ortgate plugin off (the stand-in trees have no model)
QUICK = ["-q", "-p", "no:ortgate", "--benchmark-max-time=0.0001", "--benchmark-min-rounds=1",
         "--benchmark-warmup=off"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def _tree(path: Path, side: str) -> Path:
    """A stand-in project: constraints.txt, src/ with a module naming the side, one benchmark that records it."""
    (path / "benchmarks").mkdir(parents=True)
    (path / "src").mkdir()
    (path / "constraints.txt").write_text("pytest\n")
    (path / "src" / "probe_side.py").write_text(f"SIDE = {side!r}\n")
    (path / "benchmarks" / "test_trivial.py").write_text(
        "import probe_side\n\n\ndef test_trivial(benchmark):\n"
        "    benchmark.extra_info['side'] = probe_side.SIDE\n    benchmark(sum, [1, 2])\n")
    return path


@pytest.fixture
def repo(tmp_path):
    tree = _tree(tmp_path / "repo", "head")
    _git(tree, "init", "-q")
    _git(tree, "add", ".")
    _git(tree, "commit", "-q", "-m", "base")
    return tree


# ------------------------------------------------------------------ input checks


@pytest.mark.parametrize(("argv", "message"), [
    (["--base", "no-such-ref"], "unknown git ref 'no-such-ref'"),
    (["--base", "HEAD", "--runs", "0"], "--runs must be at least 1"),
    (["--base", "HEAD", "--base-python", "/no/python"], "--base-python /no/python: no executable Python"),
    (["--base", "HEAD", "--", "--benchmark-json=x.json"], "sets --benchmark-json itself"),
])
def test_bad_input_is_one_error_before_anything_runs(repo, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(repo)
    assert main(["ab", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (repo / "ortgate-ab").exists()  # nothing ran, nothing was written


def test_a_base_ref_needs_a_git_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(_tree(tmp_path / "plain", "head"))
    assert main(["ab", "--base", "HEAD"]) == 2
    assert "is not in one" in capsys.readouterr().err


def test_a_base_ref_without_constraints_is_refused(repo, monkeypatch, capsys):
    _git(repo, "rm", "-q", "constraints.txt")
    _git(repo, "commit", "-q", "-m", "no constraints")
    monkeypatch.chdir(repo)
    assert main(["ab", "--base", "HEAD"]) == 2
    assert "has no constraints.txt" in capsys.readouterr().err


def test_a_base_dir_needs_its_constraints(tmp_path, repo, monkeypatch, capsys):
    base = _tree(tmp_path / "base", "base")
    (base / "constraints.txt").unlink()
    monkeypatch.chdir(repo)
    assert main(["ab", "--base-dir", str(base)]) == 2
    assert "has no constraints.txt" in capsys.readouterr().err
    assert main(["ab", "--base-dir", str(tmp_path / "none")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_known_ref_resolves_to_its_commit(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert ab.resolve_ref(repo, "HEAD") == head.strip()


# ------------------------------------------------------------------ order, venv reuse, manifest


def test_abba_order_alternates_which_side_goes_first():
    assert abba_order(1) == [("base", 1), ("head", 1)]
    order = abba_order(3)
    assert "".join("A" if s == "base" else "B" for s, _ in order) == "ABBAAB"
    assert order == [("base", 1), ("head", 1), ("head", 2), ("base", 2), ("base", 3), ("head", 3)]
    for runs in (2, 4):  # an even count: each side goes first as often as the other
        pairs = [abba_order(runs)[i][0] for i in range(0, 2 * runs, 2)]
        assert pairs.count("base") == pairs.count("head") == runs // 2
    with pytest.raises(AbError, match="at least 1"):
        abba_order(0)


def _fake_venv(venv: Path, digest: str | None) -> None:
    ab.venv_python(venv).parent.mkdir(parents=True)
    ab.venv_python(venv).write_text("")
    if digest is not None:
        (venv / ab.VENV_MARKER).write_text(json.dumps({"constraints_sha256": digest}))


def test_the_base_venv_is_reused_only_for_the_same_constraints(tmp_path):
    assert venv_reuse(tmp_path / "none", "a" * 64) == (False, f"no venv at {tmp_path / 'none'} yet")
    _fake_venv(tmp_path / "v", "a" * 64)
    assert venv_reuse(tmp_path / "v", "a" * 64)[0]
    reuse, why = venv_reuse(tmp_path / "v", "b" * 64)
    assert not reuse and "constraints.txt changed" in why and "aaaaaaaaaaaa → bbbbbbbbbbbb" in why
    _fake_venv(tmp_path / "interrupted", None)
    assert venv_reuse(tmp_path / "interrupted", "a" * 64) == (
        False, f"{tmp_path / 'interrupted'} has no record of a complete install (an interrupted one?)")


def test_ensure_base_venv_installs_from_the_base_constraints_then_reuses(tmp_path, monkeypatch):
    base = _tree(tmp_path / "base", "base")
    calls = []

    def call(command, what):  # stands in for `python -m venv` and pip: records, and makes the interpreter
        calls.append(command)
        if "venv" in command:
            ab.venv_python(Path(command[-1])).parent.mkdir(parents=True, exist_ok=True)
            ab.venv_python(Path(command[-1])).write_text("")

    monkeypatch.setattr(ab, "_check_call", call)
    out, log = tmp_path / "out", []
    python = ab.ensure_base_venv(out, base, log.append, creator="py")
    assert python == ab.venv_python(out / ab.VENV_DIR)
    assert calls[0] == ["py", "-m", "venv", "--clear", str(out / ab.VENV_DIR)]
    assert calls[1][-4:] == ["-c", str(base / "constraints.txt"), "-e", f"{base}[test]"]
    assert ab.ensure_base_venv(out, base, log.append) == python and len(calls) == 2
    assert "reusing" in log[-1]
    (base / "constraints.txt").write_text("pytest==9\n")  # a bump: installed afresh
    ab.ensure_base_venv(out, base, log.append, creator="py")
    assert len(calls) == 4 and "changed" in log[-3]


def test_the_manifest_is_written_whole(tmp_path):
    sides = {"base": Side("base", tmp_path, Path("/b/python"), "origin/main", "c0ffee", {"onnxruntime": "1.31.0"}),
             "head": Side("head", tmp_path, Path("/h/python"), versions={"onnxruntime": "1.32.0"})}
    records = [RunRecord("base-1", "base", 1, ["py"], str(tmp_path), "b.json", 12.5, 0),
               RunRecord("head-1", "head", 1, ["py"], str(tmp_path), "h.json", 13.0, 1)]
    for status in ("running", "done"):
        path = write_manifest(tmp_path, ab.manifest(sides, records, tmp_path, ["-x"], status=status))
    document = json.loads(path.read_text())
    assert document["order"] == ["base-1", "head-1"] and document["status"] == "done"
    assert document["sides"]["base"] == {"tree": str(tmp_path), "python": "/b/python", "ref": "origin/main",
                                         "commit": "c0ffee", "onnxruntime": "1.31.0"}
    assert document["runs"][1]["exit_code"] == 1 and document["runs_wall_s"] == 25.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ab.json"]  # no temporary file left


# ------------------------------------------------------------------ real processes


@pytest.mark.parametrize(("code", "returns"), [(0, 0), (1, 1)])  # 1: some tests failed, still a complete run
def test_a_completed_run_moves_its_json_into_place(tmp_path, code, returns):
    partial, final = tmp_path / ".base-1.json.partial", tmp_path / "base-1.json"
    script = f"import pathlib, sys; pathlib.Path({str(partial)!r}).write_text('{{}}'); sys.exit({code})"
    assert run_suite_process("base-1", [sys.executable, "-c", script], tmp_path, {}, partial, final) == returns
    assert final.read_text() == "{}" and not partial.exists()


@pytest.mark.parametrize(("code", "writes", "message"), [(3, True, "exited with 3"),
                                                          (0, False, "wrote no benchmark JSON")])
def test_a_failed_run_is_named_and_leaves_no_json(tmp_path, code, writes, message):
    partial, final = tmp_path / ".head-2.json.partial", tmp_path / "head-2.json"
    script = f"import pathlib, sys; {writes} and pathlib.Path({str(partial)!r}).write_text('{{'); sys.exit({code})"
    with pytest.raises(AbError, match=f"run head-2 failed: .* {message}"):
        run_suite_process("head-2", [sys.executable, "-c", script], tmp_path, {}, partial, final)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_the_run_and_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ab, "STOP_GRACE_S", 2.0)
    partial, final = tmp_path / ".base-1.json.partial", tmp_path / "base-1.json"
    # the child writes half a file, sends Ctrl-C to ortgate (its parent) and would go on for a minute
    script = (f"import os, pathlib, signal, time; pathlib.Path({str(partial)!r}).write_text('{{'); "
              "os.kill(os.getppid(), signal.SIGINT); time.sleep(60)")
    # A job started in the background of a non-interactive shell (as CI may start this suite) inherits SIGINT
    # ignored; an interactive `ortgate ab` has Python's own handler, which the test restores for itself.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(AbError, match="interrupted during run base-1"):
            run_suite_process("base-1", [sys.executable, "-c", script], tmp_path, {}, partial, final)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []


def test_ab_runs_both_sides_alternately_each_in_its_own_tree(tmp_path, monkeypatch, capsys):
    base, head = _tree(tmp_path / "base", "base"), _tree(tmp_path / "head", "head")
    monkeypatch.chdir(head)
    args = argparse.Namespace(base=None, base_dir=base, base_python=sys.executable, head_python=None, runs=1,
                              out=Path("out"), markdown=None, tolerance="4pp", pytest_args=["--", *QUICK])
    # compare finds no ortgate record in these stand-in runs: nothing comparable, exit 2
    assert ab.ab_command(args) == 2
    out = head / "out"
    for name, side in (("base-1", "base"), ("head-1", "head")):  # each side imported its own src/
        assert json.loads((out / f"{name}.json").read_text())["benchmarks"][0]["extra_info"] == {"side": side}
    manifest = json.loads((out / "ab.json").read_text())
    assert manifest["order"] == ["base-1", "head-1"] and manifest["status"] == "done"
    assert manifest["sides"]["head"]["python"] == sys.executable
    assert manifest["sides"]["base"]["onnxruntime"] and manifest["sides"]["base"]["python_version"]
    run = manifest["runs"][0]
    assert run["command"][1:4] == ["-m", "pytest", "benchmarks"] and run["command"][-2:] == ["-p", "no:cacheprovider"]
    assert run["cwd"] == str(base) and run["wall_s"] > 0
    compare = manifest["compare"]["command"]
    assert compare[1:7] == ["-m", "ortgate.cli", "compare", "--old", str(out / "base-1.json"), "--new"]
    assert compare[-3:] == [str(out / "head-1.json"), "--tolerance", "4pp"]
    assert "order: A B (A = base, B = head; 1 per side)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ab.json", "base-1.json", "head-1.json"]
