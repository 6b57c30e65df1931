"""Why a variant fails: where its time goes (ONNX Runtime's profiler, against its parent) and where its accuracy goes
(its intermediate tensors against its fp32 parent's, nodes ranked by the error they introduce).

Handed the build plan and the texts; runs apart from the timed passes (profiling inflates times) and after them.
Used by `ortgate profile` / `ortgate diagnose`, by a run's summary (`Explanations`), and by `diagnose.repair`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ortgate.build.plan import BuildPlan
from ortgate.errors import ConfigError
from ortgate.measure.profile import OperatorProfile, ProfileDiff, diff_profiles, profile_session, profile_sessions
from ortgate.measure.tensor_error import Diagnosis, diagnose_graphs
from ortgate.spec.variants import BASELINE_ID, Quantize, VariantSet

Log = Callable[[str], None]
DIAGNOSIS_ROWS = 64  # calibration rows run through both graphs with every tensor exposed
PROFILE_CALLS = 32  # benchmark texts, one call each, after the warm-up calls


def quantized_ids(variants: VariantSet) -> list[str]:
    return [vid for vid, spec in variants.specs.items() if isinstance(spec.step, Quantize)]


def check_variant(variants: VariantSet, variant_id: str, command: str, quantized: bool = True) -> None:
    """One line naming what to give instead, for a variant that does not exist or (for diagnose and repair) is not
    quantized."""
    choices = quantized_ids(variants) if quantized else [v for v in variants.specs if v != BASELINE_ID]
    if variant_id not in variants.specs:
        raise ConfigError(f"{command}: there is no variant {variant_id!r} in this matrix; it takes "
                          f"{'a quantized variant' if quantized else 'an ONNX variant'}: {', '.join(choices)}")
    if variant_id == BASELINE_ID:
        raise ConfigError(f"{command}: {BASELINE_ID!r} is the PyTorch baseline, not an ONNX graph; it takes: "
                          f"{', '.join(choices)}")
    if quantized and not isinstance(variants.specs[variant_id].step, Quantize):
        raise ConfigError(f"{command}: {variant_id!r} is not quantized (nothing was rounded to int8); it "
                          f"takes a quantized variant: {', '.join(choices)}")


@dataclass
class Explainer:
    """Profiles and diagnoses built variants, each once."""

    plan: BuildPlan
    calibration_texts: Sequence[str]  # held out from evaluation: what the diagnosis runs
    bench_texts: Sequence[str]  # what the profiler runs (the benchmark sample)
    threads: int
    rows: int = DIAGNOSIS_ROWS
    calls: int = PROFILE_CALLS
    log: Log = print
    profiles: dict[str, OperatorProfile] = field(default_factory=dict)
    diagnoses: dict[tuple[str, str], Diagnosis] = field(default_factory=dict)
    _work: tempfile.TemporaryDirectory | None = None

    @property
    def work_dir(self) -> Path:
        if self._work is None:
            self._work = tempfile.TemporaryDirectory(prefix="ortgate-explain-")
        return Path(self._work.name)

    def feeds(self, variant_id: str, texts: Sequence[str]) -> list[dict]:
        """One batch-1 input dict per text, as the variant's own session takes them."""
        predictor = self.plan.predictor(variant_id)
        return [predictor.encode([text]) for text in texts]

    def profile(self, variant_id: str) -> OperatorProfile:
        if variant_id not in self.profiles:
            built = self.plan.built(variant_id)
            self.log(f"[ortgate] profiling {variant_id}: {self.calls} calls under ONNX Runtime's profiler")
            self.profiles[variant_id] = profile_session(
                built.onnx_path, self.feeds(variant_id, self.bench_texts[: self.calls]), self.threads,
                self.work_dir, variant_id)
        return self.profiles[variant_id]

    def profile_diff(self, variant_id: str, against: str) -> ProfileDiff:
        """The variant against `against`, both profiled in one pass, call by call in turn (`profile_sessions`)."""
        self.log(f"[ortgate] profiling {variant_id} and {against} in turn: {self.calls} calls each under ONNX "
                 "Runtime's profiler")
        texts = self.bench_texts[: self.calls]
        graphs = {vid: (self.plan.built(vid).onnx_path, self.feeds(vid, texts)) for vid in (variant_id, against)}
        profiles = profile_sessions(graphs, self.threads, self.work_dir)
        return diff_profiles(profiles[variant_id], profiles[against])

    def fp32_parent(self, variant_id: str) -> str:
        parent = self.plan.variants.fp32_ancestor(variant_id)
        if parent is None:
            raise ConfigError(f"{variant_id!r} has no fp32 parent graph to compare with")
        return parent

    def diagnose(self, variant_id: str, against: str | None = None) -> Diagnosis:
        """The variant's tensors against its fp32 parent's (or `against`'s) on the calibration rows."""
        parent = against or self.fp32_parent(variant_id)
        key = (variant_id, parent)
        if key not in self.diagnoses:
            rows = list(self.calibration_texts[: self.rows])
            if not rows:
                raise ConfigError("the dataset left no calibration rows to diagnose with; use more rows "
                                  "(--ortgate-limit) so some are held out from evaluation")
            self.log(f"[ortgate] diagnosing {variant_id} against {parent}: {len(rows)} calibration rows, every "
                     "intermediate tensor compared")
            self.diagnoses[key] = diagnose_graphs(
                self.plan.built(variant_id).onnx_path, self.plan.built(parent).onnx_path,
                self.feeds(parent, rows), self.threads, self.work_dir, variant=variant_id, parent=parent)
        return self.diagnoses[key]

    def close(self) -> None:
        if self._work is not None:
            self._work.cleanup()
            self._work = None

