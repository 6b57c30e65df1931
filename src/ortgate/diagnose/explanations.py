"""What a run explains at its end: a profile of each slow variant, a diagnosis of each failed quantized gate,
and (with `repair` set) a repair of each of those. Reads the verdicts the run reached and measures nothing again;
the profiles and diagnoses run apart from the timed passes, and a repair times its candidates in round-robins of
its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from ortgate.diagnose.explain import Explainer
from ortgate.diagnose.repair import KEEP_RATIO, Repairer, RepairResult
from ortgate.errors import OrtgateError
from ortgate.measure.profile import ProfileDiff
from ortgate.measure.speed import SpeedMeter
from ortgate.measure.tensor_error import Diagnosis
from ortgate.spec.variants import Quantize
from ortgate.verdict.checks import AccuracyGates, SpeedFloors

SLOW_RATIO = KEEP_RATIO  # a variant below this ratio to its parent (same run) gets a profile in the summary
DIAGNOSIS_TOP = 3  # nodes named in the summary for a failed gate


@dataclass
class Explanations:
    """From verdicts the run already reached: a profile against the parent for each variant whose same-run ratio to
    its parent is below its floor or below 1.2x, a diagnosis for each quantized variant whose accuracy or F1 gate
    failed, and a repair of each of those when a repairer is given. A failure to explain is kept as its message:
    it never fails the run."""

    explainer: Explainer
    meter: SpeedMeter
    floors: SpeedFloors
    gates: AccuracyGates
    repairer: Repairer | None = None  # None: no repairs (the `repair` setting is off)
    slow: dict[str, tuple[str, ProfileDiff | str]] = field(default_factory=dict)  # why, and the diff or the error
    failed: dict[str, Diagnosis | str] = field(default_factory=dict)
    repairs: dict[str, RepairResult | str] = field(default_factory=dict)  # a refused repair: its message

    def slow_variants(self) -> dict[str, str]:
        """Variants the run timed in the round-robin against their parent, below their floor or 1.2x it."""
        times = self.meter.interleaved_seconds.get("end-to-end", {})
        variants, out = self.meter.plan.variants, {}
        for vid in self.meter.plan.run_ids:
            parent = variants.specs[vid].parent
            if parent is None:
                continue
            mine, theirs = self.meter.measured_as(vid), self.meter.measured_as(parent)
            if mine not in times or theirs not in times or mine == theirs:  # not timed, or the parent's own graph
                continue
            ratio = self.meter.same_run_ratio(vid, parent)
            check = self.floors.checks.get(vid)
            if check is not None and not check.passed:
                out[vid] = f"below its floor ({check.message})"
            elif ratio.ratio < SLOW_RATIO:
                out[vid] = f"{ratio.ratio:.2f}x its parent {parent} in the same run, below {SLOW_RATIO}x"
        return out

    def failed_gates(self) -> list[str]:
        variants = self.meter.plan.variants
        return [vid for vid, gate in self.gates.results().items()
                if not gate.passed and isinstance(variants.specs[vid].step, Quantize)]

    def run(self) -> None:
        profiled: dict[tuple[str, str], ProfileDiff | str] = {}  # byte-identical graphs are profiled once
        for vid, why in self.slow_variants().items():
            parent = self.meter.plan.variants.specs[vid].parent
            key = (self.meter.measured_as(vid), self.meter.measured_as(parent))
            if key not in profiled:
                try:
                    profiled[key] = self.explainer.profile_diff(*key)
                except Exception as exc:  # noqa: BLE001 - an explanation that breaks is reported, never fatal
                    profiled[key] = f"profiling failed: {type(exc).__name__}: {exc}"
            self.slow[vid] = (why, profiled[key])
        for vid in self.failed_gates():
            try:
                self.failed[vid] = self.explainer.diagnose(vid)
            except Exception as exc:  # noqa: BLE001
                self.failed[vid] = f"diagnosis failed: {type(exc).__name__}: {exc}"
        for vid in self.failed if self.repairer is not None else ():
            self.explainer.log(f"[ortgate] repairing {vid} (--ortgate-repair)")
            try:
                self.repairs[vid] = self.repairer.repair(vid)
            except OrtgateError as exc:
                self.repairs[vid] = str(exc)
        self.explainer.close()
