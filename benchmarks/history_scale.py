"""How `ortgate history` and its dashboard scale: a store of N synthetic runs × V variants (default 1,000 × 20),
each run a full record (accuracy, interleaved speed ratio with its interval, p99, peak RSS, gate), with the noise
measured on this project's machines and a few real steps; then `ortgate history` and `ortgate history --html`
are timed as users run them (fresh processes, wall clock, Python's start included). The synthetic steps: variant-00's
ratio -5% at run 500 (with onnxruntime 1.32.0 -> 1.33.0), variant-01's +10% at run 800, variant-03's accuracy
-0.5pp at run 700; a FAIL gate every 97th run.

    python benchmarks/history_scale.py --out DIR [--runs 1000] [--variants 20] [--store URL]

Writes DIR/scale.json and DIR/scale.md and prints the table. --store: a PostgreSQL URL to fill instead of a
SQLite file in DIR (the database must be empty or hold only this benchmark's runs)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from ortgate.history.store import Provenance, Store
from ortgate.record.result import (
    FootprintResult,
    InterleavedResult,
    LatencyResult,
    MeasureSettings,
    ModelInfo,
    RunResult,
    VariantResult,
)

RATIO_NOISE = 0.031  # sd of the log same-run ratio between runs (median over variants, 8 saved runs)
P99_NOISE = 0.104  # the p99's median spread between runs (README, deployment rows)
MACHINE = {"arch": "x86_64", "model_name": "synthetic CPU", "id": "synthetic01", "flags": ["avx2"]}


def variant_row(name: str, i: int, rng, level: float) -> VariantResult:
    ratio = level * float(np.exp(rng.normal(0, RATIO_NOISE)))
    latency = LatencyResult(400, 5.0, 6.0, 10.0 / level * float(np.exp(rng.normal(0, P99_NOISE))), 12.0, 5.5,
                            {"p99": (9.0, 11.0)}, 0.95)
    peak = 200.0 * float(np.exp(rng.normal(0, 0.002)))
    return VariantResult(name, parent="onnx", isa="avx2", build="cache hit", gate="pass" if i % 97 else "FAIL",
                         accuracy=0.9 - (0.005 if i >= 700 and name.endswith("03") else 0.0),
                         samples_per_s=50 * ratio,
                         interleaved={"end-to-end": InterleavedResult("pytorch", (1.0,) * 8, ratio,
                                                                       (ratio * 0.97, ratio * 1.03), 0.95)},
                         latency=latency, footprint=FootprintResult(3, 20.0, peak, 60.0, 90.0, (peak,) * 3,
                                                                    (60.0,) * 3, (90.0,) * 3))


def synthetic_run(i: int, variants: int, rng) -> RunResult:
    rows = [VariantResult("pytorch", gate="baseline", accuracy=0.9, samples_per_s=50.0, speed_ratio=1.0)]
    for v in range(variants - 1):
        level = 2.0 + 0.1 * v
        if v == 0 and i >= 500:
            level *= 0.95  # a 5% regression at run 500
        if v == 1 and i >= 800:
            level *= 1.10  # a 10% improvement at run 800
        rows.append(variant_row(f"variant-{v:02d}", i, rng, level))
    generated = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=6 * i)
    return RunResult(generated=generated.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=MACHINE,
                     versions={"onnxruntime": "1.32.0" if i < 500 else "1.33.0"},
                     model=ModelInfo("synthetic", "/m", "fp", "bert", ["NEGATIVE", "POSITIVE"]), data="synthetic",
                     settings=MeasureSettings(2, 128, 1, 64, 3, 1, 1), variants=rows,
                     source_control={"commit": hashlib.sha1(str(i).encode()).hexdigest(), "branch": "main",
                                     "dirty": False})


def fill(target: str, runs: int, variants: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with Store(target) as store:
        for i in range(runs):
            store.append(synthetic_run(i, variants, rng), Provenance("history_scale.py"))
            if (i + 1) % 100 == 0:
                print(f"stored {i + 1}/{runs} runs", file=sys.stderr)
    return time.perf_counter() - start


def timed(args: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ortgate.cli", *args], capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--variants", type=int, default=20)
    parser.add_argument("--store", help="a PostgreSQL URL (default: a SQLite file in --out)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.store or str(args.out / "history.db")
    fill_s = fill(target, args.runs, args.variants, args.seed)
    plain = sorted(timed(["history", "--store", target]) for _ in range(3))  # what answers a user: 3 tries
    history_s, code, _ = plain[1]
    json_s, _, _ = timed(["history", "--store", target, "--json", str(args.out / "history.json")])
    html_s, html_code, _ = timed(["history", "--store", target, "--html", str(args.out / "dashboard")])
    steps = json.loads((args.out / "history.json").read_text())
    found = [(s["variant"], s["metric"], st["index"], st["change"]) for s in steps["series"] for st in s["steps"]]
    result = {"runs": args.runs, "variants": args.variants, "store": "postgresql" if args.store else "sqlite",
              "fill_seconds": fill_s, "history_seconds": [p[0] for p in plain], "history_exit": code,
              "history_json_seconds": json_s,
              "dashboard_seconds": html_s, "dashboard_exit": html_code, "steps": found}
    lines = ["| store | runs × variants | store them (one transaction each) | `ortgate history` (median of 3) | "
             "with `--json` | `ortgate history --html` |", "|---|---|---|---|---|---|",
             f"| {result['store']} | {args.runs} × {args.variants} | {fill_s:.1f} s | {history_s:.2f} s "
             f"(exit {code}) | {json_s:.2f} s | {html_s:.1f} s |", "",
             "Steps found (variant, metric, run index, change):", ""]
    lines += [f"- {v} {m} at {i}: {c}" for v, m, i, c in found]
    (args.out / "scale.json").write_text(json.dumps(result, indent=1))
    (args.out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
