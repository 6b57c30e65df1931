"""Variant specs: what each variant is, as frozen data with a stable id and a content hash.

A variant is its parent plus one step (export, graph optimization, or quantization); the PyTorch
baseline has neither. The id is human-readable and is the pytest parameter id; the content hash covers
the whole chain of steps, so changing any step upstream changes every descendant's cache key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from ortgate.errors import ConfigError

BASELINE_ID = "pytorch"
ISA_PRESETS = ("arm64", "avx2", "avx512", "avx512_vnni")
# The operator list the reference workflow quantized after level-99 optimization.
REFERENCE_OPERATORS = ("MatMul", "Attention", "BiasGelu", "LayerNormalization", "SkipLayerNormalization")


@dataclass(frozen=True)
class Export:
    """Plain ONNX export with Optimum (no graph optimization written to the file)."""

    kind: Literal["export"] = "export"


@dataclass(frozen=True)
class Optimize:
    """ORTOptimizer at `level` (0, 1, 2 or 99); `options` are OptimizationConfig fields."""

    level: int
    options: tuple[tuple[str, bool], ...] = ()
    kind: Literal["optimize"] = "optimize"

    def __post_init__(self) -> None:
        if self.level not in (0, 1, 2, 99):
            raise ConfigError(f"optimization level must be 0, 1, 2 or 99, got {self.level!r}")


@dataclass(frozen=True)
class Quantize:
    """ORTQuantizer with an AutoQuantizationConfig ISA preset."""

    mode: Literal["dynamic", "static"]
    isa: str
    per_channel: bool
    operators: tuple[str, ...] | None = None  # None: the preset's default operator list
    calibration: Literal["minmax"] | None = None
    calibration_samples: int = 0
    kind: Literal["quantize"] = "quantize"

    def __post_init__(self) -> None:
        if self.mode not in ("dynamic", "static"):
            raise ConfigError(f"quantization mode must be 'dynamic' or 'static', got {self.mode!r}")
        if self.isa not in ISA_PRESETS:
            raise ConfigError(f"unknown ISA preset {self.isa!r}; choose one of {', '.join(ISA_PRESETS)}")
        if self.mode == "static" and (self.calibration is None or self.calibration_samples < 1):
            raise ConfigError("static quantization needs a calibration method and calibration_samples >= 1")
        if self.mode == "dynamic" and self.calibration is not None:
            raise ConfigError("dynamic quantization takes no calibration")


Step = Export | Optimize | Quantize


@dataclass(frozen=True)
class VariantSpec:
    id: str
    parent: str | None = None
    step: Step | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.id or any(c.isspace() or c in "/\\[]" for c in self.id):
            raise ConfigError(f"variant id {self.id!r} must be non-empty, without spaces, slashes or brackets")
        needs_parent = isinstance(self.step, Optimize | Quantize)
        if needs_parent != (self.parent is not None):
            raise ConfigError(
                f"variant {self.id!r}: an optimize or quantize step needs a parent variant; "
                "the export and the PyTorch baseline take none"
            )

    @property
    def is_onnx(self) -> bool:
        return self.step is not None


@dataclass(frozen=True)
class VariantSet:
    """Specs by id, with the chain resolution that hashing and building need."""

    specs: Mapping[str, VariantSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for spec in self.specs.values():
            if spec.parent is not None and spec.parent not in self.specs:
                raise ConfigError(f"variant {spec.id!r} names parent {spec.parent!r}, which is not defined")

    def chain(self, variant_id: str) -> list[VariantSpec]:
        """The specs from the export down to `variant_id`, in build order."""
        chain, current = [], self.specs[variant_id]
        while True:
            chain.append(current)
            if current.parent is None:
                return chain[::-1]
            current = self.specs[current.parent]

    def content_hash(self, variant_id: str) -> str:
        """Hash of every step in the chain (not the ids: renaming a variant keeps its cache)."""
        steps = [asdict(s.step) if s.step is not None else None for s in self.chain(variant_id)]
        blob = json.dumps(steps, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def hardware_specific(self, variant_id: str) -> bool:
        """Level-99 graphs carry layout transforms for this CPU; so does everything built from one."""
        return any(isinstance(s.step, Optimize) and s.step.level >= 99 for s in self.chain(variant_id))

    def select(self, patterns: Iterable[str] | None) -> list[str]:
        """Ids matching the names or globs, in definition order, the baseline always first."""
        ids = list(self.specs)
        if not patterns:
            return ids
        chosen = set()
        for pattern in patterns:
            hits = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
            if not hits:
                raise ConfigError(
                    f"unknown variant {pattern!r} in --ortgate-variants; known variants: {', '.join(ids)}"
                )
            chosen.update(hits)
        chosen.add(BASELINE_ID)
        return [i for i in ids if i in chosen]


def _reference_dynamic(isa: str) -> Quantize:
    """The reference workflow's dynamic quantization after level 99: its operators, per-tensor."""
    return Quantize(mode="dynamic", isa=isa, per_channel=False, operators=REFERENCE_OPERATORS)


DEFAULT_VARIANTS = VariantSet(
    {
        spec.id: spec
        for spec in (
            VariantSpec(BASELINE_ID, description="eager PyTorch (transformers), the baseline"),
            VariantSpec("onnx", None, Export(), "plain ONNX export (Optimum)"),
            VariantSpec("O99", "onnx", Optimize(99), "ORT optimization level 99"),
            VariantSpec(
                "dynamic-int8",
                "onnx",
                Quantize(mode="dynamic", isa="arm64", per_channel=True),
                "dynamic int8 of the export, Optimum's arm64 defaults (per-channel, default operators)",
            ),
            VariantSpec(
                "O99-dynamic-int8-arm64",
                "O99",
                _reference_dynamic("arm64"),
                "level 99, then dynamic int8, arm64 preset, reference operators",
            ),
            *(
                VariantSpec(
                    f"O99-dynamic-int8-{isa}",
                    "O99",
                    _reference_dynamic(isa),
                    f"level 99, then dynamic int8, {isa} preset, reference operators",
                )
                for isa in ("avx2", "avx512", "avx512_vnni")
            ),
            VariantSpec(
                "static-int8",
                "onnx",
                # MatMul only, per channel: on the default model the preset's full operator list cost
                # 1.8pp (per-channel) to 4.4pp (avx2, per-tensor) of accuracy, MatMul-only 0.4pp.
                Quantize(mode="static", isa="arm64", per_channel=True, operators=("MatMul",), calibration="minmax",
                         calibration_samples=128),
                "static int8 (arm64 preset, QDQ, MatMul, per-channel), minmax calibration on 128 held-out rows",
            ),
        )
    }
)
