"""What happens once per run: resolve model and data, build variants, evaluate, collect speeds.

Everything is lazy and memoized, so a run that selects two variants builds and evaluates two (plus
their parents and the baseline), and a variant used by several tests is built and evaluated once.
Knows nothing about pytest; `plugin.py` drives it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ortgate.build.builder import Builder, BuiltVariant, NotApplicable, library_versions
from ortgate.build.cache import Cache
from ortgate.build.graph import graph_summary
from ortgate.build.runtime import OnnxPredictor, Predictor, TorchPredictor, predict_logits
from ortgate.errors import BuildError, ModelError
from ortgate.measure.metrics import Metrics, classification_metrics, f1_score_fast
from ortgate.measure.throughput import (
    Speed,
    bare_onnxruntime_workload,
    interleaved_round_times,
    measure_with_benchmark,
    speed_from_round_times,
    workload,
)
from ortgate.sources.data import EvalData, load_eval_data
from ortgate.sources.default_model import BUILTIN_PREFIX, BuiltinModel, builtin_model, ensure_builtin_model
from ortgate.sources.inputs import describe_inputs
from ortgate.sources.models import ModelSource, load_model_source, load_tokenizer
from ortgate.spec.settings import Settings
from ortgate.spec.variants import BASELINE_ID, Optimize, Quantize, VariantSet
from ortgate.verdict.gate import GateResult, SpeedCheck, speed_floor_for
from ortgate.verdict.stats import (
    PairedComparison,
    distribution,
    logit_differences,
    paired_bootstrap_interval,
    paired_comparison,
    speed_ratio_interval,
)
from ortgate.verdict.structure import StructureCheck, StructureRecords, rule_notes, rule_problems

Log = Callable[[str], None]


@dataclass(frozen=True)
class Evaluation:
    variant_id: str
    logits: np.ndarray
    predictions: np.ndarray
    metrics: Metrics
    seconds: float


@dataclass
class RunSession:
    settings: Settings
    log: Log = print
    # Long work with progress bars runs inside this (pytest: output capture suspended).
    progress_scope: Callable[[], AbstractContextManager] = contextlib.nullcontext
    variants: VariantSet | None = None  # None: the settings' preset and user matrix
    planned_ids: list[str] | None = None  # the variants the collected tests use (after -k); None: all selected
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    speeds: dict[tuple[str, str], list[Speed]] = field(default_factory=dict)  # one Speed per repeat
    harness_checks: list[HarnessCheck] = field(default_factory=list)
    _predictors: dict[str, Predictor] = field(default_factory=dict)
    _input_notes: list = field(default_factory=list)  # (emitted, taken) pairs already logged
    _gates: dict[tuple[str, str], GateResult] = field(default_factory=dict)
    _graphs: dict[str, dict | None] = field(default_factory=dict)
    speed_checks: dict[str, SpeedCheck] = field(default_factory=dict)
    structure_checks: dict[str, StructureCheck] = field(default_factory=dict)
    same_graph: dict[str, str] = field(default_factory=dict)  # variant -> first variant with a byte-identical graph
    build_wall_seconds: float | None = None
    _builds_done: bool = False

    def __post_init__(self) -> None:
        if self.variants is None:
            self.variants = self.settings.variant_set

    @property
    def has_results(self) -> bool:
        return bool(self.evaluations or self.speeds or self.speed_checks or self.harness_checks
                    or self.structure_checks or (self._builds_done and self.builder.failures))

    @cached_property
    def selected_ids(self) -> list[str]:
        return self.variants.select(self.settings.variants)

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
        _ = self.model, self.data, self.truncation

    @cached_property
    def data(self) -> EvalData:
        s = self.settings
        data = load_eval_data(dataset=s.dataset, split=s.split, text_columns=s.text_columns,
                              label_column=s.label_column, label_map=s.label_map, limit=s.limit,
                              id2label=self.model.id2label, cache_dir=s.cache_dir)
        self.log(f"[ortgate] data: {data.source}")
        return data

    @cached_property
    def builder(self) -> Builder:
        return Builder(self.variants, self.model, Cache(self.settings.cache_dir), self.data.calibration_texts,
                       self.max_length, log=self.log)

    def built(self, variant_id: str) -> BuiltVariant | None:
        """The variant's build (None for the baseline); raises BuildError if it could not be built."""
        if variant_id == BASELINE_ID:
            return None
        self.build_all()
        return self.builder.build(variant_id)

    def build_status(self, variant_id: str) -> tuple[str, str | None]:
        """("built" | "build failed" | "not applicable" | "baseline", the reason) after the builds ran."""
        self.build_all()  # the baseline too: nothing is measured before the builds are done
        if variant_id == BASELINE_ID:
            return "baseline", None
        status = self.builder.status(variant_id)
        failure = self.builder.failures.get(variant_id)
        return status, failure.first_line if failure else None

    def build_all(self) -> None:
        """Build every planned variant (and its parents) before anything is measured, so no build runs
        beside a measurement. Variants that cannot build are kept as results; GPU-only graphs are not
        applicable on a machine without a GPU provider unless asked for by name."""
        if self._builds_done:
            return
        ids = [v for v in (self.planned_ids if self.planned_ids is not None else self.selected_ids) if v != BASELINE_ID]
        for vid in ids:
            reason = self.not_applicable_reason(vid)
            if reason:
                self.builder.mark_not_applicable(vid, reason)
        todo = [v for v in ids if v not in self.builder.failures]
        started = time.perf_counter()
        with self.progress_scope():
            from tqdm.auto import tqdm

            total = len(self.builder.plan(todo))
            with tqdm(total=total, desc="building variants", unit="variant", disable=total < 2) as bar:
                self.builder.build_all(todo, jobs=self.settings.build_jobs, on_done=lambda vid: bar.update(1))
        self.build_wall_seconds = time.perf_counter() - started
        self._builds_done = True  # only now: an unexpected error above is raised again by the next test
        failed = {v: e for v, e in self.builder.failures.items() if v in ids}
        built = sum(1 for v in ids if self.builder.status(v) == "built")
        self.log(f"[ortgate] builds: {built} of {len(ids)} variants ready in {self.build_wall_seconds:.1f}s "
                 f"({self.settings.build_jobs} job{'s' if self.settings.build_jobs > 1 else ''})"
                 + (f"; not built: {', '.join(failed)}" if failed else ""))
        for vid, exc in failed.items():
            kind = "not applicable" if isinstance(exc, NotApplicable) else "build failed"
            self.log(f"[ortgate] variant {vid}: {kind}: {exc.first_line}")

    def not_applicable_reason(self, variant_id: str) -> str | None:
        """Why a GPU-only graph (O4, fp16) is skipped here, unless the variant was asked for explicitly."""
        explicit = set(self.settings.user_variant_ids) | {
            p for p in (self.settings.variants or ()) if not any(c in p for c in "*?[")}
        for spec in self.variants.chain(variant_id):
            if isinstance(spec.step, Optimize) and spec.step.for_gpu and variant_id not in explicit:
                import onnxruntime

                providers = onnxruntime.get_available_providers()
                if not any(p in providers for p in ("CUDAExecutionProvider", "ROCMExecutionProvider",
                                                     "TensorrtExecutionProvider", "DmlExecutionProvider")):
                    return (f"{spec.id} writes an fp16 graph for a GPU (optimize_for_gpu, fp16) and this machine "
                            f"has no GPU execution provider ({', '.join(providers)}); name the variant in "
                            "--ortgate-variants to build it anyway")
        return None

    def duplicate_of(self, variant_id: str) -> str | None:
        """The first planned variant (in definition order) whose model.onnx is byte-identical to this one's."""
        if variant_id == BASELINE_ID or self.builder.status(variant_id) != "built":
            return None
        mine = self.built(variant_id).graph_sha256
        for other in self.planned_ids if self.planned_ids is not None else self.selected_ids:
            if other == variant_id:
                return None
            if other != BASELINE_ID and self.builder.status(other) == "built" and mine \
                    and self.built(other).graph_sha256 == mine:
                return other
        return None

    def predictor(self, variant_id: str) -> Predictor:
        if variant_id not in self._predictors:
            s = self.settings
            if variant_id == BASELINE_ID:
                self._predictors[variant_id] = TorchPredictor(self.model.path, s.threads, self.max_length)
            else:
                built = self.built(variant_id)
                self._predictors[variant_id] = OnnxPredictor(built.path, s.threads, self.max_length)
            predictor = self._predictors[variant_id]
            emitted, taken = list(predictor.tokenizer.model_input_names), list(predictor.input_names)
            if sorted(emitted) != sorted(taken) and (emitted, taken) not in self._input_notes:
                self._input_notes.append((emitted, taken))
                self.log(f"[ortgate] model inputs: {describe_inputs(emitted, taken)}")
        return self._predictors[variant_id]

    def evaluate(self, variant_id: str) -> Evaluation:
        if variant_id not in self.evaluations:
            original = self.duplicate_of(variant_id)
            if original is not None:  # a byte-identical graph gives identical logits: evaluate it once
                first = self.evaluate(original)
                self.same_graph[variant_id] = original
                self.log(f"[ortgate] variant {variant_id}: same graph as {original} (byte-identical model.onnx); "
                         "its evaluation is reused")
                self.evaluations[variant_id] = Evaluation(variant_id, first.logits, first.predictions,
                                                          first.metrics, 0.0)
                return self.evaluations[variant_id]
            predictor = self.predictor(variant_id)
            started = time.perf_counter()
            with self.progress_scope():
                logits = predict_logits(predictor, self.data.texts, self.settings.eval_batch_size,
                                        desc=f"evaluating {variant_id}")
            seconds = time.perf_counter() - started
            predictions = logits.argmax(-1)
            metrics = classification_metrics(self.data.labels, predictions, len(self.model.id2label))
            self.log(f"[ortgate] variant {variant_id}: accuracy {metrics.accuracy:.4f}, F1 {metrics.f1:.4f} "
                     f"on {metrics.n} rows ({seconds:.1f}s)")
            self.evaluations[variant_id] = Evaluation(variant_id, logits, predictions, metrics, seconds)
        return self.evaluations[variant_id]

    def paired(self, variant_id: str) -> PairedComparison:
        """The variant against the baseline on the same rows (McNemar, interval of the accuracy difference)."""
        return paired_comparison(self.data.labels, self.evaluate(BASELINE_ID).predictions,
                                 self.evaluate(variant_id).predictions, self.settings.confidence)

    def gate(self, variant_id: str, metric: str) -> GateResult:
        """Compare one metric of `variant_id` with the baseline measured in this session."""
        key = (variant_id, metric)
        if key not in self._gates:
            baseline, candidate = self.evaluate(BASELINE_ID), self.evaluate(variant_id)
            paired = self.paired(variant_id)
            if metric == "accuracy":
                interval = paired.interval
            else:  # F1 has no closed-form paired interval: resample rows (seeded, reproducible)
                num_labels = len(self.model.id2label)
                interval = paired_bootstrap_interval(
                    lambda y, p: f1_score_fast(y, p, num_labels), self.data.labels, baseline.predictions,
                    candidate.predictions, self.settings.confidence)
            self._gates[key] = GateResult(
                metric=metric,
                variant_id=variant_id,
                baseline_id=BASELINE_ID,
                baseline=getattr(baseline.metrics, metric),
                value=getattr(candidate.metrics, metric),
                tolerance=self.settings.tolerance.for_variant(variant_id),
                differing=paired.differing_predictions,
                total=paired.n,
                mode=self.settings.gate_mode,
                interval=interval,
                confidence=self.settings.confidence,
                mcnemar_p=paired.p_exact,
                mcnemar_mid_p=paired.p_mid,
            )
        return self._gates[key]

    def logit_differences(self, variant_id: str) -> dict[str, float]:
        return logit_differences(self.evaluate(BASELINE_ID).logits, self.evaluate(variant_id).logits)

    @cached_property
    def bench_texts(self) -> list[str]:
        """A fixed sample: the first evaluation rows, so every variant and every run times the same texts."""
        return self.data.texts[: self.settings.bench_samples]

    def graph(self, variant_id: str) -> dict | None:
        """What the variant's graph contains, with its differences from the plain export (read once)."""
        if variant_id not in self._graphs:
            built = self.built(variant_id)
            if built is None:
                self._graphs[variant_id] = None
            else:
                root = self.variants.chain(variant_id)[0].id
                export = None if root == variant_id else self.graph(root)
                self._graphs[variant_id] = graph_summary(built.onnx_path, export)
        return self._graphs[variant_id]

    @cached_property
    def structure_records(self) -> StructureRecords:
        name = self.builtin.structure_name if self.builtin is not None else self.settings.model
        return StructureRecords(self.settings.structure_dir, name)

    def structure(self, variant_id: str) -> StructureCheck:
        """The variant's graph against the rules of its definition and the recorded expected structure."""
        if variant_id not in self.structure_checks:
            from ortgate.isa import cpu_fingerprint, fingerprint_id

            built, graph = self.built(variant_id), self.graph(variant_id)
            fp32 = self.variants.fp32_ancestor(variant_id)
            export = self.graph(self.variants.chain(variant_id)[0].id)
            problems = rule_problems(self.variants, variant_id, graph, self.graph(fp32) if fp32 else None,
                                     self.model.model_type, built.metadata.get("operators_quantized"),
                                     self.settings.int8_min_weight_share, export)
            key = variant_id
            if self.variants.hardware_specific(variant_id):
                key = f"{variant_id}@{fingerprint_id(cpu_fingerprint())}"
            record_problems, notes, record = self.structure_records.check(
                key, graph, self.variants.content_hash(variant_id), library_versions(),
                update=self.settings.update_structure)
            self.structure_checks[variant_id] = StructureCheck(variant_id, tuple(problems + record_problems),
                                                               tuple(rule_notes(graph) + notes), record)
        return self.structure_checks[variant_id]

    # ------------------------------------------------------------ speed

    def benchmark(self, benchmark, variant_id: str, mode: str, repeat: int = 1) -> Speed | None:
        """Time `variant_id` with the pytest-benchmark fixture; record and return its speed."""
        s = self.settings
        benchmark.group = f"throughput {mode}"
        benchmark.extra_info.update({"variant": variant_id, "mode": mode, "threads": s.threads, "repeat": repeat,
                                     "batch_size": 1, "samples_per_round": len(self.bench_texts)})
        fn = workload(self.predictor(variant_id), self.bench_texts, mode)
        speed = measure_with_benchmark(benchmark, fn, len(self.bench_texts), s.bench_rounds, s.warmup_rounds)
        if speed is not None:
            self.speeds.setdefault((variant_id, mode), []).append(speed)
            # Raw round times travel in the JSON, so `ortgate compare` can test one run against another.
            benchmark.extra_info["round_seconds"] = list(benchmark.stats.stats.data)
        return speed

    def speed(self, variant_id: str, mode: str) -> Speed | None:
        """The variant's speed over all repeats: the median repeat's samples/s and latency."""
        runs = self.speeds.get((variant_id, mode))
        if not runs:
            return None
        ordered = sorted(runs, key=lambda r: r.samples_per_s)
        middle = ordered[(len(ordered) - 1) // 2]
        return Speed(middle.samples_per_s, statistics.fmean(r.mean_samples_per_s for r in runs), middle.latency_ms,
                     sum(r.rounds for r in runs), middle.samples_per_round)

    def speed_distribution(self, variant_id: str, mode: str) -> dict | None:
        runs = self.speeds.get((variant_id, mode))
        return distribution([r.samples_per_s for r in runs]) if runs else None

    def speed_check(self, variant_id: str, mode: str = "end-to-end") -> SpeedCheck:
        """Speed ratio to the floor's reference (the baseline, or the parent), timed in interleaved rounds
        in this run under the same threads, with a bootstrap interval; checked against the floor."""
        if variant_id not in self.speed_checks:
            s = self.settings
            floor = speed_floor_for(s.speed_floors, variant_id)
            spec = self.variants.specs[variant_id]
            reference = spec.parent if floor and floor.reference == "parent" and spec.parent else BASELINE_ID
            mine = workload(self.predictor(variant_id), self.bench_texts, mode)
            theirs = workload(self.predictor(reference), self.bench_texts, mode)
            mine_t, theirs_t = interleaved_round_times(mine, theirs, 2 * s.bench_rounds, s.warmup_rounds)
            ratio, low, high = speed_ratio_interval(theirs_t, mine_t, s.confidence)
            self.speed_checks[variant_id] = SpeedCheck(variant_id, reference, ratio, (low, high), s.confidence,
                                                       len(mine_t), floor)
        return self.speed_checks[variant_id]

    def same_speed_check_as(self, variant_id: str) -> str | None:
        """The variant whose speed check this one's would repeat: the same graph, reference and floor."""
        original = self.duplicate_of(variant_id)
        if original is None:
            return None
        floors = self.settings.speed_floors
        mine, theirs = speed_floor_for(floors, variant_id), speed_floor_for(floors, original)
        if mine != theirs:
            return None
        if mine is not None and mine.reference == "parent" and \
                self.variants.specs[variant_id].parent != self.variants.specs[original].parent:
            return None
        return original

    def first_int8_variant(self) -> str | None:
        """The first quantized variant the run uses (else the first selected one) that builds: the harness
        check times it."""
        for vid in self.planned_ids or self.selected_ids:
            if isinstance(self.variants.specs[vid].step, Quantize):
                try:
                    self.built(vid)
                except BuildError:
                    continue
                return vid
        return None

    def bare_onnxruntime(self, variant_id: str) -> Callable[[], None]:
        predictor = self.predictor(variant_id)
        features = [predictor.encode([text]) for text in self.bench_texts]
        return bare_onnxruntime_workload(predictor.session, features)

    def harness_overhead(self, variant_id: str, rounds: int = 20) -> HarnessCheck:
        """Model-only harness vs a bare InferenceSession.run loop, interleaved round by round."""
        harness = workload(self.predictor(variant_id), self.bench_texts, "model-only")
        bare = self.bare_onnxruntime(variant_id)
        harness_times, bare_times = interleaved_round_times(harness, bare, rounds, self.settings.warmup_rounds,
                                                            min_round_seconds=0.3)
        check = HarnessCheck(variant_id, tuple(harness_times), tuple(bare_times), len(self.bench_texts))
        self.harness_checks.append(check)
        return check


@dataclass(frozen=True)
class HarnessCheck:
    variant_id: str
    harness_seconds: tuple[float, ...]  # per round, aligned: round i of each ran back to back
    bare_seconds: tuple[float, ...]
    samples_per_round: int

    @property
    def harness(self) -> Speed:
        return speed_from_round_times(self.harness_seconds, self.samples_per_round)

    @property
    def bare(self) -> Speed:
        return speed_from_round_times(self.bare_seconds, self.samples_per_round)

    @property
    def ratio(self) -> float:
        """Harness speed / bare speed: the median of each round's pair ratio, which cancels drift between rounds."""
        return statistics.median(b / h for h, b in zip(self.harness_seconds, self.bare_seconds, strict=True))

    @property
    def message(self) -> str:
        return (f"{self.variant_id} model-only: harness {self.harness.samples_per_s:.1f} samples/s vs bare "
                f"InferenceSession.run loop {self.bare.samples_per_s:.1f} samples/s (ratio {self.ratio:.3f}, "
                f"median of the paired ratios of {self.harness.rounds} interleaved rounds)")
