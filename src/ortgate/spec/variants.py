"""Variant specs: what each variant is, as frozen data with a stable id and a content hash.

A variant is its parent plus one step (export, graph optimization, or quantization); the PyTorch
baseline has neither. The id is human-readable and is the pytest parameter id; the content hash covers
the whole chain of steps, so changing any step upstream changes every descendant's cache key.
Specs come from presets (`matrix.py`) and from user matrices written as TOML (`parse_entry` below).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal, TypeVar

from ortgate.errors import ConfigError
from ortgate.files import json_digest

BASELINE_ID = "pytorch"
EXPORT_ID = "onnx"
ISA_PRESETS = ("arm64", "avx2", "avx512", "avx512_vnni")
# The operator list the reference workflow quantized after level-99 optimization.
REFERENCE_OPERATORS = ("MatMul", "Attention", "BiasGelu", "LayerNormalization", "SkipLayerNormalization")
# Operator lists read off the parent graph at build time, as the reference workflow tried them:
#   fused:   the ORT contrib (fused) operators in the parent graph (ORTOptimizer.get_fused_operators)
#   removed: operators whose count optimization lowered (get_operators_difference(export, parent) > 0)
#   added:   operators whose count optimization raised (get_operators_difference(export, parent) < 0)
DERIVED_OPERATORS = ("fused", "removed", "added")
OPTIMIZATION_LEVELS = (0, 1, 2, 99)
OPTIMIZATION_PRESETS = ("O1", "O2", "O3", "O4")  # Optimum's AutoOptimizationConfig levels
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("QDQ", "QOperator")
# Boolean fields of optimum's OptimizationConfig (optimum 2.1); tests/test_variants.py checks the list
# against the installed Optimum, so an upgrade that renames one is caught.
OPTIMIZATION_OPTIONS = (
    "enable_transformers_specific_optimizations", "optimize_for_gpu", "fp16", "disable_gelu_fusion",
    "disable_attention_fusion", "disable_bias_gelu_fusion", "disable_layer_norm_fusion", "disable_rotary_embeddings",
    "disable_skip_layer_norm_fusion", "disable_bias_skip_layer_norm_fusion", "disable_skip_group_norm_fusion",
    "disable_bias_splitgelu_fusion", "disable_bias_add_fusion", "disable_group_norm_fusion",
    "disable_embed_layer_norm_fusion", "enable_gemm_fast_gelu_fusion", "use_mask_index", "disable_packed_kv",
    "no_attention_mask", "use_raw_attention_mask", "disable_shape_inference", "use_multi_head_attention",
    "enable_gelu_approximation", "use_group_norm_channels_first", "disable_packed_qkv", "disable_nhwc_conv",
)
# The optimization level behind each Optimum preset, and the options it sets.
PRESET_LEVELS = {"O1": 1, "O2": 2, "O3": 2, "O4": 2}


class FieldError(ConfigError):
    """A spec field is invalid; `field` names it, so a TOML entry's error can say which one."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Export:
    """Plain ONNX export with Optimum (no graph optimization written to the file)."""

    kind: Literal["export"] = "export"


@dataclass(frozen=True)
class Optimize:
    """ORTOptimizer at a `level` (0, 1, 2, 99) or an Optimum `preset` (O1–O4); `options` are
    OptimizationConfig fields set on top, as sorted (name, bool) pairs."""

    level: int | None = None
    options: tuple[tuple[str, bool], ...] = ()
    preset: str | None = None
    kind: Literal["optimize"] = "optimize"

    def __post_init__(self) -> None:
        if (self.level is None) == (self.preset is None):
            raise FieldError("level", "an optimization step needs exactly one of `level` (0, 1, 2, 99) "
                             "or `preset` (O1, O2, O3, O4)")
        if self.level is not None and (type(self.level) is not int or self.level not in OPTIMIZATION_LEVELS):
            raise FieldError("level", f"optimization level must be 0, 1, 2 or 99, got {self.level!r}")
        if self.preset is not None and self.preset not in OPTIMIZATION_PRESETS:
            raise FieldError("preset", f"optimization preset must be one of {', '.join(OPTIMIZATION_PRESETS)}, "
                             f"got {self.preset!r}")
        for name, value in self.options:
            if name not in OPTIMIZATION_OPTIONS:
                close = [o for o in OPTIMIZATION_OPTIONS if name.split("_")[-1] in o or o in name][:4]
                raise FieldError(name, f"unknown optimization option {name!r}"
                                 + (f" (did you mean {', '.join(close)}?)" if close else "")
                                 + "; options are optimum's OptimizationConfig fields")
            if not isinstance(value, bool):
                raise FieldError(name, f"optimization option {name!r} must be true or false, got {value!r}")
        object.__setattr__(self, "options", tuple(sorted(self.options)))

    @property
    def effective_level(self) -> int:
        return self.level if self.level is not None else PRESET_LEVELS[self.preset]

    @property
    def for_gpu(self) -> bool:
        """O4 (and fp16 / optimize_for_gpu) write a graph meant for a GPU."""
        opts = dict(self.options)
        return self.preset == "O4" or opts.get("fp16", False) or opts.get("optimize_for_gpu", False)

    def option(self, name: str) -> bool:
        """The effective value of an OptimizationConfig field (explicit option, else preset, else default)."""
        from_preset = {"O1": {"enable_transformers_specific_optimizations": False},
                       "O3": {"enable_gelu_approximation": True},
                       "O4": {"enable_gelu_approximation": True, "fp16": True}}.get(self.preset or "", {})
        defaults = {"enable_transformers_specific_optimizations": True, "disable_group_norm_fusion": True,
                    "disable_embed_layer_norm_fusion": True, "disable_packed_kv": True}
        return dict(self.options).get(name, from_preset.get(name, defaults.get(name, False)))


