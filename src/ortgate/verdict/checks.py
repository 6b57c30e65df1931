"""The run's verdicts on its own measurements: each variant's accuracy and F1 gated against the baseline
on the same rows, and its same-run speed ratio checked against its floor. Each is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ortgate.measure.evaluation import Evaluator
from ortgate.measure.metrics import f1_score_fast
from ortgate.measure.speed import SpeedMeter
from ortgate.measure.stats import (
    PairedComparison,
    logit_differences,
    minimum_detectable_drop,
    paired_bootstrap_interval,
    paired_comparison,
    rows_needed,
)
from ortgate.spec.thresholds import SpeedFloor, ToleranceTable, speed_floor_for
from ortgate.spec.variants import BASELINE_ID, VariantSet
from ortgate.verdict.gate import GateResult, SpeedCheck

GATED_METRICS = ("accuracy", "f1")


@dataclass
class AccuracyGates:
    evaluator: Evaluator
    tolerance: ToleranceTable
    mode: str = "point"
    confidence: float = 0.95
    _gates: dict[tuple[str, str], GateResult] = field(default_factory=dict)

    def paired(self, variant_id: str) -> PairedComparison:
        """The variant against the baseline on the same rows (McNemar, interval of the accuracy difference)."""
        evaluate = self.evaluator.evaluate
        return paired_comparison(self.evaluator.data.labels, evaluate(BASELINE_ID).predictions,
                                 evaluate(variant_id).predictions, self.confidence)

    def gate(self, variant_id: str, metric: str) -> GateResult:
        """Compare one metric of `variant_id` with the baseline measured in this run."""
        key = (variant_id, metric)
        if key not in self._gates:
            baseline, candidate = self.evaluator.evaluate(BASELINE_ID), self.evaluator.evaluate(variant_id)
            paired = self.paired(variant_id)
            if metric == "accuracy":
                interval = paired.interval
            else:  # F1 has no closed-form paired interval: resample rows (seeded, reproducible)
                num_labels = self.evaluator.num_labels
                interval = paired_bootstrap_interval(
                    lambda y, p: f1_score_fast(y, p, num_labels), self.evaluator.data.labels, baseline.predictions,
                    candidate.predictions, self.confidence)
            base_value, tolerance = getattr(baseline.metrics, metric), self.tolerance.for_variant(variant_id)
            discordant_rate = paired.discordant / paired.n  # the paired design's power rests on it (accuracy)
            self._gates[key] = GateResult(
                metric=metric, variant_id=variant_id, baseline_id=BASELINE_ID,
                baseline=base_value, value=getattr(candidate.metrics, metric),
                tolerance=tolerance, differing=paired.differing_predictions,
                total=paired.n, mode=self.mode, interval=interval, confidence=self.confidence,
                mcnemar_p=paired.p_exact, mcnemar_mid_p=paired.p_mid,
                min_detectable_drop=minimum_detectable_drop(discordant_rate, paired.n, self.confidence),
                rows_needed=rows_needed(tolerance.allowed_drop(base_value), discordant_rate, self.confidence))
        return self._gates[key]

    def results(self) -> dict[str, GateResult]:
        """The gates computed so far, the worse of a variant's metrics for each (a failure before a pass)."""
        out: dict[str, GateResult] = {}
        for (vid, _), gate in self._gates.items():
            if vid not in out or (out[vid].passed and not gate.passed):
                out[vid] = gate
        return out

    def logit_differences(self, variant_id: str) -> dict[str, float]:
        return logit_differences(self.evaluator.evaluate(BASELINE_ID).logits,
                                 self.evaluator.evaluate(variant_id).logits)


@dataclass
class SpeedFloors:
    meter: SpeedMeter
    variants: VariantSet
    floors: tuple[tuple[str, SpeedFloor], ...] = ()
    checks: dict[str, SpeedCheck] = field(default_factory=dict)

    def reference(self, variant_id: str) -> str:
        """What the variant's floor is stated against: its parent if the floor says so, else the baseline."""
        floor = speed_floor_for(self.floors, variant_id)
        parent = self.variants.specs[variant_id].parent
        return parent if floor and floor.reference == "parent" and parent else BASELINE_ID

    def check(self, variant_id: str) -> SpeedCheck:
        """The same-run ratio to the floor's reference, checked against the floor."""
        if variant_id not in self.checks:
            r = self.meter.same_run_ratio(variant_id, self.reference(variant_id))
            self.checks[variant_id] = SpeedCheck(r, speed_floor_for(self.floors, variant_id))
        return self.checks[variant_id]

    def same_check_as(self, variant_id: str) -> str | None:
        """The variant whose speed check this one's would repeat: the same graph, reference and floor."""
        original = self.meter.plan.duplicate_of(variant_id)
        if original is None:
            return None
        if speed_floor_for(self.floors, variant_id) != speed_floor_for(self.floors, original):
            return None
        return original if self.reference(variant_id) == self.reference(original) else None
