"""Calibrate `ortgate compare`'s deployment rows (p99 request latency and cold load time, each relative to its
reference in the same run; peak RSS) on runs the suite itself saves: run the latency and footprint benchmarks
`--runs` times in separate processes (one unchanged build, this machine), then report each row's spread between
runs (what `report.compare.DEPLOYMENT_NOISE` assumes with one run a side) and how often a whole job would fail
when nothing changed (A/A), for 1, 2, ... runs a side.

    python benchmarks/calibrate_deployment.py --runs 6 --out ortgate-calibration-deployment [-- extra pytest args]
    python benchmarks/calibrate_deployment.py --from DIR --out DIR   # analysis only

Figures on a shared machine vary with the neighbours: they are reported, never asserted in `pytest tests`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from calibrate_compare import save_suite_runs  # this folder: the scripts run as files
from ortgate.files import atomic_write_text
from ortgate.report.compare import DEPLOYMENT_NOISE, compare_runs, load_run, per_run_deployment_logs


def save_runs(out: Path, runs: int, extra: list[str]) -> list[Path]:
    return save_suite_runs(out, runs, ["-k", "request_latency or memory_and_load", *extra])


def row_spreads(runs) -> dict[str, dict[str, float]]:
    """figure -> "variant (reference)" -> sd between runs of the row's per-run log figure."""
    values = defaultdict(list)
    for run in runs:
        for key, value in per_run_deployment_logs(run).items():
            values[key].append(value)
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (variant, figure, reference), xs in sorted(values.items()):
        if len(xs) == len(runs):
            out[figure][f"{variant} ({reference})" if reference else variant] = float(np.std(xs, ddof=1))
    return dict(out)


def aa_failures(runs, per_side: int, splits: int, seed: int = 0) -> tuple[int, int, list[str]]:
    """Disjoint random old/new splits of the runs, compared as `ortgate compare` compares them: the splits in
    which any row was a regression, the splits tried, and the rows that were."""
    rng = random.Random(seed)
    combos = list(itertools.combinations(range(len(runs)), 2 * per_side))
    failures, rows = 0, []
    for _ in range(splits):
        chosen = list(rng.choice(combos))
        rng.shuffle(chosen)
        old, new = [runs[i] for i in chosen[:per_side]], [runs[i] for i in chosen[per_side:]]
        regressions = [f"{r.variant} {r.mode}" for r in compare_runs(old, new) if r.verdict == "regression"]
        failures += bool(regressions)
        rows += regressions
    return failures, splits, rows


def render(spreads, aa, command: str, seconds: int) -> str:
    lines = ["# Deployment rows of `ortgate compare`, calibrated on saved runs", "", f"`{command}` ({seconds} s)", "",
             "| figure | rows | median run sd | largest run sd (row) | assumed with one run a side |",
             "|---|---|---|---|---|"]
    for figure, rows in spreads.items():
        worst = max(rows, key=rows.get)
        lines.append(f"| {figure} | {len(rows)} | {np.median(list(rows.values())):.1%} | {rows[worst]:.1%} ({worst}) "
                     f"| {DEPLOYMENT_NOISE.get(figure, float('nan')):.1%} |")
    lines += ["", "| runs a side | A/A jobs failed | rows called regressions |", "|---|---|---|"]
    for n, (failed, splits, rows) in aa.items():
        common = ", ".join(f"{k} ×{v}" for k, v in sorted(_counts(rows).items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"| {n} | {failed}/{splits} ({failed / splits:.1%}) | {common or '–'} |")
    return "\n".join(lines) + "\n"


def _counts(items):
    out = defaultdict(int)
    for item in items:
        out[item] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="suite runs to save (6)")
    parser.add_argument("--out", type=Path, default=Path("ortgate-calibration-deployment"))
    parser.add_argument("--from", dest="source", type=Path, help="analyse the run-*.json already in this folder")
    parser.add_argument("--splits", type=int, default=200, help="random old/new splits per setting (200)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for each suite run (after --)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paths = sorted(args.source.glob("run-*.json")) if args.source else save_runs(args.out, args.runs,
                                                                               args.pytest_args)
    runs = [load_run(p) for p in paths]
    spreads = row_spreads(runs)
    aa = {n: aa_failures(runs, n, args.splits) for n in range(1, len(runs) // 2 + 1)}
    command = "python benchmarks/calibrate_deployment.py " + " ".join(argv if argv is not None else sys.argv[1:])
    seconds = round(time.perf_counter() - started)
    text = render(spreads, aa, command, seconds)
    atomic_write_text(args.out / "calibration.md", text)
    atomic_write_text(args.out / "calibration.json", json.dumps(
        {"command": command, "seconds": seconds, "run_sd": spreads,
         "aa": {n: {"failed": f, "splits": s, "rows": r} for n, (f, s, r) in aa.items()}}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
