"""Build ONNX variants with Optimum and ONNX Runtime, into the content-addressed cache.

Every variant folder holds `model.onnx`, `config.json` and the tokenizer files, so any variant loads
the same way. A variant is built from its parent's folder; parents are built (or found) first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from ortgate.cache import Cache
from ortgate.errors import BuildError
from ortgate.isa import cpu_fingerprint, fingerprint_id
from ortgate.models import ModelSource
from ortgate.variants import Export, Optimize, Quantize, VariantSet

ONNX_FILE = "model.onnx"
KEYED_PACKAGES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")
Log = Callable[[str], None]


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in KEYED_PACKAGES}


@dataclass(frozen=True)
class BuiltVariant:
    id: str
    path: Path
    key: str
    cache_hit: bool
    build_seconds: float

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def size_bytes(self) -> int:
        return self.onnx_path.stat().st_size


def calibration_fingerprint(texts: Sequence[str], max_length: int) -> str:
    return hashlib.sha256(json.dumps([max_length, list(texts)]).encode()).hexdigest()


def build_key(variants: VariantSet, variant_id: str, model: ModelSource, calibration_fp: str | None) -> str:
    """Model fingerprint + the chain's steps + library versions (+ CPU and calibration rows if they matter)."""
    parts = {
        "model": model.fingerprint,
        "steps": variants.content_hash(variant_id),
        "versions": library_versions(),
    }
    if variants.hardware_specific(variant_id):
        parts["cpu"] = fingerprint_id(cpu_fingerprint())
    if any(isinstance(s.step, Quantize) and s.step.mode == "static" for s in variants.chain(variant_id)):
        parts["calibration"] = calibration_fp
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Builder:
    """Builds variants of one model, each once, through the cache."""

    def __init__(
        self,
        variants: VariantSet,
        model: ModelSource,
        cache: Cache,
        calibration_texts: Sequence[str],
        max_length: int,
        log: Log = lambda message: None,
    ) -> None:
        self.variants = variants
        self.model = model
        self.cache = cache
        self.calibration_texts = list(calibration_texts)
        self.max_length = max_length
        self.log = log
        self._calibration_fp = calibration_fingerprint(self.calibration_texts, max_length)
        self._built: dict[str, BuiltVariant] = {}

    def build(self, variant_id: str) -> BuiltVariant:
        if variant_id in self._built:
            return self._built[variant_id]
        spec = self.variants.specs[variant_id]
        if spec.step is None:
            raise BuildError(f"{variant_id} is the PyTorch baseline; it has no ONNX build")
        parent = self.build(spec.parent) if spec.parent else None
        key = build_key(self.variants, variant_id, self.model, self._calibration_fp)
        self.log(f"[ortgate] variant {variant_id}: looking up cache")

        def run_step(staging: Path) -> dict:
            self.log(f"[ortgate] variant {variant_id}: building ({_describe(spec.step)})")
            try:
                if isinstance(spec.step, Export):
                    export(self.model.path, staging)
                elif isinstance(spec.step, Optimize):
                    optimize(parent.path, staging, spec.step)
                else:
                    graph_was_optimized = any(isinstance(s.step, Optimize) for s in self.variants.chain(spec.parent))
                    quantize(parent.path, staging, spec.step, self.calibration_texts, self.max_length,
                             infer_shapes_first=graph_was_optimized)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BuildError(f"building variant {variant_id} failed: {type(exc).__name__}: {first}") from exc
            if not (staging / ONNX_FILE).is_file():
                raise BuildError(f"building variant {variant_id} produced no {ONNX_FILE}")
            return {
                "variant": variant_id,
                "step": asdict(spec.step),
                "parent": spec.parent,
                "versions": library_versions(),
                "cpu": cpu_fingerprint() if self.variants.hardware_specific(variant_id) else None,
            }

        entry = self.cache.get_or_build("variants", variant_id, key, run_step, on_rebuild=self.log)
        built = BuiltVariant(variant_id, entry.path, key, entry.hit, entry.manifest["build_seconds"])
        self.log(f"[ortgate] variant {variant_id}: {'cache hit' if entry.hit else 'built'} "
                 f"({built.build_seconds:.1f}s build) at {entry.path}")
        self._built[variant_id] = built
        return built


def _describe(step) -> str:
    return ", ".join(f"{k}={v}" for k, v in asdict(step).items() if k != "kind") or step.kind


def _quiet_optimum() -> None:
    import onnxruntime

    for name in ("optimum", "onnxruntime", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The level-99 "hardware specific" notice is a C++ log line; ortgate already keys such graphs by CPU.
    onnxruntime.set_default_logger_severity(3)


def export(model_dir: Path, out: Path) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    _quiet_optimum()
    model = ORTModelForSequenceClassification.from_pretrained(model_dir, export=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def optimize(parent_dir: Path, out: Path, step: Optimize) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    _quiet_optimum()
    config = OptimizationConfig(optimization_level=step.level, **dict(step.options))
    optimizer = ORTOptimizer.from_pretrained(parent_dir, file_names=[ONNX_FILE])
    optimizer.optimize(save_dir=out, file_suffix=None, optimization_config=config)


def quantization_config(step: Quantize):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = getattr(AutoQuantizationConfig, step.isa)
    return preset(
        is_static=step.mode == "static",
        per_channel=step.per_channel,
        operators_to_quantize=list(step.operators) if step.operators is not None else None,
    )


def quantize(
    parent_dir: Path,
    out: Path,
    step: Quantize,
    calibration_texts: Sequence[str],
    max_length: int,
    infer_shapes_first: bool,
) -> None:
    """Quantize the parent's graph into `out/model.onnx`.

    Quantizing an ORT-optimized graph fails upstream (huggingface/optimum#2186: "Unable to find data
    type for weight_name=..."), because the fused graph lacks value_info for intermediate tensors.
    Symbolic shape inference (which knows ORT's contrib ops) restores them first.
    """
    import onnx
    from optimum.onnxruntime import ORTQuantizer

    _quiet_optimum()
    work = out / "_input"
    shutil.copytree(parent_dir, work, ignore=shutil.ignore_patterns("ortgate-manifest.json"))
    if infer_shapes_first:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(onnx.load(str(work / ONNX_FILE)), auto_merge=True)
        onnx.save(inferred, str(work / ONNX_FILE))
    qconfig = quantization_config(step)
    quantizer = ORTQuantizer.from_pretrained(work, file_name=ONNX_FILE)
    ranges = None
    if step.mode == "static":
        from optimum.onnxruntime.configuration import AutoCalibrationConfig

        dataset = calibration_dataset(work, calibration_texts[: step.calibration_samples], max_length)
        calibration = AutoCalibrationConfig.minmax(dataset)
        ranges = quantizer.fit(
            dataset=dataset,
            calibration_config=calibration,
            onnx_augmented_model_name=work / "augmented.onnx",
            operators_to_quantize=qconfig.operators_to_quantize,
        )
    quantizer.quantize(save_dir=out, file_suffix=None, quantization_config=qconfig, calibration_tensors_range=ranges)
    shutil.rmtree(work)


def calibration_dataset(model_dir: Path, texts: Sequence[str], max_length: int):
    """Tokenized calibration rows (batch 1, unpadded, as the model sees them at inference)."""
    import datasets
    import onnx
    from transformers import AutoTokenizer

    if not texts:
        raise BuildError("static quantization needs calibration rows, and the dataset left none")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = {i.name for i in onnx.load(str(model_dir / ONNX_FILE), load_external_data=False).graph.input}
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({k: v for k, v in encoded.items() if k in inputs})
