"""Assemble the run's record from what its stages produced, once, at the end of the run.

Reads the stages' results; the only work left here is the gate arithmetic for a variant that was evaluated
but whose gate no test asked for (pure, on predictions already made). Nothing is built, run or timed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ortgate.build.builder import BuildStatus, library_versions
from ortgate.build.plan import BuildPlan
from ortgate.diagnose.explanations import DIAGNOSIS_TOP, Explanations
from ortgate.isa import machine_fingerprint
from ortgate.measure.evaluation import Evaluator
from ortgate.measure.footprint import FootprintMeter, weights_bytes
from ortgate.measure.shapes import ShapeMeter
from ortgate.measure.speed import SpeedMeter
from ortgate.record.provenance import source_control
from ortgate.record.result import (
    MODEL_ONLY,
    SPEED_MODE,
    BudgetItemResult,
    FootprintResult,
    HarnessResult,
    InterleavedResult,
    LatencyResult,
    MeasureSettings,
    ModelInfo,
    PairedResult,
    RooflineResult,
    RunResult,
    ShapeResult,
    SpeedCheckResult,
    StructureResult,
    VariantResult,
)
from ortgate.sources.data import EvalData
from ortgate.sources.models import ModelSource
from ortgate.spec.remedies import entry_id
from ortgate.spec.variants import BASELINE_ID, Quantize, format_entry
from ortgate.verdict.budgets import BudgetChecks
from ortgate.verdict.checks import GATED_METRICS, AccuracyGates, SpeedFloors
from ortgate.verdict.structure_checks import StructureChecks


@dataclass
class RunStages:
    """What one run's stages hold when it ends."""

    plan: BuildPlan
    evaluator: Evaluator
    gates: AccuracyGates
    meter: SpeedMeter
    floors: SpeedFloors
    structures: StructureChecks
    footprints: FootprintMeter
    roofline: object  # measure.roofline.RooflineMeter
    budgets: BudgetChecks
    shapes: ShapeMeter
    explanations: Explanations | None = None  # None: the run explained nothing (yet)

    @property
    def has_results(self) -> bool:
        m = self.meter
        return bool(self.evaluator.evaluations or m.speeds or m.interleaved_seconds or m.latencies
                    or self.shapes.shape_speeds or self.shapes.thread_speeds or self.footprints.results
                    or self.roofline.results or self.budgets.checks
                    or self.floors.checks
                    or self.meter.harness_checks or self.structures.checks
                    or (self.plan.done and self.plan.builder.failures))


def best_variant(rows: list[VariantResult]) -> str | None:
    """The fastest variant (end to end) that passed its accuracy gate, the baseline included."""
    eligible = [r for r in rows if r.gate in ("pass", "baseline") and r.samples_per_s is not None]
    return max(eligible, key=lambda r: r.samples_per_s).variant if eligible else None


def _accuracy_fields(stages: RunStages, vid: str) -> dict:
    evaluations = stages.evaluator.evaluations
    evaluation, base = evaluations.get(vid), evaluations.get(BASELINE_ID)
    if evaluation is None:
        return {}
    out = evaluation.metrics.as_dict()
    if base is None:
        return out
    out["accuracy_delta_pp"] = (evaluation.metrics.accuracy - base.metrics.accuracy) * 100
    out["f1_delta_pp"] = (evaluation.metrics.f1 - base.metrics.f1) * 100
    if vid == BASELINE_ID:
        return {**out, "gate": "baseline"}
    gates = [stages.gates.gate(vid, metric) for metric in GATED_METRICS]
    outcomes = {g.outcome for g in gates}  # a failure outweighs an inconclusive gate, which outweighs a pass
    gate = next(o for o in ("FAIL", "inconclusive", "pass") if o in outcomes)
    return {**out, "gate": gate, "gate_mode": stages.gates.mode,
            "paired": PairedResult(**stages.gates.paired(vid).as_dict()), "f1_interval": gates[1].interval,
            "min_detectable_drop_pp": gates[0].min_detectable_drop * 100, "rows_needed": gates[0].rows_needed,
            "logit_differences": stages.gates.logit_differences(vid)}


def _speed_fields(stages: RunStages, vid: str, original: str | None, repeat: int) -> dict:
    meter, out = stages.meter, {}

    def timed(mode: str) -> str | None:  # the variant, else its same-graph original (not timed twice)
        return vid if (vid, mode) in meter.speeds else original if (original, mode) in meter.speeds else None

    source, model_only_source = timed(SPEED_MODE), timed(MODEL_ONLY)
    speed = meter.speed(source, SPEED_MODE) if source else None
    model_only = meter.speed(model_only_source, MODEL_ONLY) if model_only_source else None
    base, base_model_only = meter.speed(BASELINE_ID, SPEED_MODE), meter.speed(BASELINE_ID, MODEL_ONLY)
    if speed:
        out.update(samples_per_s=speed.samples_per_s, latency_ms=speed.latency_ms)
        if base:
            out["speed_ratio"] = speed.samples_per_s / base.samples_per_s
            out["speed_delta_pct"] = (out["speed_ratio"] - 1) * 100
        if repeat > 1:
            out["samples_per_s_repeats"] = meter.distribution(source, SPEED_MODE)
    if model_only:
        out["model_only_samples_per_s"] = model_only.samples_per_s
        if base_model_only:
            out["model_only_speed_ratio"] = model_only.samples_per_s / base_model_only.samples_per_s
    # A same-graph variant is not timed: its rounds are its original's, recorded there only.
    rounds = {m: list(meter.round_seconds[(vid, m)]) for m in (SPEED_MODE, MODEL_ONLY)
              if (vid, m) in meter.round_seconds}
    if rounds:
        out["round_seconds"] = rounds
    interleaved = _interleaved(meter, vid)
    if interleaved:
        out["interleaved"] = interleaved
    return out


