"""One run: resolve the model and the data, then create and connect the stages that build, evaluate,
measure and check, and assemble the run's record at the end.

Everything is lazy and memoized, so a run that selects two variants builds and evaluates two (plus their
parents and the baseline). Knows nothing about pytest; `plugin.py` drives it.

    spec (Settings, VariantSet) → sources (model, data) → build (BuildPlan) → measure (Evaluator,
    SpeedMeter) → verdict (AccuracyGates, SpeedFloors, StructureChecks) → record (RunResult) → report
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property

from ortgate.build.builder import Builder
from ortgate.build.plan import BuildPlan, explicit_variant_ids
from ortgate.cache import Cache
from ortgate.diagnose.explain import Explainer
from ortgate.diagnose.explanations import Explanations
from ortgate.diagnose.repair import Repairer
from ortgate.errors import ModelError, OrtgateError
from ortgate.measure.evaluation import Evaluator
from ortgate.measure.footprint import FootprintMeter
from ortgate.measure.shapes import ShapeMeter
from ortgate.measure.speed import SpeedMeter
from ortgate.record.collect import RunStages, collect_result
from ortgate.record.known_good import known_good_from_run_record
from ortgate.record.result import RunResult
from ortgate.sources.data import EvalData, load_eval_data
from ortgate.sources.default_model import BUILTIN_PREFIX, BuiltinModel, builtin_model, ensure_builtin_model
from ortgate.sources.models import ModelSource, load_model_source, load_tokenizer
from ortgate.spec.settings import Settings
from ortgate.spec.variants import VariantSet
from ortgate.verdict.budgets import BudgetChecks, run_figures
from ortgate.verdict.checks import AccuracyGates, SpeedFloors
from ortgate.verdict.known_good import BuildVerdict, KnownGood, build_failure_verdict, known_good_from_structures
from ortgate.verdict.structure import StructureRecords
from ortgate.verdict.structure_checks import StructureChecks

Log = Callable[[str], None]


@dataclass
class RunSession:
    settings: Settings
    log: Log = print
    # Long work with progress bars runs inside this (pytest: output capture suspended).
    progress_scope: Callable[[], AbstractContextManager] = contextlib.nullcontext
    variants: VariantSet | None = None  # None: the settings' preset and user matrix
    planned_ids: list[str] | None = None  # the variants the collected tests use (after -k); None: all selected

    def __post_init__(self) -> None:
        if self.variants is None:
            self.variants = self.settings.variant_set

    @cached_property
    def selected_ids(self) -> list[str]:
        return self.variants.select(self.settings.variants)

    @property
    def run_ids(self) -> list[str]:
        """The variants this run uses: those its collected tests name, else (none collected yet, or tests that
        name no variant, such as `-k harness`) every selected one."""
        return self.planned_ids or self.selected_ids

    # ------------------------------------------------------------ sources

    @cached_property
    def builtin(self) -> BuiltinModel | None:
        """The built-in model the settings name (the default model when they name none), else None."""
        name = self.settings.model
        return builtin_model(name or "minilm") if name is None or name.startswith(BUILTIN_PREFIX) else None

    @cached_property
    def model(self) -> ModelSource:
        if self.builtin is not None:
            with self.progress_scope():
                path = ensure_builtin_model(self.builtin.name, self.settings.cache_dir, log=self.log)
            return load_model_source(str(path), self.builtin.description)
        return load_model_source(self.settings.model)

    @cached_property
    def max_length_and_source(self) -> tuple[int, str]:
        """Tokens per text and where the figure comes from: the max_length setting (refused beyond the position
        table, which would fail every row), else the model's own limit, else 512."""
        chosen, positions = self.settings.max_length, self.model.max_positions
        if chosen is not None:
            if positions is not None and chosen > positions:
                raise ModelError(f"max_length {chosen} is more than the {positions} positions {self.model.path} "
                                 f"holds; set --ortgate-max-length (or max_length in [tool.ortgate]) to {positions} "
                                 "or less, or leave it unset for the model's own limit")
            return chosen, "the max_length setting"
        if self.model.max_length is None:
            return 512, "512: the model states no limit (set --ortgate-max-length to choose)"
        return self.model.max_length, "the model's own limit"

    @property
    def max_length(self) -> int:
        return self.max_length_and_source[0]

    @cached_property
    def data(self) -> EvalData:
        s = self.settings
        data = load_eval_data(dataset=s.dataset, split=s.split, text_columns=s.text_columns,
                              label_column=s.label_column, label_map=s.label_map, limit=s.limit,
                              id2label=self.model.id2label, cache_dir=s.cache_dir)
        self.log(f"[ortgate] data: {data.source}")
        return data

    @cached_property
    def truncation(self) -> dict:
        """How many evaluation rows `max_length` truncates: reported, since truncation can change predictions."""
        tokenizer = load_tokenizer(self.model.path)
        lengths = [len(ids) for ids in tokenizer(self.data.texts, truncation=False, verbose=False)["input_ids"]]
        truncated = sum(1 for n in lengths if n > self.max_length)
        source = self.max_length_and_source[1]
        self.log(f"[ortgate] max_length {self.max_length} ({source}): {truncated} of {len(lengths)} evaluation rows "
                 f"truncated (longest: {max(lengths)} tokens)")
        return {"max_length": self.max_length, "source": source, "truncated_rows": truncated, "rows": len(lengths),
                "longest_tokens": max(lengths)}

    def prepare(self) -> None:
        """Resolve the model and the data, and check that the tokenizer reads them: done once, before any test
        runs, so a model or data problem stops the run with one message instead of failing every test."""
        _ = self.model, self.data, self.truncation, self.known_good_run

    # ------------------------------------------------------------ stages

    @cached_property
    def plan(self) -> BuildPlan:
        """Created by the first test that needs a build, after collection has set `planned_ids`."""
        s = self.settings
        builder = Builder(self.variants, self.model, Cache(s.cache_dir), self.data.calibration_texts,
                          self.max_length, log=self.log)
        return BuildPlan(self.variants, self.run_ids, builder, self.model, s.threads, self.max_length,
                         explicit_variant_ids(s.user_variant_ids, s.variants), s.build_jobs, self.log,
                         self.progress_scope)

    @cached_property
    def evaluator(self) -> Evaluator:
        return Evaluator(self.plan, self.data, len(self.model.id2label), self.settings.eval_batch_size, self.log,
                         self.progress_scope)

    @cached_property
    def gates(self) -> AccuracyGates:
        s = self.settings
        return AccuracyGates(self.evaluator, s.tolerance, s.gate_mode, s.confidence)

    @cached_property
    def meter(self) -> SpeedMeter:
        s = self.settings
        latency = {"precision": s.latency_precision, "min_calls": s.latency_min_calls,
                   "max_calls": s.latency_max_calls, "max_seconds": s.latency_max_seconds}
        return SpeedMeter(self.plan, self.data.texts[: s.bench_samples], s.bench_rounds, s.warmup_rounds,
                          s.confidence, s.cycles, s.cycle_precision, s.min_cycles, self.log,
                          latency_settings=latency)

    @cached_property
    def shapes(self) -> ShapeMeter:
        return ShapeMeter(self.meter)

    @cached_property
    def footprints(self) -> FootprintMeter:
        s = self.settings
        return FootprintMeter(self.meter, self.model.path, s.threads, s.footprint_rounds, self.log,
                              self.progress_scope)

    @cached_property
    def roofline(self):  # -> measure.roofline.RooflineMeter
        from ortgate.measure.roofline import RooflineMeter

        s = self.settings
        return RooflineMeter(self.meter, s.cache_dir, s.threads, self.log, self.progress_scope)

    @cached_property
    def budgets(self) -> BudgetChecks:
        return BudgetChecks(self.settings.budgets, run_figures(self.meter, self.footprints, self.model.path))

    @cached_property
    def floors(self) -> SpeedFloors:
        return SpeedFloors(self.meter, self.variants, self.settings.speed_floors)

    @cached_property
    def structures(self) -> StructureChecks:
        s = self.settings
        name = self.builtin.structure_name if self.builtin is not None else s.model
        return StructureChecks(self.plan, StructureRecords(s.structure_dir, name), self.model.model_type,
                               s.int8_min_weight_share, s.update_structure)

    @cached_property
    def explanations(self) -> Explanations:
        s = self.settings
        explainer = Explainer(self.plan, self.data.calibration_texts, self.data.texts[: s.bench_samples], s.threads,
                              log=self.log)
        repairer = Repairer(self.plan, self.evaluator, explainer, s.tolerance, self.data.texts[: s.bench_samples],
                            s.gate_mode, s.confidence, log=self.log, speed_floors=s.speed_floors) if s.repair else None
        return Explanations(explainer, self.meter, self.floors, self.gates, repairer)

    def explain(self) -> None:
        """At the end of a run, once: profiles of the slow variants, diagnoses of the failed gates, repairs."""
        if self.stages is not None and "explanations" not in self.__dict__:
            with self.progress_scope():
                self.explanations.run()

    @cached_property
    def known_good_run(self) -> KnownGood:
        """The variants built in the run --ortgate-known-good names (read in `prepare`: an unreadable file stops
        the run before any test)."""
        path = self.settings.known_good
        return known_good_from_run_record(path) if path is not None else KnownGood()

    @cached_property
    def known_good(self) -> KnownGood:
        """Where each variant was seen to build: this model's expected structure, and the --ortgate-known-good run."""
        records = self.structures.records
        return known_good_from_structures(records.load(), str(records.path), self.variants) + self.known_good_run

    def build_failure(self, variant_id: str) -> BuildVerdict:
        """Whether a variant that failed to build fails its tests (known to build, or strict) or is an expected
        failure, and the message that says why."""
        _, reason = self.plan.status(variant_id)
        return build_failure_verdict(variant_id, reason, self.plan.failed_step(variant_id), self.known_good,
                                     self.settings.strict)

    @property
    def stages(self) -> RunStages | None:
        """The stages, once the run has created them (None before: nothing ran)."""
        if "plan" not in self.__dict__:
            return None
        return RunStages(self.plan, self.evaluator, self.gates, self.meter, self.floors, self.structures,
                         self.footprints, self.roofline, self.budgets, self.shapes,
                         self.__dict__.get("explanations"))

    @property
    def has_results(self) -> bool:
        return self.stages is not None and self.stages.has_results

    def result(self) -> RunResult:
        """The run's record, from what the stages hold now."""
        if self.stages is None:
            raise OrtgateError("the run has no results yet: nothing was built, evaluated or timed")
        return collect_result(self.stages, settings=self.settings, model=self.model, data=self.data,
                              truncation=self.truncation, max_length=self.max_length)
