"""Calibration of the run-comparison statistics on real timings: how often an A/A comparison of one build
cries wolf, and how often an injected slowdown of about 50% is caught. A command that reports its figures,
not a test: detection rates measured from timings on a shared machine vary with the neighbours, so they are
never asserted inside `pytest tests` (a busy CI machine once measured the injected 50% as 24% to 100%).

    python benchmarks/calibrate_compare.py [--aa 40] [--slowdowns 10] [--json out.json]

Exit status 1 when more than 5% of A/A comparisons report a regression or fewer than 90% of the injected
slowdowns are caught, so the figures can still gate where the machine is quiet.

A "run" here is the variant and the baseline timed in interleaved rounds, each variant round divided by the
baseline round it ran beside, which cancels drift within and between runs. Two runs are then compared with
`compare_normalized_times`, as `ortgate compare` does. A tiny BERT built from a config is timed, so the
command needs no downloads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ortgate.build.builder import Builder
from ortgate.build.runtime import OnnxPredictor
from ortgate.cache import Cache
from ortgate.measure.stats import compare_normalized_times
from ortgate.measure.throughput import interleaved_round_times, workload
from ortgate.sources.models import load_model_source
from ortgate.sources.tiny_models import build_tiny_classifier, sentences
from ortgate.spec.variants import DEFAULT_VARIANTS

ROUNDS = 11
MIN_ROUND_SECONDS = 0.05


def workloads(folder: Path):
    texts, _ = sentences(16, seed=5)
    model = build_tiny_classifier("bert", folder / "model")
    builder = Builder(DEFAULT_VARIANTS, load_model_source(str(model)), Cache(folder / "cache"), texts, max_length=32)
    baseline = workload(OnnxPredictor(builder.build("onnx").path, 1, 32), texts, "model-only")
    variant_predictor = OnnxPredictor(builder.build("O99-dynamic-int8-arm64").path, 1, 32)
    variant = workload(variant_predictor, texts, "model-only")
    extra = workload(variant_predictor, texts[:8], "model-only")  # 8 of 16 texts more: +50%

    def slower():  # the same graph doing 8/16 more work per round: an injected slowdown of about 50%
        variant()
        extra()

    return baseline, variant, slower


def one_run(baseline, variant) -> np.ndarray:
    variant_t, baseline_t = interleaved_round_times(variant, baseline, ROUNDS, 1, MIN_ROUND_SECONDS)
    return np.asarray(variant_t) / np.asarray(baseline_t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aa", type=int, default=40, help="A/A comparisons (default 40)")
    parser.add_argument("--slowdowns", type=int, default=10, help="comparisons with the injected slowdown (10)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        baseline, variant, slower = workloads(Path(folder))
        aa = [compare_normalized_times(one_run(baseline, variant), one_run(baseline, variant)).verdict
              for _ in range(args.aa)]
        injected = [compare_normalized_times(one_run(baseline, variant), one_run(baseline, slower))
                    for _ in range(args.slowdowns)]
    false_alarms = aa.count("regression")
    caught = [r.verdict for r in injected].count("regression")
    figures = {"aa_comparisons": args.aa, "aa_regressions": false_alarms, "aa_verdicts": aa,
               "slowdown_comparisons": args.slowdowns, "slowdowns_caught": caught,
               "slowdown_effects": [round(r.effect, 3) for r in injected],
               "rounds": ROUNDS, "min_round_seconds": MIN_ROUND_SECONDS,
               "seconds": round(time.perf_counter() - started, 1)}
    print(f"A/A: {false_alarms} of {args.aa} comparisons reported a regression")
    print(f"injected ~50% slowdown: caught in {caught} of {args.slowdowns} (measured effects: "
          f"{', '.join(f'{e:+.0%}' for e in figures['slowdown_effects'])})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if false_alarms <= 0.05 * args.aa and caught >= 0.9 * args.slowdowns else 1


if __name__ == "__main__":
    sys.exit(main())