def _interleaved(meter: SpeedMeter, vid: str) -> dict[str, InterleavedResult]:
    """The variant's cycles of each round-robin mode (its same-graph original's), with its ratio to the baseline."""
    out = {}
    for mode, times in meter.interleaved_seconds.items():
        source = meter.measured_as(vid)
        if source in times:
            r = meter.same_run_ratio(vid, BASELINE_ID, mode)
            out[mode] = InterleavedResult(BASELINE_ID, tuple(times[source]), r.ratio, r.interval, r.confidence)
    return out


def _deployment_fields(stages: RunStages, vid: str) -> dict:
    """Latency, footprint, shape and thread sweeps, roofline and budget of the variant (its same-graph original's
    measurements, which stand for it)."""
    meter, out = stages.meter, {}
    source = meter.measured_as(vid)
    stats = meter.latencies.get(source)
    if stats is not None:
        out["latency"] = LatencyResult(**stats.as_dict())
    rounds = stages.footprints.results.get(source)
    if rounds:
        med = stages.footprints.summary(source)
        out["footprint"] = FootprintResult(len(rounds), med.file_mb, med.peak_rss_mb, med.model_rss_mb,
                                           med.load_seconds * 1e3, tuple(f.peak_rss_mb for f in rounds),
                                           tuple(f.model_rss_mb for f in rounds),
                                           tuple(f.load_seconds * 1e3 for f in rounds),
                                           "/".join(dict.fromkeys(f.peak_source for f in rounds)))
    sweeps = stages.shapes
    shapes = [ShapeResult(b, s, t, x.samples_per_s, x.calls)
              for (v, b, s, t), x in sorted(sweeps.shape_speeds.items()) if v == source]
    if shapes:
        out["shapes"] = shapes
    threads = [ShapeResult(1, 0, t, x.samples_per_s, x.calls)
               for (v, t), x in sorted(sweeps.thread_speeds.items()) if v == source]
    if threads:
        out["threads"] = threads
    limit = stages.roofline.results.get(source)
    if limit is not None:
        out["roofline"] = RooflineResult(**limit.as_record())
    check = stages.budgets.checks.get(vid)
    if check is not None:
        out["budget"] = [BudgetItemResult(i.metric, i.limit, i.pattern, i.outcome, i.value, i.interval)
                         for i in check.items]
    return out


def _speed_check_field(stages: RunStages, vid: str, original: str | None) -> dict:
    """The variant's speed check, or the one it shares with its same-graph original (same reference, floor)."""
    check = stages.floors.checks.get(vid)
    if check is None and original and stages.floors.same_check_as(vid):
        check = stages.floors.checks.get(original)
    if check is None:
        return {}
    m = check.measured
    return {"speed_check": SpeedCheckResult(m.reference_id, m.ratio, m.interval, check.passed,
                                            str(check.floor) if check.floor else None, m.rounds)}


def _build_fields(stages: RunStages, vid: str, model: ModelSource) -> dict:
    if vid == BASELINE_ID:
        size = weights_bytes(model.path)
        return {"size_mb": size / 1e6} if size else {}
    built = stages.plan.built(vid)  # already built: it was evaluated, timed or inspected
    out = {"size_mb": built.size_bytes / 1e6, "build": "cache hit" if built.cache_hit else "built",
           "build_seconds": built.build_seconds, "cache_hit": built.cache_hit,
           "graph": stages.structures.graph(vid),
           "operators_quantized": built.metadata.get("operators_quantized")}
    structure = stages.structures.checks.get(vid)
    if structure is not None:
        out["structure"] = StructureResult(structure.passed, structure.problems, structure.notes, structure.record,
                                           structure.unchecked)
    return out


