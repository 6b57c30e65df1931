"""Planning and builds of one run: which variants, built before anything is measured, their status, which
ones share a byte-identical graph, and a predictor for each.

Handed its inputs (the variant set, the ids the run uses, a `Builder`, the model, settings); knows nothing
of evaluation or timing, which sit above it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from ortgate.build.builder import Builder, BuildStatus, BuiltVariant
from ortgate.build.runtime import OnnxPredictor, Predictor, TorchPredictor
from ortgate.errors import BuildError
from ortgate.sources.inputs import describe_inputs
from ortgate.sources.models import ModelSource
from ortgate.spec.variants import BASELINE_ID, Optimize, Quantize, VariantSet, VariantSpec, describe_step

Log = Callable[[str], None]
GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "TensorrtExecutionProvider",
                 "DmlExecutionProvider")


def explicit_variant_ids(user_variant_ids: Sequence[str], patterns: Sequence[str] | None) -> frozenset[str]:
    """The variants a user asked for by name: their own matrix's, and --ortgate-variants entries without globs."""
    return frozenset(user_variant_ids) | {p for p in (patterns or ()) if not any(c in p for c in "*?[")}


def not_applicable_reason(variants: VariantSet, variant_id: str, explicit_ids: frozenset[str]) -> str | None:
    """Why a GPU-only graph (O4, fp16) is skipped here, unless the variant was asked for by name."""
    if variant_id in explicit_ids:
        return None
    for spec in variants.chain(variant_id):
        if isinstance(spec.step, Optimize) and spec.step.for_gpu:
            import onnxruntime

            providers = onnxruntime.get_available_providers()
            if not any(p in providers for p in GPU_PROVIDERS):
                return (f"{spec.id} writes an fp16 graph for a GPU (optimize_for_gpu, fp16) and this machine "
                        f"has no GPU execution provider ({', '.join(providers)}); name the variant in "
                        "--ortgate-variants to build it anyway")
    return None


@dataclass(frozen=True)
class FailedStep:
    """Where a variant's build broke: the step of the variant itself, or of the ancestor whose own step failed."""

    variant_id: str
    step: str  # the step's kind and fields, e.g. "optimize (level=99, no_attention_mask=True)"
    error: str  # the error's first line

    def __str__(self) -> str:
        return f"the {self.step} step of {self.variant_id}"


@dataclass
class BuildPlan:
    variants: VariantSet
    run_ids: Sequence[str]  # the variants the run uses, in definition order, the baseline included
    builder: Builder
    model: ModelSource
    threads: int
    max_length: int
    explicit_ids: frozenset[str] = frozenset()  # named by the user: built even where they do not apply
    build_jobs: int = 1
    log: Log = print
    progress_scope: Callable[[], AbstractContextManager] = contextlib.nullcontext
    wall_seconds: float | None = None
    done: bool = False
    _predictors: dict[str, Predictor] = field(default_factory=dict)
    _input_notes: list = field(default_factory=list)  # (emitted, taken) pairs already logged

    def build_all(self) -> None:
        """Build every planned variant (and its parents) before anything is measured, so no build runs
        beside a measurement. Variants that cannot build are kept as results; GPU-only graphs are not
        applicable on a machine without a GPU provider unless asked for by name."""
        if self.done:
            return
        ids = [v for v in self.run_ids if v != BASELINE_ID]
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
                self.builder.build_all(todo, jobs=self.build_jobs, on_done=lambda vid: bar.update(1))
        self.wall_seconds = time.perf_counter() - started
        self.done = True  # only now: an unexpected error above is raised again by the next test
        failed = {v: e for v, e in self.builder.failures.items() if v in ids}
        built = sum(1 for v in ids if self.builder.status(v) is BuildStatus.BUILT)
        self.log(f"[ortgate] builds: {built} of {len(ids)} variants ready in {self.wall_seconds:.1f}s "
                 f"({self.build_jobs} job{'s' if self.build_jobs > 1 else ''})"
                 + (f"; not built: {', '.join(failed)}" if failed else ""))
        for vid, exc in failed.items():
            self.log(f"[ortgate] variant {vid}: {self.builder.status(vid)}: {exc.reason}")

    def add_variants(self, extra: dict[str, VariantSpec], where: str) -> None:
        """Specs made during the run (a repair's candidates), built on demand by `built`, never by `build_all`;
        an id already known keeps its spec (the same candidate asked for again)."""
        new = {vid: spec for vid, spec in extra.items() if vid not in self.variants.specs}
        if new:
            self.variants = self.variants.merged(new, where)
            self.builder.variants = self.variants

    def not_applicable_reason(self, variant_id: str) -> str | None:
        return not_applicable_reason(self.variants, variant_id, self.explicit_ids)

    def status(self, variant_id: str) -> tuple[BuildStatus | None, str | None]:
        """(the build status, the failure's reason) once the builds ran; (None, None) for the baseline."""
        self.build_all()  # the baseline too: nothing is measured before the builds are done
        if variant_id == BASELINE_ID:
            return None, None
        failure = self.builder.failures.get(variant_id)
        return self.builder.status(variant_id), failure.reason if failure else None

    def failed_step(self, variant_id: str) -> FailedStep | None:
        """The first step of the variant's chain that failed to build (None: none did)."""
        self.build_all()
        for spec in self.variants.chain(variant_id):
            if spec.step is not None and self.builder.status(spec.id) is BuildStatus.BUILD_FAILED:
                fields = describe_step(spec.step)
                step = spec.step.kind + (f" ({fields})" if fields != spec.step.kind else "")
                return FailedStep(spec.id, step, self.builder.failures[spec.id].reason)
        return None

    def built(self, variant_id: str) -> BuiltVariant | None:
        """The variant's build (None for the baseline); raises BuildError if it could not be built."""
        if variant_id == BASELINE_ID:
            return None
        self.build_all()
        return self.builder.build(variant_id)

    def is_built(self, variant_id: str) -> bool:
        return self.done and self.builder.status(variant_id) is BuildStatus.BUILT

    def duplicate_of(self, variant_id: str) -> str | None:
        """The first planned variant (in definition order) whose model.onnx is byte-identical to this one's."""
        if variant_id == BASELINE_ID or not self.is_built(variant_id):  # reads the builds; never starts them
            return None
        mine = self.built(variant_id).graph_sha256
        for other in self.run_ids:
            if other == variant_id:
                return None
            if other != BASELINE_ID and self.is_built(other) and mine and self.built(other).graph_sha256 == mine:
                return other
        return None

    def first_int8_variant(self) -> str | None:
        """The first quantized variant of the run that builds: the harness check times it."""
        for vid in self.run_ids:
            if isinstance(self.variants.specs[vid].step, Quantize):
                try:
                    self.built(vid)
                except BuildError:
                    continue
                return vid
        return None

    def predictor(self, variant_id: str) -> Predictor:
        if variant_id not in self._predictors:
            if variant_id == BASELINE_ID:
                predictor = TorchPredictor(self.model.path, self.threads, self.max_length)
            else:
                predictor = OnnxPredictor(self.built(variant_id).path, self.threads, self.max_length)
            self._predictors[variant_id] = predictor
            emitted, taken = list(predictor.tokenizer.model_input_names), list(predictor.input_names)
            if sorted(emitted) != sorted(taken) and (emitted, taken) not in self._input_notes:
                self._input_notes.append((emitted, taken))
                self.log(f"[ortgate] model inputs: {describe_inputs(emitted, taken)}")
        return self._predictors[variant_id]
