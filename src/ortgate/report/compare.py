"""Compare runs with saved ones, by their run records (the `ortgate` section of a pytest-benchmark JSON written
by the suite, or a summary.json): regression, improvement, no change, or insufficient evidence, for speed and
accuracy, over one or more runs a side.

Speed: the run is the unit. Each run measured every variant and the baseline in interleaved round-robin
cycles; a variant's figure in a run is the 20% trimmed mean over cycles of the log of its reference's time
over its own in the same cycle: noise that comes and goes within a run hits both sides of each ratio, and a
slower machine alone cancels. The reference of an ONNX graph is the plain export (`onnx`), timed by the same
runtime with the same thread pool, so load on the machine hits both alike (PyTorch's OpenMP threads slow down
far more than ONNX Runtime's under load: measured here, 2-core PyTorch ran 10-20x slower beside other work
while ONNX Runtime ran 2-3x slower); the export itself is compared with the PyTorch baseline, which shows a
change of the runtime as a whole. What a run cannot cancel is its own state (which minute, what ran beside
it), so the figures of several runs a side are compared with a two-sample t-test on the runs (m + n − 2
degrees of freedom, each row's own spread between runs); with one run a side the spread cannot be estimated
and an assumed run-to-run noise (`run_noise`, measured on saved runs of one build, README) stands in for it.

Verdicts: a regression (improvement) needs its one-sided p-value, Holm-adjusted over every row of the
comparison, below α, and an estimated change of at least `min_effect`; so the job's exit code keeps the
family-wise error over all rows at α. "no change" needs the (1 − 2α) interval within ±`min_effect`
(equivalence, TOST). Anything else is "insufficient evidence", with the runs a side that would likely settle
it. Accuracy: each variant's drop from the old run against its tolerance, with McNemar's exact test on the same
rows (in the same Holm family) when both records hold their predictions (benchmark JSON does).

Deployment figures, by the same rule and in the same family (`per_run_deployment_logs`): an ONNX graph's p99
request latency against the export's in the same run, each graph's cold load time against its reference's in
the same round of fresh processes, and its peak RSS; with one run a side their own spreads are assumed
(`DEPLOYMENT_NOISE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ortgate.errors import OrtgateError
from ortgate.measure.stats import (
    RunLevelComparison,
    compare_run_ratios,
    cycle_log_ratio,
    holm,
    paired_comparison,
)
from ortgate.record.result import MODEL_ONLY, SPEED_MODE, RunResult, read_run_record
from ortgate.spec.thresholds import ToleranceTable
from ortgate.spec.variants import BASELINE_ID, EXPORT_ID

# The sd of one run's figure (a variant's log speed ratio to its reference, round-robin) between runs of one build,
# assumed when a side has a single run: the largest row's spread (dynamic-int8 model-only) over 8 saved runs of
# the default matrix at 24 cycles on this project's machines (README, "Calibrated on saved runs").
DEFAULT_RUN_NOISE = 0.055


# The deployment figures compared across runs, each a per-run log figure where more is better (as speed ratios):
# the variant's p99 request latency relative to its reference's in the same run (blocks interleaved), its cold
# load time relative to its reference's in the same round of fresh processes, and its peak RSS (absolute).
LATENCY, LOAD, MEMORY = "latency p99", "load", "peak RSS"
# Assumed sd of one run's figure between runs of one build, with one run a side (README, "Calibrated on saved
# runs"): the largest row spread over 6 saved runs of the default matrix on this project's machines, rounded up
# (p99 15.2%, load 15.7%, peak RSS 0.6%; benchmarks/calibration-deployment-2026-11-27/).
DEPLOYMENT_NOISE = {LATENCY: 0.16, LOAD: 0.16, MEMORY: 0.01}


@dataclass(frozen=True)
class CompareRow:
    kind: str  # "speed", "accuracy", or "deployment" (mode: latency p99, load, peak RSS)
    variant: str
    mode: str
    old: float  # speed: the speed ratio to the reference (geometric mean over runs); accuracy: the accuracy
    new: float
    change: float  # speed: relative change of the time against the baseline (+ = slower); accuracy: new − old
    p_value: float | None  # Holm-adjusted, for the direction the verdict looks at
    verdict: str
    note: str = ""
    interval: tuple[float, float] | None = None  # speed: of `change`, at the comparison's confidence
    reference: str = ""  # speed: what the variant's time is divided by


def load_run(path: Path) -> RunResult:
    """A saved run's record: a pytest-benchmark JSON written by the suite, or a summary.json (no predictions)."""
    return read_run_record(path)


def reference_for(variant: str) -> str:
    """What a variant's time is divided by in a comparison: the plain export for an ONNX graph, else the baseline."""
    return BASELINE_ID if variant in (BASELINE_ID, EXPORT_ID) else EXPORT_ID


