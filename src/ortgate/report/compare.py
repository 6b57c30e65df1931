"""Compare a run with a saved one, by their run records (the `ortgate` section of a pytest-benchmark JSON
written by the suite, or a summary.json): regression, improvement, no change, or insufficient evidence,
for speed and accuracy.

Speed: each variant's round times are divided by the median round time of the same run's baseline
(same mode), so a slower machine or a busier day alone cancels; the two runs' normalized times then
go through a Mann–Whitney U test together with a minimum effect (default 5%). Accuracy: the drop of
each variant's accuracy from the saved run, against its tolerance (a per-variant table, as in the suite),
with McNemar's test on the same rows when both records hold their predictions (benchmark JSON does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ortgate.errors import OrtgateError
from ortgate.measure.stats import compare_normalized_times, paired_comparison
from ortgate.record.result import MODEL_ONLY, SPEED_MODE, RunResult, read_run_record
from ortgate.spec.thresholds import ToleranceTable
from ortgate.spec.variants import BASELINE_ID


@dataclass(frozen=True)
class CompareRow:
    kind: str  # "speed" or "accuracy"
    variant: str
    mode: str
    old: float
    new: float
    change: float  # speed: relative change of normalized time (+ = slower); accuracy: new − old
    p_value: float | None
    verdict: str
    note: str = ""


def load_run(path: Path) -> RunResult:
    """A saved run's record: a pytest-benchmark JSON written by the suite, or a summary.json (no predictions)."""
    return read_run_record(path)


def _round_times(run: RunResult) -> dict[tuple[str, str], list[float]]:
    return {(v.variant, mode): list(times) for v in run.variants for mode, times in (v.round_seconds or {}).items()
            if mode in (SPEED_MODE, MODEL_ONLY)}


def _normalized(times: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for (variant, mode), values in times.items():
        base = times.get((BASELINE_ID, mode))
        if base:
            out[(variant, mode)] = np.asarray(values) / float(np.median(base))
    return out


def check_machines(old: RunResult, new: RunResult, cross_machine: bool) -> None:
    old_id, new_id = old.machine_id, new.machine_id
    if old_id and new_id and old_id != new_id and not cross_machine:
        raise OrtgateError(
            f"the runs come from different CPUs ({old.machine.get('model_name', '?')} [{old_id}] vs "
            f"{new.machine.get('model_name', '?')} [{new_id}]); speed ratios to each run's own baseline cancel much "
            "of that, but not ISA effects. Pass --cross-machine to compare anyway."
        )


def compare_runs(old: RunResult, new: RunResult, *, alpha: float = 0.05, min_effect: float = 0.05,
                 tolerance: ToleranceTable | None = None, cross_machine: bool = False) -> list[CompareRow]:
    check_machines(old, new, cross_machine)
    rows = []
    old_times, new_times = _round_times(old), _round_times(new)
    old_norm, new_norm = _normalized(old_times), _normalized(new_times)
    for key in sorted(set(old_times) & set(new_times), key=lambda k: (k[1], k[0])):
        variant, mode = key
        if variant == BASELINE_ID:
            continue
        if key not in old_norm or key not in new_norm:
            rows.append(CompareRow("speed", variant, mode, float("nan"), float("nan"), float("nan"), None,
                                   "insufficient evidence", "a run lacks the baseline to normalize by"))
            continue
        result = compare_normalized_times(old_norm[key], new_norm[key], alpha, min_effect)
        rows.append(CompareRow("speed", variant, mode, float(np.median(old_norm[key])),
                               float(np.median(new_norm[key])), result.effect, result.p_value, result.verdict,
                               f"{result.n_old} vs {result.n_new} rounds"))
    rows += _accuracy_rows(old, new, tolerance or ToleranceTable())
    if not rows:
        raise OrtgateError("nothing to compare: the two runs share no variant timed or evaluated in both "
                           "(did the new run select other variants, or skip its benchmarks?)")
    old_acc, new_acc = ({v.variant for v in run.variants if v.accuracy is not None} for run in (old, new))
    missing = [("speed", v, m) for v, m in sorted(set(old_times) - set(new_times)) if v != BASELINE_ID]
    missing += [("accuracy", v, "") for v in sorted(old_acc - new_acc)]
    return rows + [_missing(*m) for m in missing]


def _missing(kind: str, variant: str, mode: str) -> CompareRow:
    """A variant the old run measured and the new one did not (a failed build, a dropped variant): a
    regression, never a silent pass."""
    nan = float("nan")
    return CompareRow(kind, variant, mode, nan, nan, nan, None, "regression",
                      "missing in the new run: it was measured in the old one")


def _accuracy_rows(old: RunResult, new: RunResult, tolerances: ToleranceTable) -> list[CompareRow]:
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
        rows.append(CompareRow("accuracy", variant, "", a, b, b - a, p, verdict, note))
    return rows


def render_markdown(rows: list[CompareRow], old_name: str, new_name: str) -> str:
    lines = [f"# ortgate compare: `{new_name}` against `{old_name}`", ""]
    speed = [r for r in rows if r.kind == "speed"]
    if speed:
        lines += ["Speed: round times divided by the same run's baseline median; Mann–Whitney U and a minimum "
                  "effect.", "", "| variant | mode | old (× baseline time) | new | change | p | verdict | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in speed:
            p = f"{r.p_value:.3g}" if r.p_value is not None and r.p_value == r.p_value else "–"
            lines.append(f"| {r.variant} | {r.mode} | {r.old:.4f} | {r.new:.4f} | {r.change * 100:+.1f}% | {p} | "
                         f"**{r.verdict}** | {r.note} |")
    accuracy = [r for r in rows if r.kind == "accuracy"]
    if accuracy:
        lines += ["", "| variant | old accuracy | new accuracy | change (pp) | McNemar p | verdict | note |",
                  "|---|---|---|---|---|---|---|"]
        for r in accuracy:
            p = f"{r.p_value:.3g}" if r.p_value is not None else "–"
            lines.append(f"| {r.variant} | {r.old:.4f} | {r.new:.4f} | {r.change * 100:+.2f} | {p} | "
                         f"**{r.verdict}** | {r.note} |")
    regressions = [r for r in rows if r.verdict == "regression"]
    lines += ["", f"**{len(regressions)} regression(s)**" + (": " + ", ".join(
        f"{r.variant} {r.mode or r.kind}".strip() for r in regressions) if regressions else "")]
    return "\n".join(lines) + "\n"
