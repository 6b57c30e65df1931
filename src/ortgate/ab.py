"""`ortgate ab`: the same-runner A/B of two versions of the project.

Hosted CI runners differ from one run to the next (CPU model, neighbours, turbo), so a pull request's
speed compared with a baseline that main saved on another machine mostly measures the machines. Here the
base (a git ref checked out into a temporary worktree, or a directory) and the head (the working tree)
run the suite on the same machine in alternating processes, A B B A A B ..., so that drift over the job
falls on both sides alike; then the shipped `ortgate compare --old <base runs> --new <head runs>` judges.

Each side runs in its own tree (its own `benchmarks/`, `ortgate-structure/` and `pyproject.toml`) with its
own interpreter, and imports its own `src/` first (PYTHONPATH), so that a base run never imports the
head's ortgate even when both use one venv. The base gets a venv of its own, installed from its own
`constraints.txt` (kept in the out folder and reused while that file is unchanged): a pull request that
bumps onnxruntime is measured against the old version.

Knows nothing about the suite's internals: it runs processes and reads exit codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.files import atomic_write_text, sha256_file
from ortgate.record.provenance import source_control

Log = Callable[[str], None]
SIDES = ("base", "head")
MANIFEST = "ab.json"
VENV_DIR = "base-venv"
VENV_MARKER = "ortgate-ab-venv.json"  # written last by a complete install: what it was installed from
STOP_GRACE_S = 30.0  # after Ctrl-C: how long a suite process gets to stop, then to stop when interrupted again
_PROBE = ("import importlib.metadata as m, importlib.util as u, json, sys\n"
          "try:\n    ort = m.version('onnxruntime')\nexcept m.PackageNotFoundError:\n    ort = None\n"
          "spec = u.find_spec('ortgate')\n"
          "print(json.dumps({'python_version': sys.version.split()[0], 'onnxruntime': ort,\n"
          "                  'ortgate_from': spec.origin if spec else None}))")


class AbError(OrtgateError):
    """`ortgate ab` cannot start (bad input) or a run failed or was interrupted."""


@dataclass
class Side:
    """One version of the project: where its tree is and which interpreter runs it."""

    name: str  # "base" or "head"
    tree: Path
    python: Path
    ref: str | None = None  # the git ref asked for (base only)
    commit: str | None = None
    versions: dict = field(default_factory=dict)  # python_version, onnxruntime (probed)

    def env(self) -> dict[str, str]:
        """The environment of this side's processes: its own `src/` first on the import path."""
        env = dict(os.environ)
        src = self.tree / "src"
        if src.is_dir():
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
        return env


@dataclass
class RunRecord:
    name: str  # e.g. "base-2"
    side: str
    index: int
    command: list[str]
    cwd: str
    json: str
    wall_s: float
    exit_code: int


def abba_order(runs: int) -> list[tuple[str, int]]:
    """The alternating order of `runs` processes per side: (base, 1) (head, 1) (head, 2) (base, 2) (base, 3) ..."""
    if runs < 1:
        raise AbError(f"--runs must be at least 1 (got {runs})")
    order: list[tuple[str, int]] = []
    for pair in range(1, runs + 1):
        first, second = SIDES if pair % 2 else SIDES[::-1]
        order += [(first, pair), (second, pair)]
    return order


# ------------------------------------------------------------------ input checks (before anything runs)

