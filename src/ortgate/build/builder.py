"""Build ONNX variants with Optimum and ONNX Runtime, into the content-addressed cache.

Every variant folder holds `model.onnx`, `config.json` and the tokenizer files, so any variant loads
the same way. A variant is built from its parent's folder; parents are built (or found) first.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from ortgate.cache import MANIFEST, Cache
from ortgate.errors import BuildError, first_line
from ortgate.files import json_digest
from ortgate.isa import cpu_fingerprint, fingerprint_id
from ortgate.sources.inputs import select_inputs
from ortgate.sources.models import ModelSource
from ortgate.spec.variants import Export, Optimize, Quantize, VariantSet, VariantSpec, describe_step, step_fields

ONNX_FILE = "model.onnx"
KEYED_PACKAGES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")
Log = Callable[[str], None]


def library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in KEYED_PACKAGES}


@dataclass(frozen=True)
class BuiltVariant:
    id: str
    path: Path
    cache_hit: bool
    build_seconds: float
    metadata: dict = field(default_factory=dict, compare=False)

    graph_sha256: str | None = None  # the ONNX file's hash (cache manifest): equal hashes, identical graphs

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def size_bytes(self) -> int:
        return self.onnx_path.stat().st_size


def calibration_fingerprint(texts: Sequence[str], max_length: int) -> str:
    return json_digest([max_length, list(texts)])


class NotApplicable(BuildError):
    """The variant does not apply to this model or machine (e.g. an fp16 GPU graph on a CPU-only machine)."""


class BuildStatus(StrEnum):
    """Where a variant's build stands; a StrEnum, so it compares equal to and serializes as its value."""

    PENDING = "pending"
    BUILT = "built"
    BUILD_FAILED = "build failed"
    NOT_APPLICABLE = "not applicable"


def _portable_parts(variants: VariantSet, variant_id: str, model: ModelSource, calibration_fp: str | None) -> dict:
    parts = {
        "model": model.fingerprint,
        "steps": variants.content_hash(variant_id),
        "versions": library_versions(),
    }
    if any(isinstance(s.step, Quantize) and s.step.mode == "static" for s in variants.chain(variant_id)):
        parts["calibration"] = calibration_fp
    return parts


def _hash(parts: dict) -> str:
    return json_digest(parts)


def portable_key(variants: VariantSet, variant_id: str, model: ModelSource, calibration_fp: str | None) -> str:
    """The build key without the CPU: equal for the same variant built on any machine."""
    return _hash(_portable_parts(variants, variant_id, model, calibration_fp))


def build_key(variants: VariantSet, variant_id: str, model: ModelSource, calibration_fp: str | None) -> str:
    """Model fingerprint + the chain's steps + library versions (+ CPU and calibration rows if they matter)."""
    parts = _portable_parts(variants, variant_id, model, calibration_fp)
    if variants.hardware_specific(variant_id):
        parts["cpu"] = fingerprint_id(cpu_fingerprint())
    return _hash(parts)