def per_run_log_ratios(run: RunResult) -> dict[tuple[str, str, str], float]:
    """(variant, mode, reference) -> the log of the variant's speed ratio to its reference in this run: the 20%
    trimmed mean over the round-robin cycles of log(reference time / variant time), cycle by cycle. A variant
    whose reference the run did not time is compared with the baseline."""
    cycles = {(v.variant, mode): np.asarray(r.cycle_seconds, dtype=float) for v in run.variants
              for mode, r in (v.interleaved or {}).items() if mode in (SPEED_MODE, MODEL_ONLY)}
    copies = {v.variant for v in run.variants if v.same_graph_as}  # byte-identical graphs: their original's row
    out = {}
    for (variant, mode), times in cycles.items():
        if variant == BASELINE_ID or variant in copies:
            continue
        name = reference_for(variant) if (reference_for(variant), mode) in cycles else BASELINE_ID
        reference = cycles.get((name, mode))
        if reference is not None and len(reference) == len(times) and len(times) and (times > 0).all():
            out[(variant, mode, name)] = float(cycle_log_ratio(np.log(reference / times)))
    return out


def per_run_deployment_logs(run: RunResult) -> dict[tuple[str, str, str], float]:
    """(variant, figure, reference) -> the run's log figure, oriented like a speed ratio (more is better): log of
    the export's p99 over an ONNX graph's (same run, interleaved blocks); the median over rounds of the log of the
    reference's cold load over the variant's in the same round (the export's, or for the export the baseline's);
    log(1 / peak RSS in MB), reference "" (absolute)."""
    rows = {v.variant: v for v in run.variants if not v.same_graph_as}

    def reference(variant: str, measured: str):
        """The variant's reference row, if it measured the figure; else the baseline's (as for speed)."""
        for name in (reference_for(variant), BASELINE_ID):
            if name != variant and rows.get(name) is not None and getattr(rows[name], measured) is not None:
                return rows[name]
        return None

    out = {}
    for variant, v in rows.items():
        # p99 only between ONNX graphs (against the export): PyTorch's tail under load moves with the machine (on
        # 6 saved runs of one build the export's p99 ratio to PyTorch's ranged 1.7x to 7.1x), so it is no reference
        if v.latency and (ref := reference(variant, "latency")) is not None and ref.variant != BASELINE_ID:
            out[(variant, LATENCY, ref.variant)] = math.log(ref.latency.p99_ms / v.latency.p99_ms)
        if v.footprint:
            out[(variant, MEMORY, "")] = -math.log(v.footprint.peak_rss_mb)
            ref = reference(variant, "footprint")
            theirs, mine = (ref.footprint.load_ms_rounds if ref else ()), v.footprint.load_ms_rounds
            if theirs and len(theirs) == len(mine):
                logs = np.log(np.asarray(theirs) / np.asarray(mine))
                out[(variant, LOAD, ref.variant)] = float(np.median(logs))
    return out


def check_machines(old: Sequence[RunResult], new: Sequence[RunResult], cross_machine: bool) -> None:
    runs = [*old, *new]
    ids = {r.machine_id for r in runs if r.machine_id}
    if len(ids) > 1 and not cross_machine:
        cpus = sorted({f"{r.machine.get('model_name', '?')} [{r.machine_id}]" for r in runs if r.machine_id})
        raise OrtgateError(
            f"the runs come from different CPUs ({'; '.join(cpus)}); speed ratios to each run's own baseline "
            "cancel much of that, but not ISA effects. Pass --cross-machine to compare anyway.")


def _as_list(runs: RunResult | Sequence[RunResult]) -> list[RunResult]:
    return [runs] if isinstance(runs, RunResult) else list(runs)


