"""Named variant matrices (presets) and the user's own matrix, resolved into one VariantSet.

Presets:
  default    the curated set the suite runs when nothing is chosen (9 variants)
  quick      a handful, for CI: export, O99, dynamic int8 of each
  reference  every variant of the reference workflow (distilbert-sst2 on amazon_polarity, 2022):
             levels O1/O2/O99, GELU approximation and the mask options, dynamic int8 with the four ISA
             presets, per-channel, and the operator lists it tried, and its static int8 variant
  full       the cartesian product of the axes below (optimization, dynamic and static quantization)

User matrices add entries ([tool.ortgate.variants.<id>] or a TOML file given by --ortgate-matrix) to
the chosen preset; each entry names a parent variant and one step, see `variants.parse_entry`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ortgate.errors import ConfigError
from ortgate.spec.variants import (
    BASELINE_ID,
    CALIBRATION_METHODS,
    DEFAULT_VARIANTS,
    DERIVED_OPERATORS,
    EXPORT_ID,
    ISA_PRESETS,
    OPTIMIZATION_PRESETS,
    QUANT_FORMATS,
    REFERENCE_OPERATORS,
    Optimize,
    Quantize,
    VariantSet,
    VariantSpec,
    parse_matrix,
)

PRESET_NAMES = ("default", "quick", "reference", "full")

# The axes of `full`.
FULL_LEVELS = (0, 1, 2, 99)
# Options toggled one at a time on level 99, each away from its OptimizationConfig default.
FULL_OPTION_TOGGLES = (
    ("gelu-approx", "enable_gelu_approximation", True),
    ("mask-index", "use_mask_index", True),
    ("no-attention-mask", "no_attention_mask", True),
    ("no-transformers-opt", "enable_transformers_specific_optimizations", False),
    *((f"no-{name.replace('_', '-')}-fusion", f"disable_{name}_fusion", True)
      for name in ("gelu", "attention", "bias_gelu", "layer_norm", "skip_layer_norm", "bias_skip_layer_norm",
                   "skip_group_norm", "bias_splitgelu", "bias_add")),
    # these two fusions are off by default: the toggle turns them on
    *((f"with-{name.replace('_', '-')}-fusion", f"disable_{name}_fusion", False)
      for name in ("group_norm", "embed_layer_norm")),
)
FULL_QUANTIZE_PARENTS = (EXPORT_ID, "O99")  # dynamic int8 of the export and of the level-99 graph
FULL_OPERATOR_SETS = ("reference", "preset", *DERIVED_OPERATORS)
FULL_CALIBRATION_SAMPLES = (32, 128)
STATIC_PARENT = EXPORT_ID  # static int8 of the plain export (the reference quantized it so)
# MatMul only: with the presets' full lists, the entropy and percentile calibrators must histogram the
# attention mask's -3.4e38 bias and fail ("Too many bins for data range"); the reference preset keeps a
# static variant with the preset's list (minmax).
STATIC_OPERATORS = ("MatMul",)


def _spec(variant_id: str, parent: str | None, step, description: str) -> VariantSpec:
    return VariantSpec(variant_id, parent, step, description)


def _operators(name: str):
    return {"reference": REFERENCE_OPERATORS, "preset": None}.get(name, name)


def _ops_label(operators) -> str:
    if operators is None:
        return "the preset's default operators"
    if operators == REFERENCE_OPERATORS:
        return "the reference operators"
    if isinstance(operators, str):
        return f"the {operators} operators of the parent graph"
    return "operators " + ", ".join(operators)


def dynamic_id(parent: str, isa: str, per_channel: bool, ops: str) -> str:
    return f"{parent}-dynamic-int8-{isa}{'-per-channel' if per_channel else ''}" + \
        ("" if ops == "reference" else f"-{ops}-ops")


def static_id(parent: str, isa: str, method: str, samples: int, fmt: str) -> str:
    return f"{parent}-static-int8-{isa}-{method}-{samples}-{fmt.lower()}"


def _base() -> list[VariantSpec]:
    return [DEFAULT_VARIANTS.specs[BASELINE_ID], DEFAULT_VARIANTS.specs[EXPORT_ID]]


def quick() -> VariantSet:
    keep = (BASELINE_ID, EXPORT_ID, "O99", "dynamic-int8", "O99-dynamic-int8-arm64")
    return VariantSet({k: DEFAULT_VARIANTS.specs[k] for k in keep})


def reference() -> VariantSet:
    d = DEFAULT_VARIANTS.specs
    specs = [
        *_base(),
        _spec("O1", EXPORT_ID, Optimize(preset="O1"), "Optimum O1: basic general optimizations"),
        _spec("O2", EXPORT_ID, Optimize(preset="O2"), "Optimum O2: extended optimizations, transformer fusions"),
        d["O99"],
        _spec("O99-gelu-approx", EXPORT_ID, Optimize(99, (("enable_gelu_approximation", True),)),
              "level 99 with GELU approximation (FastGelu)"),
        _spec("O99-mask-index", EXPORT_ID, Optimize(99, (("use_mask_index", True),)),
              "level 99, attention mask converted to a mask index"),
        _spec("O99-no-attention-mask", EXPORT_ID, Optimize(99, (("no_attention_mask", True),)),
              "level 99, attention fused without the mask input"),
        d["dynamic-int8"],
        *(d[f"O99-dynamic-int8-{isa}"] for isa in ISA_PRESETS),
        _spec("O99-dynamic-int8-arm64-per-channel", "O99",
              Quantize("dynamic", "arm64", True, REFERENCE_OPERATORS),
              "level 99, then dynamic int8, arm64 preset, reference operators, per-channel"),
        *(_spec(f"O99-dynamic-int8-arm64-{ops}-ops", "O99", Quantize("dynamic", "arm64", False, _operators(ops)),
                f"level 99, then dynamic int8, arm64 preset, {_ops_label(_operators(ops))}")
          for ops in ("preset", *DERIVED_OPERATORS)),
        d["static-int8"],
        _spec("static-int8-avx2-preset-ops", EXPORT_ID,
              Quantize("static", "avx2", False, None, "minmax", 128),
              "static int8 as the reference did it: avx2 preset, per-tensor, the preset's operators (QDQ), "
              "minmax calibration on 128 held-out rows"),
    ]
    return VariantSet({s.id: s for s in specs})


def full() -> VariantSet:
    specs = _base()
    for level in FULL_LEVELS:
        vid = "O99" if level == 99 else f"level{level}"
        specs.append(_spec(vid, EXPORT_ID, Optimize(level), f"ORT optimization level {level}"))
    for preset in OPTIMIZATION_PRESETS:
        specs.append(_spec(preset, EXPORT_ID, Optimize(preset=preset), f"Optimum {preset} optimization preset"))
    for slug, option, value in FULL_OPTION_TOGGLES:
        specs.append(_spec(f"O99-{slug}", EXPORT_ID, Optimize(99, ((option, value),)),
                           f"level 99 with {option}={str(value).lower()}"))
    for parent in FULL_QUANTIZE_PARENTS:
        for isa in ISA_PRESETS:
            for per_channel in (False, True):
                for ops in FULL_OPERATOR_SETS:
                    if parent == EXPORT_ID and ops in DERIVED_OPERATORS:
                        continue  # the export has no fused operators and no optimization difference
                    operators = _operators(ops)
                    specs.append(_spec(
                        dynamic_id(parent, isa, per_channel, ops), parent,
                        Quantize("dynamic", isa, per_channel, operators),
                        f"dynamic int8 of {parent}, {isa} preset, {'per-channel' if per_channel else 'per-tensor'}, "
                        f"{_ops_label(operators)}"))
    for isa in ISA_PRESETS:
        for method in CALIBRATION_METHODS:
            for samples in FULL_CALIBRATION_SAMPLES:
                for fmt in QUANT_FORMATS:
                    specs.append(_spec(
                        static_id(STATIC_PARENT, isa, method, samples, fmt), STATIC_PARENT,
                        Quantize("static", isa, True, STATIC_OPERATORS, method, samples, fmt),
                        f"static int8 of the export, {isa} preset, MatMul, per-channel, {fmt}, {method} "
                        f"calibration on {samples} held-out rows"))
    return VariantSet({s.id: s for s in specs})


def preset(name: str) -> VariantSet:
    builders = {"default": lambda: DEFAULT_VARIANTS, "quick": quick, "reference": reference, "full": full}
    if name not in builders:
        raise ConfigError(f"unknown variant preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return builders[name]()


def read_matrix_file(path: Path) -> dict:
    """A TOML file with `[variants.<id>]` tables (or a pyproject.toml's [tool.ortgate.variants])."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--ortgate-matrix {path} does not exist; give a TOML file with [variants.<id>] tables")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--ortgate-matrix {path} is not valid TOML: {exc}") from None
    table = doc.get("variants", doc.get("tool", {}).get("ortgate", {}).get("variants"))
    if table is None:
        raise ConfigError(f"--ortgate-matrix {path} has no [variants.<id>] tables")
    return table


def resolve_matrix(preset_name: str, user_tables: list[tuple[str, dict]]) -> tuple[VariantSet, tuple[str, ...]]:
    """The preset plus every user entry; returns the set and the user entries' ids (asked for explicitly)."""
    variants = preset(preset_name)
    user_ids: list[str] = []
    for where, table in user_tables:
        extra = parse_matrix(table, where)
        variants = variants.merged(extra, where)
        user_ids.extend(extra)
    return variants, tuple(user_ids)