def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def git_toplevel(cwd: Path) -> Path:
    done = _git(cwd, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise AbError(f"--base needs a git repository, and {cwd} is not in one "
                      "(give the base as a directory with --base-dir instead)")
    return Path(done.stdout.strip())


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit `ref` names in `repo`; an unknown ref, or a commit without constraints.txt, is an AbError."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise AbError(f"unknown git ref {ref!r} in {repo} (fetch it first; in GitHub Actions, actions/checkout "
                      "needs fetch-depth: 0 for the base branch to exist)")
    commit = done.stdout.strip()
    if _git(repo, "cat-file", "-e", f"{commit}:constraints.txt").returncode != 0:
        raise AbError(f"{ref} ({commit[:12]}) has no constraints.txt: cannot install its environment")
    return commit


def check_base_dir(path: Path) -> Path:
    path = path.resolve()
    if not path.is_dir():
        raise AbError(f"--base-dir {path} is not a directory")
    for needed in ("constraints.txt", "benchmarks"):
        if not (path / needed).exists():
            raise AbError(f"--base-dir {path} has no {needed}: give the root of a checkout of this project")
    return path


def check_python(value: str, flag: str) -> Path:
    """An interpreter, or a venv folder (its bin/python)."""
    path = Path(value)
    if path.is_dir():
        path = venv_python(path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AbError(f"{flag} {value}: no executable Python interpreter there")
    return path.absolute()  # not resolve(): a venv's python is a symlink to the base interpreter


def check_head_tree(tree: Path) -> Path:
    if not (tree / "benchmarks").is_dir():
        raise AbError(f"no benchmarks/ in {tree}: run `ortgate ab` from the project's root")
    return tree


# ------------------------------------------------------------------ the base's tree and environment

@contextlib.contextmanager
def base_worktree(repo: Path, commit: str, log: Log) -> Iterator[Path]:
    """`commit` checked out (detached) into a temporary folder, removed again afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="ortgate-ab-base-"))
    tree = tmp / "tree"
    done = _git(repo, "worktree", "add", "--detach", str(tree), commit)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AbError(f"git worktree add of {commit[:12]} failed: {done.stderr.strip()}")
    log(f"base: {commit[:12]} checked out in {tree}")
    try:
        yield tree
    finally:
        _git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
        _git(repo, "worktree", "prune")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_reuse(venv: Path, constraints_sha256: str) -> tuple[bool, str]:
    """Whether the venv at `venv` can serve again, and why (or why not)."""
    if not venv_python(venv).exists():
        return False, f"no venv at {venv} yet"
    try:
        marker = json.loads((venv / VENV_MARKER).read_text())
    except (OSError, ValueError):
        return False, f"{venv} has no record of a complete install (an interrupted one?)"
    if marker.get("constraints_sha256") != constraints_sha256:
        return False, (f"the base's constraints.txt changed since {venv} was installed "
                       f"({str(marker.get('constraints_sha256'))[:12]} → {constraints_sha256[:12]})")
    return True, f"installed from the same constraints.txt ({constraints_sha256[:12]})"


def ensure_base_venv(out: Path, base_tree: Path, log: Log, creator: str = sys.executable) -> Path:
    """A venv in `out` with the base installed from its own constraints.txt; reused while that file is the same."""
    venv = out / VENV_DIR
    digest = sha256_file(base_tree / "constraints.txt")
    reuse, why = venv_reuse(venv, digest)
    if reuse:
        log(f"base venv: reusing {venv}, {why}")
        return venv_python(venv)
    log(f"base venv: creating {venv} ({why})")
    (venv / VENV_MARKER).unlink(missing_ok=True)
    _check_call([creator, "-m", "venv", "--clear", str(venv)], "creating the base venv")
    log("base venv: pip install -c constraints.txt -e '.[test]' of the base (a cold install downloads torch and "
        "the rest: minutes; pip's own progress follows)")
    _check_call([str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
                 "-c", str(base_tree / "constraints.txt"), "-e", f"{base_tree}[test]"], "installing the base")
    atomic_write_text(venv / VENV_MARKER, json.dumps({"constraints_sha256": digest, "installed_from": str(base_tree)}))
    log("base venv: installed")
    return venv_python(venv)


def _check_call(command: list[str], what: str) -> None:
    code = subprocess.call(command)
    if code != 0:
        raise AbError(f"{what} failed ({' '.join(command)} exited with {code}; its output is above)")


def probe_versions(side: Side) -> dict:
    """The side's Python version, its onnxruntime version (None where not installed) and where its processes
    import ortgate from (its own tree's src/, whatever the venv has installed)."""
    done = subprocess.run([str(side.python), "-c", _PROBE], capture_output=True, text=True, timeout=120,
                          env=side.env(), cwd=side.tree)
    if done.returncode != 0:
        raise AbError(f"{side.python} ({side.name}) cannot run: {done.stderr.strip()[-300:] or done.returncode}")
    return json.loads(done.stdout)


# ------------------------------------------------------------------ running the processes

def suite_command(side: Side, json_path: Path, pytest_args: list[str]) -> list[str]:
    return [str(side.python), "-m", "pytest", "benchmarks", *pytest_args, f"--benchmark-json={json_path}",
            "-p", "no:cacheprovider"]


def run_suite_process(name: str, command: list[str], cwd: Path, env: dict, partial: Path, final: Path) -> int:
    """Run one suite process; on success move its JSON from `partial` to `final` and return pytest's exit code.

    Exit 0 (all passed) and 1 (some tests failed: a result, e.g. a gate that failed) with the JSON written
    count as complete runs. Anything else, or Ctrl-C, leaves no JSON behind and raises an AbError that
    names the run.
    """
    partial.unlink(missing_ok=True)
    process = subprocess.Popen(command, cwd=cwd, env=env)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        _stop(process, STOP_GRACE_S)
        partial.unlink(missing_ok=True)
        raise AbError(f"interrupted during run {name}; the runs completed before it are kept") from None
    if code in (0, 1) and partial.is_file():
        os.replace(partial, final)
        return code
    partial.unlink(missing_ok=True)
    why = "wrote no benchmark JSON" if code in (0, 1) else f"exited with {code}"
    raise AbError(f"run {name} failed: {' '.join(command)} (in {cwd}) {why}; its output is above")


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """Let the child finish its own Ctrl-C (it usually got the same SIGINT), else interrupt it, else kill it."""
    for action in (None, lambda: process.send_signal(signal.SIGINT), process.kill):
        if action is not None:
            with contextlib.suppress(OSError):
                action()
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            process.wait(timeout=grace_s)
            return


def run_all(sides: dict[str, Side], runs: int, out: Path, pytest_args: list[str], log: Log,
            records: list[RunRecord], on_run: Callable[[], None] = lambda: None) -> list[RunRecord]:
    """Every process in ABBA order, appended to `records` as each completes; `on_run` is called after each one
    (to keep the manifest current). On a failed run `records` holds the completed ones."""
    order = abba_order(runs)
    log("order: " + " ".join("A" if side == "base" else "B" for side, _ in order)
        + f" (A = base, B = head; {runs} per side)")
    for number, (side_name, index) in enumerate(order, 1):
        side, name = sides[side_name], f"{side_name}-{index}"
        final, partial = out / f"{name}.json", out / f".{name}.json.partial"
        command = suite_command(side, partial, pytest_args)
        log(f"[{number}/{len(order)}] {name}: {' '.join(command)}  (in {side.tree})")
        start = time.perf_counter()
        code = run_suite_process(name, command, side.tree, side.env(), partial, final)
        wall = time.perf_counter() - start
        records.append(RunRecord(name, side_name, index, command, str(side.tree), str(final), round(wall, 1), code))
        log(f"[{number}/{len(order)}] {name}: {wall:.1f} s" + ("" if code == 0 else " (some tests failed)"))
        on_run()
    return records


def clear_old_runs(out: Path) -> None:
    """Remove the run files of an earlier ab in `out`, so that only this one's are there."""
    for side in SIDES:
        for path in [*out.glob(f"{side}-*.json"), *out.glob(f".{side}-*.json.partial")]:
            path.unlink()
    (out / MANIFEST).unlink(missing_ok=True)


# ------------------------------------------------------------------ compare and the manifest

def compare_command(head: Side, records: list[RunRecord], markdown: Path | None, tolerance: str | None) -> list[str]:
    by_side = {side: [r.json for r in records if r.side == side] for side in SIDES}
    command = [str(head.python), "-m", "ortgate.cli", "compare", "--old", *by_side["base"], "--new", *by_side["head"]]
    if markdown is not None:
        command += ["--markdown", str(markdown)]
    if tolerance is not None:
        command += ["--tolerance", tolerance]
    return command


def manifest(sides: dict[str, Side], records: list[RunRecord], out: Path, pytest_args: list[str], **extra) -> dict:
    return {
        "schema": "ortgate-ab", "schema_version": 1, "out": str(out), "pytest_args": pytest_args,
        "order": [r.name for r in records],
        "sides": {name: {"tree": str(s.tree), "python": str(s.python), "ref": s.ref, "commit": s.commit, **s.versions}
                  for name, s in sides.items()},
        "runs": [asdict(r) for r in records],
        "runs_wall_s": round(sum(r.wall_s for r in records), 1),
        **extra,
    }


def write_manifest(out: Path, document: dict) -> Path:
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    return path


# ------------------------------------------------------------------ the command

def add_parser(commands) -> None:
    """The `ab` subcommand's arguments (`commands`: the CLI's subparsers)."""
    ab = commands.add_parser(
        "ab", help="same-runner A/B: the suite on the base (a git ref or a folder) and on the working tree in "
        "alternating processes (A B B A ...), then `ortgate compare`; exit 1 on a regression",
        description="Run from the project's root: `ortgate ab --base origin/main --runs 4 -- <pytest args>`.")
    where = ab.add_mutually_exclusive_group(required=True)
    where.add_argument("--base", metavar="REF", help="a git ref of this repository, checked out into a temporary "
                       "worktree (e.g. origin/main)")
    where.add_argument("--base-dir", type=Path, metavar="DIR", help="a checkout of the base (with its constraints.txt)")
    ab.add_argument("--base-python", metavar="PATH", help="the base's interpreter or venv (default: a venv in --out "
                    "installed from the base's constraints.txt, reused while that file is unchanged)")
    ab.add_argument("--head-python", metavar="PATH", help="the head's interpreter or venv (default: this one)")
    ab.add_argument("--runs", type=int, default=4, help="suite processes per side (default 4: what a 10%% "
                    "slowdown needs on a 2-core machine, README)")
    ab.add_argument("--out", type=Path, default=Path("ortgate-ab"), help="output folder: <side>-<i>.json, ab.json, "
                    "the base venv (default ortgate-ab)")
    ab.add_argument("--markdown", type=Path, help="compare also writes its table here (e.g. $GITHUB_STEP_SUMMARY)")
    ab.add_argument("--tolerance", help="compare's allowed accuracy/F1 drop, e.g. 4pp (default: compare's)")
    ab.add_argument("pytest_args", nargs="...", metavar="-- PYTEST_ARGS", help="passed to every suite process")


@dataclass
class AbInputs:
    """The checked input: everything `ortgate ab` needs, resolved before anything runs."""

    head_tree: Path
    head_python: Path
    base_python: Path | None
    runs: int
    out: Path
    pytest_args: list[str]
    repo: Path | None = None  # --base: the repository and the commit of the ref
    ref: str | None = None
    commit: str | None = None
    base_dir: Path | None = None


def check_inputs(args, cwd: Path) -> AbInputs:
    """Every input check, before anything runs: one AbError for the first problem found."""
    abba_order(args.runs)
    pytest_args = list(args.pytest_args or [])
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    if any(a.startswith("--benchmark-json") for a in pytest_args):
        raise AbError("ortgate ab sets --benchmark-json itself (<out>/<side>-<i>.json): leave it out")
    head_python = check_python(args.head_python, "--head-python") if args.head_python else Path(sys.executable)
    base_python = check_python(args.base_python, "--base-python") if args.base_python else None
    inputs = AbInputs(cwd, head_python, base_python, args.runs, (cwd / args.out).absolute(), pytest_args)
    if args.base is not None:
        inputs.repo = git_toplevel(cwd)
        inputs.head_tree = inputs.repo
        inputs.ref, inputs.commit = args.base, resolve_ref(inputs.repo, args.base)
    else:
        inputs.base_dir = check_base_dir(cwd / args.base_dir)
    check_head_tree(inputs.head_tree)
    return inputs


@contextlib.contextmanager
def _base_tree(inputs: AbInputs, log: Log) -> Iterator[Path]:
    if inputs.base_dir is not None:
        yield inputs.base_dir
    else:
        with base_worktree(inputs.repo, inputs.commit, log) as tree:
            yield tree


def tree_commit(tree: Path) -> str | None:
    """The commit checked out in `tree` (with "+uncommitted changes" when tracked files differ), None outside git."""
    found = source_control(tree)
    return None if found is None else found["commit"] + ("+uncommitted changes" if found["dirty"] else "")


def _measure(inputs: AbInputs, log: Log) -> tuple[dict[str, Side], list[RunRecord]]:
    """Set up the base, then every suite process; the manifest is rewritten after each one."""
    records: list[RunRecord] = []
    with _base_tree(inputs, log) as base_tree:
        base_python = inputs.base_python or ensure_base_venv(inputs.out, base_tree, log)
        base = Side("base", base_tree, base_python, inputs.ref, inputs.commit or tree_commit(base_tree))
        sides = {"base": base, "head": Side("head", inputs.head_tree, inputs.head_python,
                                            commit=tree_commit(inputs.head_tree))}
        for side in sides.values():
            side.versions = probe_versions(side)
            log(f"{side.name}: {side.python} (Python {side.versions['python_version']}, onnxruntime "
                f"{side.versions['onnxruntime']}), ortgate from {side.versions['ortgate_from']}")

        def keep(status: str = "running", **extra) -> None:
            write_manifest(inputs.out, manifest(sides, records, inputs.out, inputs.pytest_args, status=status, **extra))

        try:
            run_all(sides, inputs.runs, inputs.out, inputs.pytest_args, log, records, on_run=keep)
        except AbError as exc:
            keep("failed", error=str(exc))
            raise
    return sides, records


def ab_command(args, cwd: Path | None = None, log: Log = print) -> int:
    """`ortgate ab`: measure, compare, write the manifest; the exit code is compare's (see README)."""
    inputs = check_inputs(args, (cwd or Path.cwd()).absolute())
    inputs.out.mkdir(parents=True, exist_ok=True)
    clear_old_runs(inputs.out)
    start = time.perf_counter()
    try:
        sides, records = _measure(inputs, log)
        measured = time.perf_counter() - start
        command = compare_command(sides["head"], records, args.markdown, args.tolerance)
        log("compare: " + " ".join(command))
        code = subprocess.call(command, cwd=inputs.head_tree, env=sides["head"].env())
    except KeyboardInterrupt:  # between runs, in the venv setup or in compare (a run's own is handled there)
        raise AbError("interrupted; the runs completed before it are kept") from None
    code = code if code in (0, 1, 2) else 2
    head_failed = [r.name for r in records if r.side == "head" and r.exit_code != 0]
    if code == 0 and head_failed:
        log(f"the suite's own tests failed in {', '.join(head_failed)}: exit 1")
        code = 1
    total = time.perf_counter() - start
    write_manifest(inputs.out, manifest(sides, records, inputs.out, inputs.pytest_args, status="done",
                                        compare={"command": command, "exit_code": code},
                                        setup_wall_s=round(measured - sum(r.wall_s for r in records), 1),
                                        total_wall_s=round(total, 1)))
    log("wall: " + ", ".join(f"{r.name} {r.wall_s:.1f} s" for r in records))
    log(f"total {total:.1f} s ({sum(r.wall_s for r in records):.1f} s in {len(records)} suite processes); "
        f"manifest {inputs.out / MANIFEST}; exit {code}")
    return code