def compare_runs(old: RunResult | Sequence[RunResult], new: RunResult | Sequence[RunResult], *,
                 alpha: float = 0.05, min_effect: float = 0.05, tolerance: ToleranceTable | None = None,
                 cross_machine: bool = False, run_noise: float = DEFAULT_RUN_NOISE,
                 confidence: float | None = None) -> list[CompareRow]:
    """Rows of speed (per variant and mode) and accuracy (per variant), with Holm-controlled verdicts."""
    old, new = _as_list(old), _as_list(new)
    if not old or not new:
        raise OrtgateError("compare needs at least one run on each side")
    check_machines(old, new, cross_machine)
    confidence = confidence if confidence is not None else 1 - alpha
    old_logs = [{**per_run_log_ratios(r), **per_run_deployment_logs(r)} for r in old]
    new_logs = [{**per_run_log_ratios(r), **per_run_deployment_logs(r)} for r in new]
    old_keys, new_keys = set().union(*old_logs), set().union(*new_logs)
    keys = sorted(old_keys & new_keys, key=lambda k: (k[1] in DEPLOYMENT_NOISE, k[1], k[0]))
    groups = {key: ([r[key] for r in old_logs if key in r], [r[key] for r in new_logs if key in r]) for key in keys}
    speed = []
    for key, (x, y) in groups.items():
        noise = DEPLOYMENT_NOISE.get(key[1], run_noise)
        comparison = compare_run_ratios(x, y, run_noise=noise, confidence=confidence, alpha=alpha)
        # Shown: speed as the ratio to the reference (more is faster); a deployment figure as itself over its
        # reference's (or in MB), more is worse.
        sign = -1 if key[1] in DEPLOYMENT_NOISE else 1
        speed.append((key, comparison, math.exp(sign * float(np.mean(x))), math.exp(sign * float(np.mean(y)))))
    accuracy = _accuracy_rows(old[0], new[0], tolerance or ToleranceTable())
    if not speed and not accuracy:
        raise OrtgateError("nothing to compare: the runs share no variant timed (interleaved) or evaluated on both "
                           "sides (did the new runs select other variants, or skip test_interleaved_speed?)")
    rows = _verdicts(speed, accuracy, alpha, min_effect)
    old_acc, new_acc = ({v.variant for v in run.variants if v.accuracy is not None} for run in (old[0], new[0]))
    copies = {v.variant for run in new for v in run.variants if v.same_graph_as}  # timed as their original
    missing = [("deployment" if m in DEPLOYMENT_NOISE else "speed", v, m)
               for v, m in sorted({k[:2] for k in old_keys} - {k[:2] for k in new_keys}) if v not in copies]
    missing += [("accuracy", v, "") for v in sorted(old_acc - new_acc)]
    return rows + [_missing(*m) for m in missing]


SpeedPair = tuple[tuple[str, str, str], RunLevelComparison, float, float]  # (variant, mode, reference), test, ratios


def _verdicts(speed: list[SpeedPair], accuracy: list[tuple[CompareRow, float | None]], alpha: float,
              min_effect: float) -> list[CompareRow]:
    """One Holm family for the regression calls of every row (speed and accuracy), one for speed improvements."""
    worse = [s[1].p_slower for s in speed] + [p for _, p in accuracy if p is not None]
    worse_adj = holm(worse) if worse else []
    better_adj = holm([s[1].p_faster for s in speed]) if speed else []
    rows = []
    for i, pair in enumerate(speed):
        rows.append(_speed_row(pair, worse_adj[i], better_adj[i], alpha, min_effect))
    j = len(speed)
    for row, p in accuracy:
        if p is None:
            rows.append(row)
            continue
        adjusted, j = worse_adj[j], j + 1
        verdict = row.verdict
        if verdict == "regression" and adjusted >= alpha:
            verdict = "insufficient evidence"
        rows.append(replace(row, p_value=adjusted, verdict=verdict))
    return rows


def _speed_row(pair: SpeedPair, p_worse: float, p_better: float, alpha: float, min_effect: float) -> CompareRow:
    (variant, mode, reference), c, old_ratio, new_ratio = pair
    runs = f"{c.n_old} vs {c.n_new} run{'s' if c.n_old + c.n_new > 2 else ''}"
    spread = (f"run sd {c.run_sd:.1%}" if c.estimated else
              f"1 run a side: run-to-run sd {c.run_sd:.1%} assumed, not measured")
    if p_worse < alpha and c.effect >= min_effect:
        verdict, p = "regression", p_worse
    elif p_better < alpha and c.effect <= -min_effect:
        verdict, p = "improvement", p_better
    else:
        p = min(p_worse, p_better)
        low, high = c.equivalence
        verdict = "no change" if -min_effect < low and high < min_effect else "insufficient evidence"
    note = f"{runs}; {spread}"
    if verdict == "insufficient evidence":
        note += f"; ~{c.runs_needed(min_effect, alpha)} runs a side would likely settle it"
    return CompareRow("deployment" if mode in DEPLOYMENT_NOISE else "speed", variant, mode, old_ratio, new_ratio,
                      c.effect, p, verdict, note, c.interval, reference)


def _missing(kind: str, variant: str, mode: str) -> CompareRow:
    """A variant the old runs measured and the new ones did not (a failed build, a dropped variant): a
    regression, never a silent pass."""
    nan = float("nan")
    return CompareRow(kind, variant, mode, nan, nan, nan, None, "regression",
                      "missing in the new runs: it was measured in the old ones")