@dataclass(frozen=True)
class Quantize:
    """ORTQuantizer with an AutoQuantizationConfig ISA preset.

    `operators`: None for the preset's default list, a tuple of operator types, or one of
    DERIVED_OPERATORS (read off the parent graph at build time). Static quantization also takes a
    calibration method, a number of calibration rows (drawn apart from the evaluation rows) and a
    format (None: the preset's, QDQ).
    """

    mode: Literal["dynamic", "static"]
    isa: str
    per_channel: bool
    operators: tuple[str, ...] | str | None = None
    calibration: str | None = None
    calibration_samples: int = 0
    format: str | None = None
    # None: the preset's. reduce_range quantizes weights to 7 bits (avoids u8 x u8 saturation on AVX2/AVX-512
    # without VNNI); nodes_to_exclude keeps those nodes of the parent graph in fp32 (what `ortgate repair` grows).
    reduce_range: bool | None = None
    nodes_to_exclude: tuple[str, ...] | None = None
    kind: Literal["quantize"] = "quantize"

    def __post_init__(self) -> None:
        if self.mode not in ("dynamic", "static"):
            raise FieldError("mode", f"quantization mode must be 'dynamic' or 'static', got {self.mode!r}")
        if self.isa not in ISA_PRESETS:
            raise FieldError("isa", f"unknown ISA preset {self.isa!r}; choose one of {', '.join(ISA_PRESETS)}")
        if not isinstance(self.per_channel, bool):
            raise FieldError("per_channel", f"per_channel must be true or false, got {self.per_channel!r}")
        if isinstance(self.operators, str):
            if self.operators not in DERIVED_OPERATORS:
                raise FieldError("operators", f"operators must be a list of operator types or one of "
                                 f"{', '.join(DERIVED_OPERATORS)} (derived from the parent graph), "
                                 f"got {self.operators!r}")
        elif self.operators is not None:
            ops = tuple(self.operators)
            if not ops or not all(isinstance(o, str) and o for o in ops):
                raise FieldError("operators", f"operators must be a non-empty list of operator types "
                                 f"(e.g. [\"MatMul\"]), got {self.operators!r}")
            object.__setattr__(self, "operators", ops)
        if self.reduce_range is not None and not isinstance(self.reduce_range, bool):
            raise FieldError("reduce_range", f"reduce_range must be true or false, got {self.reduce_range!r}")
        if self.nodes_to_exclude is not None:
            nodes = tuple(self.nodes_to_exclude) if isinstance(self.nodes_to_exclude, list | tuple) else ()
            if not nodes or not all(isinstance(n, str) and n for n in nodes):
                raise FieldError("nodes_to_exclude", "nodes_to_exclude must be a non-empty list of node names of the "
                                 f"parent graph, got {self.nodes_to_exclude!r}")
            object.__setattr__(self, "nodes_to_exclude", nodes)
        if self.mode == "static":
            if self.calibration not in CALIBRATION_METHODS:
                raise FieldError("calibration", "static quantization needs a calibration method: one of "
                                 f"{', '.join(CALIBRATION_METHODS)}, got {self.calibration!r}")
            if isinstance(self.calibration_samples, bool) or not isinstance(self.calibration_samples, int) \
                    or self.calibration_samples < 1:
                raise FieldError("calibration_samples", "static quantization needs calibration_samples >= 1, "
                                 f"got {self.calibration_samples!r}")
            if self.format is not None and self.format not in QUANT_FORMATS:
                raise FieldError("format", f"format must be one of {', '.join(QUANT_FORMATS)}, got {self.format!r}")
        else:
            for name in ("calibration", "format"):
                if getattr(self, name) is not None:
                    raise FieldError(name, f"dynamic quantization takes no {name} (static quantization does)")
            if self.calibration_samples:
                raise FieldError("calibration_samples", "dynamic quantization takes no calibration_samples")