class Builder:
    """Builds variants of one model, each once, through the cache.

    A variant that cannot be built is remembered with its error (and so are its descendants), so a run
    reports it instead of crashing; `build_all` builds a whole selection, parents first, optionally in
    several worker processes.
    """

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
        self.failures: dict[str, BuildError] = {}

    def build(self, variant_id: str) -> BuiltVariant:
        if variant_id in self._built:
            return self._built[variant_id]
        if variant_id in self.failures:
            raise self.failures[variant_id]
        spec = self.variants.specs[variant_id]
        if spec.step is None:
            raise BuildError(f"{variant_id} is the PyTorch baseline; it has no ONNX build")
        try:
            built = self._build(variant_id)
        except BuildError as exc:
            self.failures[variant_id] = exc
            raise
        self._built[variant_id] = built
        return built

    def _build(self, variant_id: str) -> BuiltVariant:
        spec = self.variants.specs[variant_id]
        parent = None
        if spec.parent:
            try:
                parent = self.build(spec.parent)
            except BuildError as exc:
                cls = NotApplicable if isinstance(exc, NotApplicable) else BuildError
                reason = f"parent {spec.parent}: {exc.reason}"
                raise cls(f"variant {variant_id} was not built: its parent {spec.parent} was not ({exc})",
                          reason) from None
        key = build_key(self.variants, variant_id, self.model, self._calibration_fp)
        hardware_specific = self.variants.hardware_specific(variant_id)
        portable = portable_key(self.variants, variant_id, self.model, self._calibration_fp)
        if hardware_specific:
            self._refuse_other_cpus(variant_id, portable, key)

        def run_step(staging: Path) -> dict:
            self.log(f"[ortgate] variant {variant_id}: building ({describe_step(spec.step)})")
            try:
                metadata = self._STEPS[type(spec.step)](self, spec, parent, staging)
            except BuildError as exc:
                raise type(exc)(f"building variant {variant_id} failed: {exc}", exc.reason) from exc
            except Exception as exc:
                reason = f"{type(exc).__name__}: {first_line(exc)}"
                raise BuildError(f"building variant {variant_id} failed: {reason}", reason) from exc
            if not (staging / ONNX_FILE).is_file():
                raise BuildError(f"building variant {variant_id} produced no {ONNX_FILE}", f"no {ONNX_FILE}")
            return {
                **metadata,
                "variant": variant_id,
                "step": step_fields(spec.step),
                "parent": spec.parent,
                "versions": library_versions(),
                "portable_key": portable,
                "cpu": cpu_fingerprint() if hardware_specific else None,
                "cpu_id": fingerprint_id(cpu_fingerprint()) if hardware_specific else None,
            }

        try:
            entry = self.cache.get_or_build("variants", variant_id, key, run_step, on_rebuild=self.log)
        except BuildError as exc:
            self.log(f"[ortgate] variant {variant_id}: build failed: {exc.reason}")
            raise
        built = BuiltVariant(variant_id, entry.path, entry.hit, entry.manifest["build_seconds"],
                             entry.manifest.get("metadata", {}),
                             entry.manifest.get("files", {}).get(ONNX_FILE, {}).get("sha256"))
        self.log(f"[ortgate] variant {variant_id}: {'cache hit' if entry.hit else 'built'} "
                 f"({built.build_seconds:.1f}s build) at {entry.path}")
        return built

    # One builder per step class: (builder, spec, built parent or None, staging folder) -> manifest metadata.
    def _export(self, spec: VariantSpec, parent: BuiltVariant | None, staging: Path) -> dict:
        export(self.model.path, staging)
        return {}

    def _optimize(self, spec: VariantSpec, parent: BuiltVariant | None, staging: Path) -> dict:
        optimize(parent.path, staging, spec.step)
        return {}

    def _quantize(self, spec: VariantSpec, parent: BuiltVariant | None, staging: Path) -> dict:
        chain = self.variants.chain(spec.parent)
        graph_was_optimized = any(isinstance(s.step, Optimize) for s in chain)
        export_path = self.build(chain[0].id).onnx_path
        return quantize(parent.path, staging, spec.step, self.calibration_texts, self.max_length,
                        infer_shapes_first=graph_was_optimized, export_onnx=export_path)

    _STEPS: dict[type, Callable[[Builder, VariantSpec, BuiltVariant | None, Path], dict]] = {
        Export: _export, Optimize: _optimize, Quantize: _quantize}

    def _refuse_other_cpus(self, variant_id: str, portable: str, key: str) -> None:
        """Say so when this variant's cache holds a hardware-specific graph from another CPU: it is not
        loaded here (its key names that CPU), and the graph is rebuilt for this one."""
        here = fingerprint_id(cpu_fingerprint())
        if self.cache.path_for("variants", variant_id, key).exists():
            return  # this CPU's own entry is there
        folder = self.cache.root / "variants"
        for manifest_path in sorted(folder.glob(f"{glob.escape(variant_id)}-*/{MANIFEST}")):
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                continue
            meta = manifest.get("metadata", {})
            if meta.get("portable_key") != portable or manifest.get("key") == key or meta.get("cpu_id") == here:
                continue
            cpu = meta.get("cpu") or {}
            self.log(
                f"[ortgate] variant {variant_id}: the cached graph at {manifest_path.parent} was built on another "
                f"CPU ({cpu.get('model_name', 'unknown')}, fingerprint {meta.get('cpu_id')}) and is not loaded "
                f"on this one (fingerprint {here}): a level-99 graph carries layout transforms (NCHWc) and "
                "kernel choices for the CPU that optimized it; building it for this CPU"
            )

    def status(self, variant_id: str) -> BuildStatus:
        if variant_id in self._built:
            return BuildStatus.BUILT
        failure = self.failures.get(variant_id)
        if failure is None:
            return BuildStatus.PENDING
        return BuildStatus.NOT_APPLICABLE if isinstance(failure, NotApplicable) else BuildStatus.BUILD_FAILED

    def mark_not_applicable(self, variant_id: str, reason: str) -> None:
        self.failures[variant_id] = NotApplicable(reason)

    def plan(self, variant_ids: Sequence[str]) -> list[str]:
        """What `build_all(variant_ids)` has left to do: the variants and their parents, parents first."""
        needed: list[str] = []
        for vid in variant_ids:
            for spec in self.variants.chain(vid):
                if spec.step is not None and spec.id not in needed:
                    needed.append(spec.id)
        return [v for v in needed if v not in self._built and v not in self.failures]

    def build_all(self, variant_ids: Sequence[str], jobs: int = 1,
                  on_done: Callable[[str], None] = lambda variant_id: None) -> None:
        """Build `variant_ids` and their parents, parents first; failures are kept, not raised.

        With jobs > 1, independent variants build at the same time in worker processes (spawned:
        the parent may already run ONNX Runtime and torch thread pools).
        """
        todo = self.plan(variant_ids)
        if jobs <= 1 or len(todo) <= 1:
            for vid in todo:
                with contextlib.suppress(BuildError):
                    self.build(vid)
                on_done(vid)
            return
        self._build_parallel(todo, jobs, on_done)
        # What is left if the worker pool broke (a worker killed, or spawn refused: a script without
        # `if __name__ == "__main__":`): one at a time, here.
        for vid in [v for v in todo if v not in self._built and v not in self.failures]:
            with contextlib.suppress(BuildError):
                self.build(vid)
            on_done(vid)

    def _build_parallel(self, todo: list[str], jobs: int, on_done: Callable[[str], None]) -> None:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        remaining, running, results = list(todo), {}, 0
        payload = (self.variants, self.model, str(self.cache.root), self.calibration_texts, self.max_length)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            while remaining or running:
                for vid in list(remaining):
                    parent = self.variants.specs[vid].parent
                    if parent in self.failures:  # recorded as a failure of its own, without a build
                        remaining.remove(vid)
                        with contextlib.suppress(BuildError):
                            self.build(vid)
                        on_done(vid)
                    elif parent is None or parent in self._built:
                        if len(running) < jobs:
                            remaining.remove(vid)
                            running[pool.submit(_build_in_worker, payload, vid)] = vid
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    vid = running.pop(future)
                    try:
                        ok, result, lines = future.result()
                    except BrokenProcessPool as exc:
                        if not results:
                            self.log(f"[ortgate] parallel builds could not start ({exc}); building one at a time")
                            return
                        # A worker died (killed: out of memory?); which of the running builds caused it is
                        # unknown, so none of them is retried. The rest build one at a time, here.
                        reason = "a build worker died while this variant was building (killed, e.g. out of memory)"
                        ok, result, lines = False, BuildError(f"building variant {vid} failed: {reason}", reason), []
                        for other in running.values():
                            self.failures[other] = BuildError(f"building variant {other} failed: {reason}", reason)
                            on_done(other)
                        running.clear()
                        self._record(vid, ok, result, lines, on_done)
                        return
                    self._record(vid, ok, result, lines, on_done)
                    results += 1

    def _record(self, vid: str, ok: bool, result, lines: list[str], on_done: Callable[[str], None]) -> None:
        for line in lines:
            self.log(line)
        if ok:
            self._built[vid] = result
        else:
            self.failures[vid] = result
        on_done(vid)



