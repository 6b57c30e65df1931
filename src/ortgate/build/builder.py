"""Build ONNX variants with Optimum and ONNX Runtime, into the content-addressed cache.

Every variant folder holds `model.onnx`, `config.json` and the tokenizer files, so any variant loads
the same way. A variant is built from its parent's folder; parents are built (or found) first.
"""

from __future__ import annotations

import contextlib
import glob
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from ortgate.build import steps
from ortgate.build.steps import ONNX_FILE
from ortgate.cache import MANIFEST, Cache
from ortgate.errors import BuildError, NotApplicable, first_line
from ortgate.files import json_digest
from ortgate.isa import cpu_fingerprint, fingerprint_id
from ortgate.sources.models import ModelSource
from ortgate.spec.variants import Export, Optimize, Quantize, VariantSet, VariantSpec, describe_step, step_fields

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


def note_other_cpu_builds(cache: Cache, variant_id: str, portable: str, key: str, log: Log) -> None:
    """Say so when this variant's cache holds a hardware-specific graph from another CPU: it is not
    loaded here (its key names that CPU), and the graph is rebuilt for this one."""
    here = fingerprint_id(cpu_fingerprint())
    if cache.path_for("variants", variant_id, key).exists():
        return  # this CPU's own entry is there
    folder = cache.root / "variants"
    for manifest_path in sorted(folder.glob(f"{glob.escape(variant_id)}-*/{MANIFEST}")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        meta = manifest.get("metadata", {})
        if meta.get("portable_key") != portable or manifest.get("key") == key or meta.get("cpu_id") == here:
            continue
        cpu = meta.get("cpu") or {}
        log(
            f"[ortgate] variant {variant_id}: the cached graph at {manifest_path.parent} was built on another "
            f"CPU ({cpu.get('model_name', 'unknown')}, fingerprint {meta.get('cpu_id')}) and is not loaded "
            f"on this one (fingerprint {here}): a level-99 graph carries layout transforms (NCHWc) and "
            "kernel choices for the CPU that optimized it; building it for this CPU"
        )


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
            note_other_cpu_builds(self.cache, variant_id, portable, key, self.log)

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
        steps.export(self.model.path, staging)
        return {}

    def _optimize(self, spec: VariantSpec, parent: BuiltVariant | None, staging: Path) -> dict:
        steps.optimize(parent.path, staging, spec.step)
        return {}

    def _quantize(self, spec: VariantSpec, parent: BuiltVariant | None, staging: Path) -> dict:
        chain = self.variants.chain(spec.parent)
        graph_was_optimized = any(isinstance(s.step, Optimize) for s in chain)
        export_path = self.build(chain[0].id).onnx_path
        return steps.quantize(parent.path, staging, spec.step, self.calibration_texts, self.max_length,
                              infer_shapes_first=graph_was_optimized, export_onnx=export_path)

    _STEPS: dict[type, Callable[[Builder, VariantSpec, BuiltVariant | None, Path], dict]] = {
        Export: _export, Optimize: _optimize, Quantize: _quantize}

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
        from ortgate.build.parallel import build_in_parallel

        build_in_parallel(self, todo, jobs, on_done)
        # What is left if the worker pool broke (a worker killed, or spawn refused: a script without
        # `if __name__ == "__main__":`): one at a time, here.
        for vid in [v for v in todo if v not in self._built and v not in self.failures]:
            with contextlib.suppress(BuildError):
                self.build(vid)
            on_done(vid)

    def record(self, vid: str, ok: bool, result, lines: list[str], on_done: Callable[[str], None]) -> None:
        for line in lines:
            self.log(line)
        if ok:
            self._built[vid] = result
        else:
            self.failures[vid] = result
        on_done(vid)