Step = Export | Optimize | Quantize


def step_fields(step: Step) -> dict:
    """The step as plain data, without unset (None) fields: adding an optional field keeps old hashes."""
    return {k: v for k, v in asdict(step).items() if v is not None}


def describe_step(step: Step) -> str:
    """The step's set fields as `name=value, ...` (an optimization's options spelled out), or its kind."""
    fields = {k: v for k, v in step_fields(step).items()
              if k != "kind" and not (k == "calibration_samples" and v == 0) and not (k == "options" and not v)}
    if isinstance(fields.get("options"), tuple):
        fields.update(dict(fields.pop("options")))
    nodes = fields.get("nodes_to_exclude")
    if nodes and len(nodes) > 3:
        fields["nodes_to_exclude"] = f"{len(nodes)} nodes ({', '.join(nodes[:2])}, ...)"
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or step.kind


@dataclass(frozen=True)
class VariantSpec:
    id: str
    parent: str | None = None
    step: Step | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.id or any(c.isspace() or c in "/\\[]" for c in self.id):
            raise FieldError("id", f"variant id {self.id!r} must be non-empty, without spaces, slashes or brackets")
        needs_parent = isinstance(self.step, Optimize | Quantize)
        if needs_parent != (self.parent is not None):
            raise FieldError("parent", f"variant {self.id!r}: an optimize or quantize step needs a parent "
                             "variant; the export and the PyTorch baseline take none")


