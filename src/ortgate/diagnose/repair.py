"""Repair: from a quantized variant that fails its accuracy gate, find one that passes and stays fast.

The search (candidates from `spec.remedies`), in rounds; each candidate is built (through the cache) and gated
with the run's paired statistics against the same baseline rows, and after each round the fp32 parent and the
round's graphs are timed together in one round-robin (the same-run ratio the floors use):
  round 1  every single remedy (per-channel, reduce_range, the preset this CPU points to, calibration, a narrower
           operator list);
  round 2  the round-1 remedies that helped (brought the accuracy closer, or made the graph clearly faster), two,
           three, ... together (at most 16): the CPU's own preset (faster) with per-channel weights and MatMul only
           (closer) may pass where none does alone;
  round 3  only if nothing passed: the graph that came closest is diagnosed, and its worst quantized nodes are kept
           in fp32, 1, 2, 4, ... of them, stopping at the first that passes.
The fastest graph that passes is chosen (or, as fast within its interval, the one with the fewest changes); the
result says whether it keeps the speed the variant must keep (its floor against its parent, else 1.2x).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ortgate.build.plan import BuildPlan
from ortgate.diagnose.explain import Explainer
from ortgate.errors import BuildError, ConfigError
from ortgate.isa import suggest_preset
from ortgate.measure.evaluation import Evaluator
from ortgate.measure.speed import SameRunRatio
from ortgate.measure.stats import paired_ratio_interval
from ortgate.measure.tensor_error import Diagnosis
from ortgate.measure.throughput import RoundRobin, workload
from ortgate.spec.remedies import (
    Candidate,
    combined_candidates,
    exclusion_candidates,
    exclusion_names,
    remedy_candidates,
)
from ortgate.spec.thresholds import Tolerance, ToleranceTable, speed_floor_for
from ortgate.spec.variants import VariantSpec, step_fields
from ortgate.verdict.checks import GATED_METRICS, AccuracyGates
from ortgate.verdict.gate import GateResult

Log = Callable[[str], None]
REPAIR_CYCLES = 8  # round-robin cycles timing the candidates against their fp32 parent
KEEP_RATIO = 1.2  # the speed a repair keeps (ratio to the fp32 parent) where no floor against the parent says


@dataclass
class Outcome:
    """One graph the repair tried (the failing variant itself has no candidate): its build, gates and speed."""

    variant_id: str
    remedy: str
    round: int  # 0: the failing variant; 1: single remedies; 2: pairs of them; 3: fp32 fallback
    spec: VariantSpec
    candidate: Candidate | None = None  # None: the failing variant itself
    build: str = "pending"  # "built" | "cache hit" | "build failed" | "not applicable"
    error: str | None = None
    sha256: str | None = None
    build_seconds: float | None = None
    gates: dict[str, GateResult] = field(default_factory=dict)
    speed: SameRunRatio | None = None

    @property
    def built(self) -> bool:
        return self.build in ("built", "cache hit")

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates.values())

    @property
    def accuracy_delta_pp(self) -> float | None:
        gate = self.gates.get("accuracy")
        return None if gate is None else -gate.drop * 100

    def as_dict(self) -> dict:
        accuracy = self.gates.get("accuracy")
        interval = accuracy.drop_interval if accuracy is not None else None
        return {
            "variant": self.variant_id, "remedy": self.remedy, "round": self.round, "build": self.build,
            "error": self.error, "sha256": self.sha256, "accuracy_delta_pp": self.accuracy_delta_pp,
            "drop_interval_pp": [x * 100 for x in interval] if interval else None,
            "gate": ("pass" if self.passed else "FAIL") if self.gates else None,
            "gates": {m: g.outcome for m, g in self.gates.items()},
            "speed_ratio": self.speed.ratio if self.speed else None,
            "speed_interval": list(self.speed.interval) if self.speed else None,
            "step": step_fields(self.spec.step),
        }


@dataclass
class RepairResult:
    variant_id: str
    parent_id: str
    tolerance: Tolerance
    original: Outcome
    tried: list[Outcome]
    diagnoses: dict[str, Diagnosis]  # by the variant diagnosed (the failing one; the fallback's base)
    seconds: float
    cycles: int
    stopped: str  # why the search ended
    min_ratio: float = 1.2  # the speed to keep, as a ratio to the fp32 parent

    @property
    def passing(self) -> list[Outcome]:
        return [o for o in self.tried if o.passed]

    @property
    def chosen(self) -> Outcome | None:
        """The fastest graph that passes (by its same-run ratio to the fp32 parent), whether or not it keeps
        `min_ratio`; among those whose ratio lies within the fastest's 95% interval (as fast, as far as these cycles
        tell), the one that changes the fewest fields of the failing step: the simplest entry to keep."""
        passing = self.passing
        if not passing:
            return None
        fastest = max(passing, key=lambda o: o.speed.ratio if o.speed is not None else 0.0)
        if fastest.speed is None:
            return fastest
        tied = [o for o in passing if o.speed is not None and o.speed.ratio >= fastest.speed.interval[0]]
        return min(tied, key=lambda o: (self.changes(o), -o.speed.ratio))

    def changes(self, outcome: Outcome) -> int:
        """How many fields of the failing step the outcome's step sets differently."""
        mine, theirs = step_fields(outcome.spec.step), step_fields(self.original.spec.step)
        return sum(mine.get(k) != theirs.get(k) for k in mine.keys() | theirs.keys())

    def as_dict(self, with_diagnoses: bool = True) -> dict:
        chosen = self.chosen
        doc = {"variant": self.variant_id, "fp32_parent": self.parent_id, "tolerance": str(self.tolerance),
               "seconds": round(self.seconds, 1), "cycles": self.cycles, "stopped": self.stopped,
               "min_ratio": self.min_ratio,
               "original": self.original.as_dict(), "candidates": [o.as_dict() for o in self.tried],
               "chosen": chosen.variant_id if chosen else None}
        if with_diagnoses:
            doc["diagnoses"] = {vid: d.as_dict() for vid, d in self.diagnoses.items()}
        return doc

    def best_tried(self, k: int = 3) -> list[Outcome]:
        """What came closest when nothing passed: the smallest accuracy drops."""
        gated = [o for o in self.tried if o.accuracy_delta_pp is not None]
        return sorted(gated, key=lambda o: -o.accuracy_delta_pp)[:k]


