"""Calibration of `ortgate compare` on runs the suite itself saved: how often a whole job fails when nothing
changed (A/A), and how often a real slowdown of one variant is caught, at a given number of runs a side.

The runs are repeated runs of one unchanged build on one machine (`benchmarks/calibrate_compare.py` makes them),
and each holds, besides the variants of the matrix, a slower twin of one of them (e.g. O99 with its attention
fusion disabled) timed in the same round-robin cycles. A/A: disjoint random splits of the runs into old and
new sides, compared exactly as `ortgate compare` compares them, twin left out; the job fails when any row is a
regression. Detection: the same splits, with the variant's cycles on the new side replaced by its twin's, so the
new side carries a real slowdown whose size each run measured (the twin against the variant, cycle by cycle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ortgate.errors import OrtgateError
from ortgate.measure.stats import cycle_log_ratio
from ortgate.record.result import RunResult
from ortgate.report.compare import DEFAULT_RUN_NOISE, compare_runs, per_run_log_ratios

JOB = "the job"  # a detection by any mode's row of the variant: what fails a CI job


@dataclass(frozen=True)
class Calibration:
    runs: int
    per_side: int
    splits: int
    aa_job_failures: int
    aa_row_regressions: int
    aa_rows: int
    detections: dict[str, int]  # mode (or JOB: any mode) -> splits in which the variant's slowdown was a regression
    slowdown: dict[str, float]  # mode -> the twin's slowdown against the variant, median over runs (+0.12: 12%)
    run_sd: dict[str, float]  # "variant mode" -> sd between runs of that row's log ratio
    variant: str
    twin: str

    @property
    def aa_job_failure_rate(self) -> float:
        return self.aa_job_failures / self.splits

    def detection_rate(self, mode: str) -> float:
        return self.detections[mode] / self.splits

    def as_dict(self) -> dict:
        return {"runs": self.runs, "per_side": self.per_side, "splits": self.splits,
                "aa_job_failures": self.aa_job_failures, "aa_job_failure_rate": self.aa_job_failure_rate,
                "aa_row_regressions": self.aa_row_regressions, "aa_rows": self.aa_rows,
                "variant": self.variant, "twin": self.twin, "slowdown": self.slowdown,
                "detections": self.detections,
                "detection_rate": {m: self.detection_rate(m) for m in self.detections}, "run_sd": self.run_sd}


def without(run: RunResult, *variants: str) -> RunResult:
    return replace(run, variants=[v for v in run.variants if v.variant not in variants],
                   predictions={k: p for k, p in (run.predictions or {}).items() if k not in variants}
                   or run.predictions)


def slowed(run: RunResult, variant: str, twin: str) -> RunResult:
    """The run with the variant's round-robin cycles swapped for its twin's (timed in the same cycles)."""
    twin_result = run.variant(twin)
    if twin_result is None or not twin_result.interleaved:
        raise OrtgateError(f"a run has no interleaved timing of {twin!r}: save the runs with it in the matrix")
    variants = [replace(v, interleaved=twin_result.interleaved) if v.variant == variant else v
                for v in run.variants if v.variant != twin]
    return replace(run, variants=variants)


def measured_slowdown(runs: Sequence[RunResult], variant: str, twin: str) -> dict[str, float]:
    """Per mode: the twin's time against the variant's in the same cycles, per run as compare takes a run's figure
    (trimmed mean over cycles), then the median over runs."""
    per_mode: dict[str, list[float]] = {}
    for run in runs:
        mine, theirs = run.variant(variant), run.variant(twin)
        for mode, r in (mine.interleaved or {}).items() if mine and theirs else ():
            if mode in (theirs.interleaved or {}):
                logs = np.log(np.asarray(theirs.interleaved[mode].cycle_seconds) / np.asarray(r.cycle_seconds))
                per_mode.setdefault(mode, []).append(float(cycle_log_ratio(logs)))
    return {mode: math.expm1(float(np.median(v))) for mode, v in per_mode.items()}


def run_spread(runs: Sequence[RunResult]) -> dict[str, float]:
    """Per row ("variant mode"): the sd between runs of its per-run log ratio (what `run_noise` stands for)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for (variant, mode, _), log in per_run_log_ratios(run).items():
            values.setdefault(f"{variant} {mode}", []).append(log)
    return {row: float(np.std(v, ddof=1)) for row, v in sorted(values.items()) if len(v) > 1}