def _accuracy_rows(old: RunResult, new: RunResult, tolerances: ToleranceTable) -> list[tuple[CompareRow, float | None]]:
    """Each variant's accuracy in the first run of each side (a graph's predictions do not change between runs);
    with the McNemar p-value (unadjusted) where both records hold predictions on the same rows."""
    old_acc = {v.variant: v.accuracy for v in old.variants if v.accuracy is not None}
    new_acc = {v.variant: v.accuracy for v in new.variants if v.accuracy is not None}
    same_rows = old.data == new.data and old.labels is not None and old.labels == new.labels
    rows = []
    for variant in [v for v in new_acc if v in old_acc]:
        a, b = old_acc[variant], new_acc[variant]
        tolerance = tolerances.for_variant(variant)
        drop, allowed = a - b, tolerance.allowed_drop(a)
        verdict = "regression" if drop > allowed + 1e-12 else "improvement" if -drop > allowed + 1e-12 else "no change"
        p, note = None, f"tolerance {tolerance}"
        old_pred, new_pred = (run.predictions.get(variant) if run.predictions else None for run in (old, new))
        if same_rows and old_pred and new_pred and len(old_pred) == len(new_pred):
            paired = paired_comparison(np.asarray(old.labels), np.asarray(old_pred), np.asarray(new_pred))
            p = paired.p_exact
            note += f"; {paired.differing_predictions} predictions changed"
        else:
            note += "; no predictions on the same rows: the point estimate decides"
        rows.append((CompareRow("accuracy", variant, "", a, b, b - a, p, verdict, note), p))
    return rows


def render_markdown(rows: list[CompareRow], old_name: str, new_name: str, *, alpha: float = 0.05,
                    min_effect: float = 0.05) -> str:
    lines = [f"# ortgate compare: `{new_name}` against `{old_name}`", ""]
    speed = [r for r in rows if r.kind == "speed"]
    family = sum(1 for r in rows if r.p_value is not None)
    if speed:
        lines += [f"Speed: each run's speed ratio to a reference timed in the same round-robin cycles (an ONNX "
                  f"graph: the plain export; the export: the PyTorch baseline); the run is the unit (pooled t over "
                  f"runs). Regression/improvement: Holm-adjusted one-sided p < {alpha:g} "
                  f"over all {family} tested rows (the job's family-wise error ≤ {alpha:g}) and a change of at "
                  f"least {min_effect:.0%}; no change: the {1 - 2 * alpha:.0%} interval within ±{min_effect:.0%}.",
                  "", "| variant | mode | reference | old (× reference) | new | change of time | interval | p (Holm) | "
                  "verdict | note |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r.variant} | {r.mode} | {r.reference or '–'} | {_num(r.old, '.3f')} | "
                         f"{_num(r.new, '.3f')} | {_pct(r.change)} | {_interval(r.interval)} | {_p(r.p_value)} | "
                         f"**{r.verdict}** | {r.note} |")
    deployment = [r for r in rows if r.kind == "deployment"]
    if deployment:
        lines += ["", "Deployment figures (same rule, same Holm family): p99 request latency and cold load time as a "
                  "multiple of the reference's in the same run, peak RSS in MB; change: + is worse.", "",
                  "| variant | figure | reference | old | new | change | interval | p (Holm) | verdict | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in deployment:
            spec = ".0f" if r.mode == MEMORY else ".3f"
            lines.append(f"| {r.variant} | {r.mode} | {r.reference or '–'} | {_num(r.old, spec)} | "
                         f"{_num(r.new, spec)} | {_pct(r.change)} | {_interval(r.interval)} | {_p(r.p_value)} | "
                         f"**{r.verdict}** | {r.note} |")
    accuracy = [r for r in rows if r.kind == "accuracy"]
    if accuracy:
        lines += ["", "| variant | old accuracy | new accuracy | change (pp) | McNemar p (Holm) | verdict | note |",
                  "|---|---|---|---|---|---|---|"]
        for r in accuracy:
            lines.append(f"| {r.variant} | {_num(r.old, '.4f')} | {_num(r.new, '.4f')} | "
                         f"{_num(r.change * 100, '+.2f')} | {_p(r.p_value)} | **{r.verdict}** | {r.note} |")
    regressions = [r for r in rows if r.verdict == "regression"]
    lines += ["", f"**{len(regressions)} regression(s)**" + (": " + ", ".join(
        f"{r.variant} {r.mode or r.kind}".strip() for r in regressions) if regressions else "")]
    return "\n".join(lines) + "\n"


def _num(value: float, spec: str) -> str:
    return "–" if value != value else format(value, spec)


def _pct(value: float) -> str:
    return "–" if value != value else f"{value * 100:+.1f}%"


def _p(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.3g}"


def _interval(interval: tuple[float, float] | None) -> str:
    return "–" if interval is None else f"[{interval[0] * 100:+.1f}%, {interval[1] * 100:+.1f}%]"
