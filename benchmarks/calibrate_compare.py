"""Calibrate `ortgate compare` on runs the suite itself saves: run the suite's interleaved speed measurement
`--runs` times in separate processes (one unchanged build, this machine), with a slower twin of one variant in
the matrix (O99 with its attention fusion disabled: a real slowdown the same runs measure), then report how
often a whole job fails when nothing changed (A/A) and how often the twin's slowdown is caught, for 1, 2, 3, ...
runs a side (`ortgate calibrate`).

    python benchmarks/calibrate_compare.py --runs 12 --out ortgate-calibration [-- extra pytest args]
    python benchmarks/calibrate_compare.py --from ortgate-calibration --out ortgate-calibration  # analysis only

Figures on a shared machine vary with the neighbours: they are reported, never asserted in `pytest tests`.
Exit status 1 when, at the largest number of runs a side, more than 5% of A/A jobs fail or a job catches fewer
than 90% of the slowdowns of 10% or more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ortgate.files import atomic_write_text
from ortgate.report.calibration import JOB, calibrate, consecutive_aa, render_markdown
from ortgate.report.compare import load_run

# Real slowdowns of O99 for calibrating `ortgate compare`, timed in the same cycles: O99 without its attention
# fusion, and the export optimized at level 1 only (no transformer fusions).
TWINS = {"O99-no-attention": "{ level = 99, disable_attention_fusion = true }", "O99-as-O1": "{ level = 1 }"}
TWIN_MATRIX = "".join(f'[variants.{twin}]\nparent = "onnx"\noptimize = {step}\n\n' for twin, step in TWINS.items())


def save_runs(out: Path, runs: int, extra: list[str]) -> list[Path]:
    matrix = out / "twins.toml"
    atomic_write_text(matrix, TWIN_MATRIX)
    return save_suite_runs(out, runs, ["-k", "interleaved_speed", f"--ortgate-matrix={matrix}", *extra])


def save_suite_runs(out: Path, runs: int, pytest_args: list[str]) -> list[Path]:
    """`runs` suite runs (`pytest benchmarks <pytest_args>`), each in its own process, saved as out/run-NN.json;
    stops at the first that fails, with its output's end."""
    paths = []
    for i in range(1, runs + 1):
        path = out / f"run-{i:02d}.json"
        command = [sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", "-q", *pytest_args,
                   f"--benchmark-json={path}", f"--ortgate-results-dir={out / 'results'}"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise SystemExit(f"run {i} failed (exit {done.returncode}): {' '.join(command)}")
        print(f"run {i}/{runs}: {time.perf_counter() - started:.0f}s -> {path}", flush=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=12, help="suite runs to save (12)")
    parser.add_argument("--out", type=Path, default=Path("ortgate-calibration"), help="folder for runs and figures")
    parser.add_argument("--from", dest="source", type=Path, help="analyse the run-*.json already in this folder")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N runs of --from")
    parser.add_argument("--per-side", type=int, nargs="+", help="runs a side to evaluate (default 1 .. runs/2)")
    parser.add_argument("--splits", type=int, default=200, help="random old/new splits per setting (200)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for each suite run (after --)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paths = (sorted(args.source.glob("run-*.json"))[args.skip:] if args.source
             else save_runs(args.out, args.runs, args.pytest_args))
    runs = [load_run(p) for p in paths]
    per_side = args.per_side or list(range(1, len(runs) // 2 + 1))
    twins = [t for t in TWINS if all(r.variant(t) is not None for r in runs)]
    results = {twin: [calibrate(runs, "O99", twin, n, args.splits, others=[t for t in twins if t != twin])
                      for n in per_side] for twin in twins}
    command = "python benchmarks/calibrate_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    consecutive = consecutive_aa(runs[:6], twins)
    text = "\n".join(render_markdown(r, command if i == 0 else "", consecutive if i == 0 else None)
                     for i, r in enumerate(results.values()))
    atomic_write_text(args.out / "calibration.md", text)
    figures = {"command": command, "seconds": round(time.perf_counter() - started),
               "results": {t: [c.as_dict() for c in r] for t, r in results.items()}, "consecutive": consecutive}
    atomic_write_text(args.out / "calibration.json", json.dumps(figures, indent=2))
    print(text)
    # The targets, at the most runs a side: at most 5% of A/A jobs fail, and a job catches a slowdown of
    # 10% or more (in some mode) at least 90% of the time.
    last = [r[-1] for r in results.values()]
    ok = all(c.aa_job_failure_rate <= 0.05 for c in last) and all(
        c.detection_rate(JOB) >= 0.9 for c in last if max(c.slowdown.values()) >= 0.10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