def calibrate(runs: Sequence[RunResult], variant: str, twin: str, per_side: int, splits: int = 200, seed: int = 0,
              alpha: float = 0.05, min_effect: float = 0.05, run_noise: float = DEFAULT_RUN_NOISE,
              others: Sequence[str] = ()) -> Calibration:
    """A/A job failures and detections of `twin`'s slowdown of `variant` over `splits` random disjoint splits
    into `per_side` runs a side; `others` (more twins in the runs) are left out like the twin."""
    if len(runs) < 2 * per_side:
        raise OrtgateError(f"{per_side} runs a side need at least {2 * per_side} saved runs; got {len(runs)}")
    if any(r.variant(variant) is None or r.variant(twin) is None for r in runs):
        raise OrtgateError(f"every run must hold both {variant!r} and its slower twin {twin!r}")
    rng = np.random.default_rng(seed)
    plain = [without(r, twin, *others) for r in runs]
    slow = [without(slowed(r, variant, twin), *others) for r in runs]
    failures = row_regressions = rows = 0
    detections: dict[str, int] = {}
    for _ in range(splits):
        order = rng.permutation(len(runs))
        old, new = order[:per_side], order[per_side:2 * per_side]
        kwargs = {"alpha": alpha, "min_effect": min_effect, "run_noise": run_noise}
        aa = compare_runs([plain[i] for i in old], [plain[i] for i in new], **kwargs)
        regressions = [r for r in aa if r.verdict == "regression"]
        failures += bool(regressions)
        row_regressions += len(regressions)
        rows += len(aa)
        detected = [r for r in compare_runs([plain[i] for i in old], [slow[i] for i in new], **kwargs)
                    if r.kind == "speed" and r.variant == variant]
        for r in detected:
            detections[r.mode] = detections.get(r.mode, 0) + (r.verdict == "regression")
        detections[JOB] = detections.get(JOB, 0) + any(r.verdict == "regression" for r in detected)
    return Calibration(len(runs), per_side, splits, failures, row_regressions, rows, detections,
                       measured_slowdown(runs, variant, twin), run_spread(plain), variant, twin)


def consecutive_aa(runs: Sequence[RunResult], twins: Sequence[str], alpha: float = 0.05, min_effect: float = 0.05,
                   run_noise: float = DEFAULT_RUN_NOISE) -> dict:
    """The issue's own test on consecutive runs of one build: every pair compared one run a side, and the first
    half against the second half; how many of those jobs fail (a regression in any row)."""
    import itertools

    plain = [without(r, *twins) for r in runs]
    kwargs = {"alpha": alpha, "min_effect": min_effect, "run_noise": run_noise}

    def fails(old, new) -> bool:
        return any(r.verdict == "regression" for r in compare_runs(old, new, **kwargs))

    pairs = list(itertools.combinations(range(len(plain)), 2))
    failed_pairs = [f"{i + 1} vs {j + 1}" for i, j in pairs if fails([plain[i]], [plain[j]])]
    half = len(plain) // 2
    return {"runs": len(plain), "pairs": len(pairs), "pairs_failed": failed_pairs,
            "halves_failed": fails(plain[:half], plain[half:2 * half]), "per_half": half}


def render_markdown(results: Sequence[Calibration], command: str = "", consecutive: dict | None = None) -> str:
    first = results[0]
    lines = ["# ortgate compare, calibrated on saved runs", "",
             f"{first.runs} runs of one unchanged build, saved by the suite; {first.splits} random disjoint splits "
             f"into old and new sides for each number of runs a side. Injected slowdown: `{first.variant}` replaced "
             f"on the new side by `{first.twin}`, measured in the same cycles at "
             + ", ".join(f"{m} {s:+.1%}" for m, s in sorted(first.slowdown.items())) + ".", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    modes = sorted(m for m in first.detections if m != JOB) + [JOB]
    lines += ["| runs a side | spread between runs | A/A jobs failed | A/A rows called regression | "
              + " | ".join(f"slowdown caught ({m})" for m in modes) + " |",
              "|---|---|---|---|" + "---|" * len(modes)]
    for c in results:
        spread = "assumed (--run-noise)" if c.per_side == 1 else "estimated from the runs"
        lines.append(f"| {c.per_side} | {spread} | {c.aa_job_failures}/{c.splits} ({c.aa_job_failure_rate:.1%}) | "
                     f"{c.aa_row_regressions}/{c.aa_rows} | "
                     + " | ".join(f"{c.detections.get(m, 0)}/{c.splits} ({c.detection_rate(m):.0%})" for m in modes)
                     + " |")
    if consecutive:
        c = consecutive
        lines += ["", f"The first {c['runs']} consecutive runs, every pair compared one run a side: "
                  f"{len(c['pairs_failed'])} of {c['pairs']} jobs failed"
                  + (f" ({', '.join(c['pairs_failed'])})" if c["pairs_failed"] else "")
                  + f"; the first {c['per_half']} against the next {c['per_half']}: "
                  + ("failed" if c["halves_failed"] else "passed") + "."]
    lines += ["", "Spread between runs of each row (sd of the per-run log ratio):", "",
              "| row | sd |", "|---|---|"]
    lines += [f"| {row} | {sd:.2%} |" for row, sd in first.run_sd.items()]
    return "\n".join(lines) + "\n"