def _build_in_worker(payload, variant_id: str):
    """Worker process: build one variant (its parents are already in the cache)."""
    variants, model, cache_root, texts, max_length = payload
    lines: list[str] = []

    def log(line: str) -> None:  # this variant's lines only (its parents are cache hits, logged before)
        if variant_id in line:
            lines.append(line)

    builder = Builder(variants, model, Cache(Path(cache_root)), texts, max_length, log=log)
    try:
        return True, builder.build(variant_id), lines
    except BuildError as exc:
        return False, exc, lines
    except Exception as exc:  # anything else (disk full, a lock timeout) is this variant's failure too
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        return False, BuildError(f"building variant {variant_id} failed: {reason}", reason), lines


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


def optimization_config(step: Optimize):
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, OptimizationConfig

    if step.preset is not None:
        # Optimum's preset fields, then the variant's own options over them (with_optimization_level would
        # refuse an option the preset also sets). O4 means a GPU graph, as with_optimization_level makes it.
        fields = {**AutoOptimizationConfig._LEVELS[step.preset], **dict(step.options)}
        fields.setdefault("optimize_for_gpu", step.preset == "O4")
        return OptimizationConfig(**fields)
    return OptimizationConfig(optimization_level=step.level, **dict(step.options))


def optimize(parent_dir: Path, out: Path, step: Optimize) -> None:
    from optimum.onnxruntime import ORTOptimizer

    _quiet_optimum()
    optimizer = ORTOptimizer.from_pretrained(parent_dir, file_names=[ONNX_FILE])
    optimizer.optimize(save_dir=out, file_suffix=None, optimization_config=optimization_config(step))