def _explanation_fields(stages: RunStages, vid: str) -> dict:
    """The profile of a slow variant, the diagnosis of a failed gate, the repair: compact, for the record."""
    out: dict = {}
    explained = stages.explanations
    if explained is not None and vid in explained.slow:
        why, diff = explained.slow[vid]
        out["profile"] = {"why": why, "error": diff} if isinstance(diff, str) else {
            "why": why, "against": diff.parent.graph, "node_time_ratio": diff.as_dict()["node_time_ratio"],
            "node_us_per_call": diff.variant.node_us_per_call, "parent_node_us_per_call": diff.parent.node_us_per_call,
            "calls": diff.variant.calls, "changes": diff.as_dict()["changes"],
            "top_nodes": [asdict(n) for n in diff.variant.by_node[:10]]}
    if explained is not None and vid in explained.failed:
        d = explained.failed[vid]
        out["diagnosis"] = {"error": d} if isinstance(d, str) else {
            "against": d.parent, "rows": d.rows, "method": d.method, "logits_sqnr_db": d.as_dict()["logits_sqnr_db"],
            "top_nodes": [n.as_dict() for n in d.worst(DIAGNOSIS_TOP, quantized_only=True)],
            "by_layer": d.by_layer()[:DIAGNOSIS_TOP], "by_op_type": d.by_op_type()[:DIAGNOSIS_TOP]}
    repair = explained.repairs.get(vid) if explained is not None else None
    if repair is not None:
        out["repair"] = {"error": repair} if isinstance(repair, str) else repair_record(repair)
    return out


def repair_record(result) -> dict:
    """A repair in the record: every candidate, the chosen one and the entry that rebuilds it."""
    doc = result.as_dict(with_diagnoses=False)
    chosen = result.chosen
    doc["entry"] = format_entry(replace(chosen.spec, id=entry_id(chosen.variant_id))) if chosen else None
    return doc


def variant_result(stages: RunStages, vid: str, model: ModelSource, repeat: int) -> VariantResult | None:
    """The variant's row, or None when the run neither built-and-failed nor measured it."""
    spec = stages.plan.variants.specs[vid]
    head = {"variant": vid, "description": spec.description, "parent": spec.parent,
            "isa": spec.step.isa if isinstance(spec.step, Quantize) else None}
    status, reason = stages.plan.status(vid) if stages.plan.done else (None, None)
    if status in (BuildStatus.BUILD_FAILED, BuildStatus.NOT_APPLICABLE):
        return VariantResult(**head, build=str(status), build_error=reason, gate=str(status))
    original = stages.evaluator.same_graph.get(vid) or (
        stages.plan.duplicate_of(vid) if status is BuildStatus.BUILT else None)
    fields = {**_accuracy_fields(stages, vid), **_speed_fields(stages, vid, original, repeat),
              **_deployment_fields(stages, vid)}
    if not fields and vid not in stages.floors.checks and vid not in stages.structures.checks:
        return None
    return VariantResult(**head, same_graph_as=original, **fields, **_speed_check_field(stages, vid, original),
                         **_build_fields(stages, vid, model), **_explanation_fields(stages, vid))


def collect_result(stages: RunStages, *, settings, model: ModelSource, data: EvalData, truncation: dict | None,
                   max_length: int) -> RunResult:
    """The run's record; `settings` is the run's `Settings`."""
    rows = [r for vid in stages.plan.run_ids if (r := variant_result(stages, vid, model, settings.repeat))]
    s = settings
    evaluations = stages.evaluator.evaluations
    return RunResult(
        generated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=machine_fingerprint(),
        versions=library_versions(),
        model=ModelInfo(model.description, str(model.path), model.fingerprint, model.model_type,
                        [model.id2label[i] for i in sorted(model.id2label)]),
        data=data.source,
        data_fingerprint=data.fingerprint,
        truncation=truncation,
        settings=MeasureSettings(s.threads, max_length, s.eval_batch_size, s.bench_samples, s.bench_rounds,
                                 s.warmup_rounds, s.repeat,
                                 cycles=s.cycles if stages.meter.interleaved_seconds else None,
                                 cycle_precision=s.cycle_precision if stages.meter.interleaved_seconds else None,
                                 min_cycles=s.min_cycles if stages.meter.interleaved_seconds else None),
        variants=rows,
        baseline=BASELINE_ID,
        best=best_variant(rows),
        preset=s.preset,
        user_variants=list(s.user_variant_ids),
        build_wall_seconds=stages.plan.wall_seconds,
        build_jobs=s.build_jobs,
        harness_checks=[HarnessResult(c.variant_id, c.harness.samples_per_s, c.bare.samples_per_s, c.ratio)
                        for c in stages.meter.harness_checks],
        timer_overhead_ns=stages.meter.timer.median_ns if stages.meter.timer else None,
        latency_pass=_latency_pass(stages.meter),
        gemm_ceilings=[c.as_dict() for c in stages.roofline.ceilings.values()] or None,
        source_control=source_control(Path.cwd()),
        labels=data.labels.tolist() if evaluations else None,
        predictions={vid: e.predictions.tolist() for vid, e in evaluations.items()},
    )


def _latency_pass(meter: SpeedMeter) -> dict | None:
    robin = meter.latency_pass
    if robin is None:
        return None
    return {"cycles": robin.cycles, "stopped": robin.stopped, "block": robin.block, "precision": robin.precision,
            "min_calls": robin.min_calls, "max_calls": robin.max_calls, "max_seconds": robin.max_seconds,
            "calls": {vid: len(t) for vid, t in robin.times_ns.items()}}