@dataclass(frozen=True)
class VariantSet:
    """Specs by id, with the chain resolution that hashing and building need."""

    specs: Mapping[str, VariantSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for spec in self.specs.values():
            if spec.parent is not None and spec.parent not in self.specs:
                raise FieldError("parent", f"variant {spec.id!r} names parent {spec.parent!r}, which is not "
                                 f"defined; known variants: {', '.join(self.specs)}")
            if spec.parent == BASELINE_ID:
                raise FieldError("parent", f"variant {spec.id!r}: the PyTorch baseline is not an ONNX graph; "
                                 f"build from {EXPORT_ID!r} or a variant of it")
        for variant_id in self.specs:  # a cycle would make chain() loop forever
            seen, current = set(), self.specs[variant_id]
            while current.parent is not None:
                if current.id in seen:
                    raise FieldError("parent", f"variant {variant_id!r}: its parents form a cycle")
                seen.add(current.id)
                current = self.specs[current.parent]

    def merged(self, extra: Mapping[str, VariantSpec], where: str) -> VariantSet:
        """This set plus user-defined specs (which may build on any variant here)."""
        for variant_id in extra:
            if variant_id in self.specs:
                raise ConfigError(f"[{where}.{variant_id}]: variant {variant_id!r} is already defined (by the preset "
                                  "or an earlier matrix); give your entry another name")
        return VariantSet({**self.specs, **extra})

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
        steps = [step_fields(s.step) if s.step is not None else None for s in self.chain(variant_id)]
        return json_digest(steps, compact=True)

    def hardware_specific(self, variant_id: str) -> bool:
        """Level-99 graphs carry layout transforms for this CPU; so does everything built from one."""
        return any(isinstance(s.step, Optimize) and s.step.effective_level >= 99 for s in self.chain(variant_id))

    def fp32_ancestor(self, variant_id: str) -> str | None:
        """The nearest variant above `variant_id` that is not quantized (what int8 shrinks)."""
        for spec in reversed(self.chain(variant_id)[:-1]):
            if not isinstance(spec.step, Quantize):
                return spec.id
        return None

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


_T = TypeVar("_T")


def first_match(pairs: Iterable[tuple[str, _T]], variant_id: str, default: _T | None = None) -> _T | None:
    """The value of the first (glob pattern, value) pair whose pattern matches `variant_id`, else `default`."""
    return next((value for pattern, value in pairs if fnmatch.fnmatchcase(variant_id, pattern)), default)


# ------------------------------------------------------------------ user matrices (TOML)

_ENTRY_KEYS = ("parent", "description", "optimize", "quantize")
_QUANTIZE_KEYS = ("mode", "isa", "per_channel", "operators", "calibration", "calibration_samples", "format",
                  "reduce_range", "nodes_to_exclude")


def parse_entry(variant_id: str, entry: object, where: str) -> VariantSpec:
    """One `[<where>.<variant_id>]` table: a parent and one optimize or quantize step.

        [tool.ortgate.variants.O2-gelu]
        parent = "onnx"
        optimize = { level = 2, enable_gelu_approximation = true }

        [tool.ortgate.variants.O2-gelu-int8]
        parent = "O2-gelu"
        quantize = { mode = "dynamic", isa = "avx512_vnni", per_channel = true, operators = ["MatMul"] }

    Errors name the entry and the field: `[tool.ortgate.variants.O2-gelu] field 'optimize.level': ...`.
    """
    label = f"[{where}.{variant_id}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{label} must be a table with `parent` and one of `optimize` or `quantize`")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{label} field {unknown[0]!r}: unknown field; an entry has {', '.join(_ENTRY_KEYS)}")
    steps = [k for k in ("optimize", "quantize") if k in entry]
    if len(steps) != 1:
        raise ConfigError(f"{label}: give exactly one step, `optimize = {{...}}` or `quantize = {{...}}` "
                          f"(found {', '.join(steps) or 'none'})")
    kind = steps[0]
    if "parent" not in entry:
        raise ConfigError(f"{label} field 'parent': missing; name the variant this one is built from "
                          f"(e.g. {EXPORT_ID!r} or 'O99')")
    if not isinstance(entry["parent"], str):
        raise ConfigError(f"{label} field 'parent': must be a variant id (a string), got {entry['parent']!r}")
    body = entry[kind]
    if not isinstance(body, Mapping):
        raise ConfigError(f"{label} field {kind!r}: must be a table, e.g. {kind} = {{ ... }}")
    try:
        if kind == "optimize":
            body = dict(body)
            level, preset = body.pop("level", None), body.pop("preset", None)
            step: Step = Optimize(level=level, preset=preset, options=tuple(body.items()))
        else:
            bad = sorted(set(body) - set(_QUANTIZE_KEYS))
            if bad:
                raise FieldError(bad[0], f"unknown field; quantize takes {', '.join(_QUANTIZE_KEYS)}")
            for required in ("mode", "isa", "per_channel"):
                if required not in body:
                    raise FieldError(required, "missing")
            kwargs = dict(body)
            for name in ("operators", "nodes_to_exclude"):
                if isinstance(kwargs.get(name), list):
                    kwargs[name] = tuple(kwargs[name])
            step = Quantize(**kwargs)
        return VariantSpec(variant_id, entry["parent"], step, str(entry.get("description", "")))
    except FieldError as exc:
        prefix = "" if exc.field in ("id", "parent") else f"{kind}."
        raise ConfigError(f"{label} field '{prefix}{exc.field}': {exc}") from None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    items = [_toml_value(v) for v in value]
    if sum(len(i) for i in items) < 60:
        return f"[{', '.join(items)}]"
    return "[\n" + "".join(f"    {i},\n" for i in items) + "]"


def format_entry(spec: VariantSpec, where: str = "tool.ortgate.variants") -> str:
    """The TOML entry `parse_entry` reads back as the same spec (so the same content hash and the same graph)."""
    if not isinstance(spec.step, Optimize | Quantize):
        raise ValueError(f"{spec.id}: only an optimize or quantize step has an entry")
    key = spec.id if _BARE_KEY.match(spec.id) else json.dumps(spec.id)
    kind = spec.step.kind
    fields = {k: v for k, v in step_fields(spec.step).items()
              if k != "kind" and not (k == "calibration_samples" and v == 0)}
    if kind == "optimize":
        fields.update(dict(fields.pop("options", ())))
    lines = [f"[{where}.{key}]", f"parent = {_toml_value(spec.parent)}"]
    if spec.description:
        lines.append(f"description = {_toml_value(spec.description)}")
    lines += ["", f"[{where}.{key}.{kind}]", *(f"{k} = {_toml_value(v)}" for k, v in fields.items())]
    return "\n".join(lines) + "\n"


def parse_matrix(table: object, where: str) -> dict[str, VariantSpec]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table of variant entries ([{where}.<id>] with parent and a step)")
    return {str(vid): parse_entry(str(vid), entry, where) for vid, entry in table.items()}


# ------------------------------------------------------------------ the default set

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