def quantization_config(step: Quantize, operators: Sequence[str] | None = None):
    """The ISA preset's config; `operators` (resolved, for derived lists) overrides the step's list."""
    from onnxruntime.quantization import QuantFormat
    from optimum.onnxruntime.configuration import ORT_DEFAULT_OPS_STATIC_QUANTIZATION_QOPS, AutoQuantizationConfig

    if operators is None and isinstance(step.operators, tuple):
        operators = step.operators
    preset = getattr(AutoQuantizationConfig, step.isa)
    config = preset(
        is_static=step.mode == "static",
        per_channel=step.per_channel,
        operators_to_quantize=list(operators) if operators is not None else None,
    )
    if step.mode == "static" and step.format == "QOperator":
        # The presets write QDQ for static quantization; QOperator (QLinear* nodes) has its own default list.
        config.format = QuantFormat.QOperator
        if operators is None:
            config.operators_to_quantize = list(ORT_DEFAULT_OPS_STATIC_QUANTIZATION_QOPS)
    return config


def derived_operators(which: str, parent_onnx: Path, export_onnx: Path) -> list[str]:
    """Operator lists the reference workflow read off the graphs with Optimum's own helpers."""
    from optimum.onnxruntime import ORTOptimizer

    if which == "fused":
        found = ORTOptimizer.get_fused_operators(parent_onnx)
    else:
        difference = ORTOptimizer.get_operators_difference(export_onnx, parent_onnx)
        found = {op: n for op, n in difference.items() if (n > 0 if which == "removed" else n < 0)}
    operators = sorted(op for op, n in found.items() if n)
    if not operators:
        what = {"fused": "has no fused operators", "removed": "lost no operators to optimization",
                "added": "gained no operators from optimization"}[which]
        raise NotApplicable(f"the parent graph {what}: there is nothing to derive operators={which!r} from",
                            f"operators={which!r}: the parent graph {what}")
    return operators