@dataclass
class Repairer:
    plan: BuildPlan
    evaluator: Evaluator
    explainer: Explainer
    tolerance: ToleranceTable
    bench_texts: Sequence[str]
    gate_mode: str = "point"
    confidence: float = 0.95
    cycles: int = REPAIR_CYCLES
    log: Log = print
    remedies: bool = True  # False: straight to the fp32 fallback (the failing step kept otherwise as it is)
    speed_floors: tuple = ()  # the run's floors: a floor against the parent is the speed a repair must keep
    cpu_preset: str | None = field(default_factory=lambda: suggest_preset()[0])  # offered as a remedy

    def gates_for(self, variant_id: str) -> AccuracyGates:
        return AccuracyGates(self.evaluator, ToleranceTable(self.tolerance.for_variant(variant_id)),
                             self.gate_mode, self.confidence)

    def check_failing(self, variant_id: str, gates: AccuracyGates) -> Outcome:
        """The failing variant's own outcome; refuses one that builds not, or that passes its gate already."""
        outcome = self.try_graph(variant_id, "the failing variant", 0, gates)
        if not outcome.built:
            raise ConfigError(f"repair: {variant_id!r} did not build ({outcome.error}); there is no graph to "
                              "repair")
        if outcome.passed:
            failing = [v for v in self.plan.run_ids if v != variant_id and v in self.evaluator.evaluations
                       and not all(gates.gate(v, m).passed for m in GATED_METRICS)]
            raise ConfigError(f"repair: {variant_id!r} passes its gate already "
                              f"({outcome.gates['accuracy'].drop * 100:+.2f}pp drop within "
                              f"{outcome.gates['accuracy'].tolerance}); nothing to repair"
                              + (f"; failing here: {', '.join(failing)}" if failing else ""))
        return outcome

    def try_graph(self, variant_id: str, remedy: str, round_: int, gates: AccuracyGates,
                  candidate: Candidate | None = None) -> Outcome:
        spec = self.plan.variants.specs[variant_id]
        outcome = Outcome(variant_id, remedy, round_, spec, candidate)
        try:
            built = self.plan.built(variant_id)
        except BuildError as exc:
            outcome.build = "not applicable" if type(exc).__name__ == "NotApplicable" else "build failed"
            outcome.error = exc.reason
            return outcome
        outcome.build = "cache hit" if built.cache_hit else "built"
        outcome.sha256, outcome.build_seconds = built.graph_sha256, built.build_seconds
        outcome.gates = {m: gates.gate(variant_id, m) for m in GATED_METRICS}
        return outcome

    def try_candidates(self, candidates: list[Candidate], gates: AccuracyGates, stop_at_pass: bool) -> list[Outcome]:
        self.plan.add_variants({c.id: c.spec for c in candidates}, "repair")
        tried = []
        for i, candidate in enumerate(candidates, 1):
            outcome = self.try_graph(candidate.id, candidate.remedy, candidate.round, gates, candidate)
            tried.append(outcome)
            verdict = (f"accuracy {outcome.accuracy_delta_pp:+.2f}pp, {'pass' if outcome.passed else 'FAIL'}"
                       if outcome.gates else f"{outcome.build}: {outcome.error}")
            self.log(f"[ortgate] repair round {candidate.round}, candidate {i}/{len(candidates)} "
                     f"({candidate.remedy}): {verdict}")
            if stop_at_pass and outcome.passed:
                break
        return tried

    def fallback_base(self, original: Outcome, tried: list[Outcome]) -> Outcome:
        """Where the fp32 fallback starts: the graph with the smallest accuracy drop so far."""
        gated = [o for o in (original, *tried) if o.accuracy_delta_pp is not None]
        return max(gated, key=lambda o: o.accuracy_delta_pp)

    def min_ratio(self, variant_id: str) -> float:
        """The speed a repair must keep: the variant's floor where it is stated against the parent, else 1.2x."""
        floor = speed_floor_for(self.speed_floors, variant_id)
        return floor.ratio if floor is not None and floor.reference == "parent" else KEEP_RATIO

    @staticmethod
    def helped(outcome: Outcome, original: Outcome) -> bool:
        """A remedy worth combining: it brought the accuracy closer, or it made the graph clearly faster (its speed
        interval above the failing variant's), as a preset with the CPU's fast kernels does."""
        if outcome.accuracy_delta_pp is None:
            return False
        closer = outcome.accuracy_delta_pp > original.accuracy_delta_pp
        faster = outcome.speed is not None and original.speed is not None and \
            outcome.speed.interval[0] > original.speed.interval[1]
        return closer or faster

    def good(self, outcomes: list[Outcome], min_ratio: float) -> bool:
        return any(o.passed and o.speed is not None and o.speed.ratio >= min_ratio for o in outcomes)

    def run_round(self, candidates: list[Candidate], gates: AccuracyGates, parent_id: str, also: list[Outcome] = (),
                  stop_at_pass: bool = False) -> list[Outcome]:
        """Build and gate the round's candidates, then time those built (and `also`) against the parent."""
        tried = self.try_candidates(candidates, gates, stop_at_pass)
        if tried:
            self.time_candidates(parent_id, [*also, *tried])
        return tried

    def time_candidates(self, parent_id: str, outcomes: list[Outcome]) -> None:
        """Every built graph and the fp32 parent in one round-robin; each ratio paired by cycle."""
        ids = [parent_id, *dict.fromkeys(o.variant_id for o in outcomes if o.built)]
        self.log(f"[ortgate] repair: timing {len(ids)} graphs in turn, {self.cycles} cycles of "
                 f"{len(self.bench_texts)} texts")
        robin = RoundRobin({vid: workload(self.plan.predictor(vid), self.bench_texts, "end-to-end") for vid in ids})
        times = robin.run(self.cycles)
        for outcome in outcomes:
            if outcome.built:
                ratio, low, high = paired_ratio_interval(times[parent_id], times[outcome.variant_id],
                                                         self.confidence)
                outcome.speed = SameRunRatio(outcome.variant_id, parent_id, ratio, (low, high), self.confidence,
                                             self.cycles)

    def repair(self, variant_id: str) -> RepairResult:
        started = time.perf_counter()
        gates = self.gates_for(variant_id)
        original = self.check_failing(variant_id, gates)
        parent_id = self.explainer.fp32_parent(variant_id)
        diagnoses = {variant_id: self.explainer.diagnose(variant_id)}
        tried: list[Outcome] = []
        if self.remedies:
            tried += self.run_round(self.single_remedies(variant_id, diagnoses[variant_id]), gates, parent_id,
                                    also=[original])
            helpful = [o.candidate.fix for o in tried if self.helped(o, original)]
            tried += self.run_round(combined_candidates(original.spec, helpful, [o.spec.step for o in tried]), gates,
                                    parent_id)
        if not any(o.passed for o in tried):
            tried += self.fallback(original, tried, diagnoses, gates, parent_id)
        if original.speed is None:
            self.time_candidates(parent_id, [original])
        return RepairResult(variant_id, parent_id, gates.tolerance.default, original, tried, diagnoses,
                            time.perf_counter() - started, self.cycles, self.stopped(tried, variant_id),
                            self.min_ratio(variant_id))

    def single_remedies(self, variant_id: str, diagnosis: Diagnosis) -> list[Candidate]:
        operators = self.plan.built(variant_id).metadata.get("operators_quantized")
        by_type = [t for t, _ in diagnosis.by_op_type() if t in (operators or ())]
        return remedy_candidates(self.plan.variants.specs[variant_id], operators, by_type[0] if by_type else None,
                                 len(self.explainer.calibration_texts), self.cpu_preset)

    def fallback(self, original: Outcome, tried: list[Outcome], diagnoses: dict[str, Diagnosis],
                 gates: AccuracyGates, parent_id: str) -> list[Outcome]:
        """Round 3: the worst quantized nodes of the closest graph so far kept in fp32, more until one passes."""
        base = self.fallback_base(original, tried)
        if base.variant_id not in diagnoses:
            diagnoses[base.variant_id] = self.explainer.diagnose(base.variant_id)
        ranked = [exclusion_names(n.node, n.op_type) for n in diagnoses[base.variant_id].worst(10_000)]
        candidates = exclusion_candidates(base.spec, ranked, base_remedy=None if base is original else base.remedy)
        untimed = [original] if original.speed is None else []
        return self.run_round(candidates, gates, parent_id, also=untimed, stop_at_pass=True)

    def stopped(self, tried: list[Outcome], variant_id: str) -> str:
        keep = self.min_ratio(variant_id)
        if self.good(tried, keep):
            good = [o for o in tried if o.passed and o.speed is not None and o.speed.ratio >= keep]
            rounds = ", ".join(str(r) for r in sorted({o.round for o in good}))
            return f"{len(good)} graph(s) pass and keep {keep:g}x the fp32 parent (round {rounds})"
        if any(o.passed for o in tried):
            return f"graphs pass the gate, none keeps {keep:g}x its fp32 parent"
        return ("no candidate passed, even with every quantized node the diagnosis ranked kept in fp32"
                if any(o.round == 3 for o in tried) else "no candidate passed, and the diagnosis ranked no node")