def quantize(
    parent_dir: Path,
    out: Path,
    step: Quantize,
    calibration_texts: Sequence[str],
    max_length: int,
    infer_shapes_first: bool,
    export_onnx: Path | None = None,
) -> dict:
    """Quantize the parent's graph into `out/model.onnx`; returns the operator types it asked to quantize
    (and, for static quantization, how many calibration rows it used).

    Quantizing an ORT-optimized graph fails upstream (huggingface/optimum#2186: "Unable to find data
    type for weight_name=..."), because the fused graph lacks value_info for intermediate tensors.
    Symbolic shape inference (which knows ORT's contrib ops) restores them first.
    """
    import onnx
    from optimum.onnxruntime import ORTQuantizer

    _quiet_optimum()
    operators, info = None, {}
    if step.mode == "static":
        _refuse_subgraphs(parent_dir / ONNX_FILE)
    if isinstance(step.operators, str):
        operators = derived_operators(step.operators, parent_dir / ONNX_FILE, export_onnx or parent_dir / ONNX_FILE)
    work = out / "_input"
    shutil.copytree(parent_dir, work, ignore=shutil.ignore_patterns(MANIFEST))
    if infer_shapes_first:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(onnx.load(str(work / ONNX_FILE)), auto_merge=True)
        onnx.save(inferred, str(work / ONNX_FILE))
    qconfig = quantization_config(step, operators)
    quantizer = ORTQuantizer.from_pretrained(work, file_name=ONNX_FILE)
    ranges = None
    if step.mode == "static":
        from optimum.onnxruntime.configuration import AutoCalibrationConfig

        dataset = calibration_dataset(work, calibration_texts[: step.calibration_samples], max_length)
        info["calibration_rows_used"] = len(dataset)  # fewer than asked when the dataset is small
        method = {"minmax": AutoCalibrationConfig.minmax, "entropy": AutoCalibrationConfig.entropy,
                  "percentile": AutoCalibrationConfig.percentiles}[step.calibration]
        config = method(dataset)
        if step.calibration == "minmax":
            ranges = quantizer.fit(dataset=dataset, calibration_config=config,
                                   onnx_augmented_model_name=work / "augmented.onnx",
                                   operators_to_quantize=qconfig.operators_to_quantize)
        else:
            # Histogram calibrators (entropy, percentile) stack the activations of all rows they are given
            # into one array, then fold it into histograms. Given all rows at once they fail: unpadded rows
            # differ in length ("inhomogeneous shape"); padded rows bring the attention mask's -3.4e38 bias
            # into the histogram range ("Too many bins for data range"); and 128 padded rows of a 6-layer
            # BERT took over 20 GB here before being killed. So the calibrator gets the rows one at a time,
            # unpadded as deployed, and merges each row's histograms into the running ones.
            shards = [dataset.select(range(i, min(i + HISTOGRAM_SHARD, len(dataset))))
                      for i in range(0, len(dataset), HISTOGRAM_SHARD)]
            quantizer.partial_fit(dataset=shards[0], calibration_config=config,
                                  onnx_augmented_model_name=work / "augmented.onnx",
                                  operators_to_quantize=qconfig.operators_to_quantize)
            for shard in shards[1:]:
                quantizer._calibrator.collect_data(_calibration_reader(shard))
            ranges = quantizer.compute_ranges()
    quantizer.quantize(save_dir=out, file_suffix=None, quantization_config=qconfig, calibration_tensors_range=ranges)
    shutil.rmtree(work)
    return {"operators_quantized": list(qconfig.operators_to_quantize), **info}


# Control-flow nodes carry subgraphs; Optimum's ORTQuantizer refuses static quantization of such graphs.
SUBGRAPH_OPS = ("If", "Loop", "Scan", "SequenceMap")


def _refuse_subgraphs(onnx_path: Path) -> None:
    """Static quantization does not apply to a graph with control flow (DeBERTa-v2's export has If nodes):
    say so as a result, before calibration is spent on it."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    found = sorted({node.op_type for node in graph.node if node.op_type in SUBGRAPH_OPS})
    if found:
        raise NotApplicable(
            f"static quantization does not apply: the parent graph has control-flow nodes with subgraphs "
            f"({', '.join(found)}), which Optimum's ORTQuantizer does not statically quantize",
            f"static quantization of a graph with subgraphs ({', '.join(found)}) is not supported by Optimum")


HISTOGRAM_SHARD = 1  # rows per call to the entropy and percentile calibrators


def _calibration_reader(dataset):
    from optimum.onnxruntime.quantization import ORTCalibrationDataReader

    return ORTCalibrationDataReader(dataset, 1)


def calibration_dataset(model_dir: Path, texts: Sequence[str], max_length: int):
    """Tokenized calibration rows (batch 1, unpadded, as the model sees them at inference)."""
    import datasets
    import onnx
    from transformers import AutoTokenizer

    if not texts:
        raise BuildError("static quantization needs calibration rows, and the dataset left none")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = [i.name for i in onnx.load(str(model_dir / ONNX_FILE), load_external_data=False).graph.input]
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=True)
    return datasets.Dataset.from_dict(select_inputs(encoded, inputs, "the ONNX graph"))
