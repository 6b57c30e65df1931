"""Presets and user matrices: what each preset holds, and user entries parsed from TOML."""

import dataclasses
import tomllib

import pytest

from ortgate.errors import ConfigError
from ortgate.spec.matrix import FULL_OPTION_TOGGLES, full, preset, quick, read_matrix_file, reference, resolve_matrix
from ortgate.spec.settings import read_pyproject, resolve_settings
from ortgate.spec.variants import (
    CALIBRATION_METHODS,
    DEFAULT_VARIANTS,
    ISA_PRESETS,
    OPTIMIZATION_OPTIONS,
    REFERENCE_OPERATORS,
    Optimize,
    Quantize,
    parse_matrix,
)


def test_option_names_match_the_installed_optimum():
    from optimum.onnxruntime.configuration import OptimizationConfig

    fields = {f.name for f in dataclasses.fields(OptimizationConfig) if f.name != "optimization_level"}
    assert set(OPTIMIZATION_OPTIONS) == fields


def test_every_toggle_of_full_is_a_real_option_and_moves_it_off_its_default():
    from optimum.onnxruntime.configuration import OptimizationConfig

    defaults = {f.name: f.default for f in dataclasses.fields(OptimizationConfig)}
    for _, option, value in FULL_OPTION_TOGGLES:
        assert defaults[option] is not value, option
    disable_flags = {o for o in OPTIMIZATION_OPTIONS if o.startswith("disable_") and o.endswith("_fusion")}
    assert disable_flags == {option for _, option, _ in FULL_OPTION_TOGGLES if option.startswith("disable_")}


def test_presets_hold_what_they_promise():
    assert list(preset("default").specs) == list(DEFAULT_VARIANTS.specs)
    assert list(quick().specs) == ["pytorch", "onnx", "O99", "dynamic-int8", "O99-dynamic-int8-arm64"]
    ref = reference()
    assert {"O1", "O2", "O99", "O99-gelu-approx", "O99-mask-index", "O99-no-attention-mask"} <= set(ref.specs)
    assert {ref.specs[f"O99-dynamic-int8-{isa}"].step.isa for isa in ISA_PRESETS} == set(ISA_PRESETS)
    assert ref.specs["O99-dynamic-int8-arm64"].step.operators == REFERENCE_OPERATORS
    assert {ref.specs[f"O99-dynamic-int8-arm64-{o}-ops"].step.operators for o in ("fused", "removed", "added")} == {
        "fused", "removed", "added"}
    assert ref.specs["O99-dynamic-int8-arm64-preset-ops"].step.operators is None
    assert ref.specs["static-int8-avx2-preset-ops"].step.mode == "static"


def test_full_is_the_cartesian_product_of_the_axes():
    specs = full().specs
    optimizations = [s for s in specs.values() if isinstance(s.step, Optimize)]
    dynamic = [s for s in specs.values() if isinstance(s.step, Quantize) and s.step.mode == "dynamic"]
    static = [s for s in specs.values() if isinstance(s.step, Quantize) and s.step.mode == "static"]
    assert len(optimizations) == 4 + 4 + len(FULL_OPTION_TOGGLES)
    assert {s.step.preset for s in optimizations} >= {"O1", "O2", "O3", "O4"}
    # export: 4 ISA x 2 per-channel x {reference, preset}; O99: 4 x 2 x 5 operator sets
    assert len(dynamic) == 4 * 2 * 2 + 4 * 2 * 5
    assert len(static) == 4 * len(CALIBRATION_METHODS) * 2 * 2
    assert {(s.step.calibration, s.step.format) for s in static} == {
        (m, f) for m in CALIBRATION_METHODS for f in ("QDQ", "QOperator")}
    assert len(set(specs)) == len(specs)


USER = """
[tool.ortgate.variants.O2-gelu]
parent = "onnx"
optimize = { level = 2, enable_gelu_approximation = true }
description = "level 2 with FastGelu"

[tool.ortgate.variants.O2-gelu-int8]
parent = "O2-gelu"
quantize = { mode = "dynamic", isa = "avx512_vnni", per_channel = true, operators = ["MatMul"] }

[tool.ortgate.variants.O2-gelu-int8-fused]
parent = "O2-gelu"
quantize = { mode = "dynamic", isa = "arm64", per_channel = false, operators = "fused" }

[tool.ortgate.variants.static-entropy]
parent = "onnx"

[tool.ortgate.variants.static-entropy.quantize]  # a step may also be written as its own table
mode = "static"
isa = "avx2"
per_channel = false
calibration = "entropy"
calibration_samples = 64
format = "QOperator"
"""


def test_a_user_matrix_in_pyproject_adds_to_the_preset(tmp_path):
    (tmp_path / "pyproject.toml").write_text(USER)
    settings = resolve_settings({"preset": "quick"}, read_pyproject(tmp_path), tmp_path)
    specs = settings.variant_set.specs
    assert list(specs)[:5] == list(quick().specs)
    assert settings.user_variant_ids == ("O2-gelu", "O2-gelu-int8", "O2-gelu-int8-fused", "static-entropy")
    assert specs["O2-gelu"].step == Optimize(2, (("enable_gelu_approximation", True),))
    assert specs["O2-gelu"].description == "level 2 with FastGelu"
    assert specs["O2-gelu-int8"].step == Quantize("dynamic", "avx512_vnni", True, ("MatMul",))
    assert specs["O2-gelu-int8-fused"].step.operators == "fused"
    assert specs["static-entropy"].step.format == "QOperator"
    assert [s.id for s in settings.variant_set.chain("O2-gelu-int8")] == ["onnx", "O2-gelu", "O2-gelu-int8"]
    assert settings.variant_set.select(["O2-*"]) == ["pytorch", "O2-gelu", "O2-gelu-int8", "O2-gelu-int8-fused"]


def test_a_matrix_file_given_by_option(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text(USER.replace("tool.ortgate.variants", "variants"))
    settings = resolve_settings({"matrix": str(path)}, {}, tmp_path)
    assert "static-entropy" in settings.variant_set.specs and settings.preset == "default"
    with pytest.raises(ConfigError, match="does not exist"):
        read_matrix_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "entry, match",
    [
        ('parent = "onnx"\noptimize = { level = 3 }',
         r"\[tool.ortgate.variants.bad\] field 'optimize.level': optimization level must be 0, 1, 2 or 99"),
        ('parent = "onnx"\noptimize = { level = 2, disable_gelu = true }',
         r"field 'optimize.disable_gelu': unknown optimization option 'disable_gelu' \(did you mean"),
        ('parent = "onnx"\noptimize = { level = 2, use_mask_index = "yes" }',
         r"field 'optimize.use_mask_index': .* must be true or false"),
        ('parent = "onnx"\noptimize = { preset = "O5" }', r"field 'optimize.preset': .*O1, O2, O3, O4"),
        ('parent = "O99"\nquantize = { mode = "dynamic", isa = "avx3", per_channel = true }',
         r"field 'quantize.isa': unknown ISA preset 'avx3'"),
        ('parent = "O99"\nquantize = { mode = "dynamic", isa = "arm64" }', r"field 'quantize.per_channel': missing"),
        ('parent = "O99"\nquantize = { mode = "dynamic", isa = "arm64", per_channel = true, operators = "weird" }',
         r"field 'quantize.operators': .*fused, removed, added"),
        ('parent = "O99"\nquantize = { mode = "dynamic", isa = "arm64", per_channel = true, operators = [] }',
         r"field 'quantize.operators': operators must be a non-empty list"),
        ('parent = "onnx"\nquantize = { mode = "static", isa = "arm64", per_channel = true, calibration = "kl", '
         'calibration_samples = 8 }', r"field 'quantize.calibration': .*minmax, entropy, percentile"),
        ('parent = "onnx"\nquantize = { mode = "static", isa = "arm64", per_channel = true, calibration = "minmax", '
         'calibration_samples = 0 }', r"field 'quantize.calibration_samples'"),
        ('parent = "onnx"\nquantize = { mode = "static", isa = "arm64", per_channel = true, calibration = "minmax", '
         'calibration_samples = 8, format = "QDQQ" }', r"field 'quantize.format'"),
        ('parent = "onnx"\nquantize = { mode = "dynamic", isa = "arm64", per_channel = true, colour = 1 }',
         r"field 'quantize.colour': unknown field"),
        ('optimize = { level = 2 }', r"field 'parent': missing"),
        ('parent = "onnx"', r"give exactly one step"),
        ('parent = "onnx"\noptimize = { level = 2 }\nquantize = { mode = "dynamic" }', r"give exactly one step"),
        ('parent = "onnx"\noptimize = { level = 2 }\ncolour = "red"', r"field 'colour': unknown field"),
        ('parent = "nowhere"\noptimize = { level = 2 }', r"names parent 'nowhere', which is not defined"),
        ('parent = "pytorch"\noptimize = { level = 2 }', r"the PyTorch baseline is not an ONNX graph"),
    ],
)
def test_an_invalid_entry_names_the_entry_and_the_field(tmp_path, entry, match):
    (tmp_path / "pyproject.toml").write_text(f"[tool.ortgate.variants.bad]\n{entry}\n")
    with pytest.raises(ConfigError, match=match):
        resolve_settings({}, read_pyproject(tmp_path), tmp_path)


def test_a_user_entry_may_not_shadow_a_preset_variant():
    table = tomllib.loads('[O99]\nparent = "onnx"\noptimize = { level = 2 }')
    with pytest.raises(ConfigError, match=r"\[variants.O99\]: variant 'O99' is already defined \(by the preset"):
        resolve_matrix("default", [("variants", table)])


def test_a_cycle_is_refused():
    table = tomllib.loads('[a]\nparent = "b"\noptimize = { level = 2 }\n[b]\nparent = "a"\noptimize = { level = 1 }')
    with pytest.raises(ConfigError, match="cycle"):
        resolve_matrix("quick", [("variants", table)])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown variant preset 'huge'"):
        preset("huge")
    with pytest.raises(ConfigError, match="'preset' must be one of default, quick, reference, full, got 'huge'"):
        resolve_settings({"preset": "huge"}, {}, ".")


def test_parse_matrix_needs_tables():
    with pytest.raises(ConfigError, match="must be a table"):
        parse_matrix({"x": 3}, "variants")


def test_hash_ignores_unset_fields_so_adding_one_keeps_old_cache_keys():
    # An optional field left unset (None) does not enter the hash.
    a = dataclasses.replace(Quantize("dynamic", "arm64", True), format=None)
    from ortgate.spec.variants import step_fields

    assert "format" not in step_fields(a) and "operators" not in step_fields(a)
    assert step_fields(Optimize(99)) == {"level": 99, "options": (), "kind": "optimize"}


def test_a_preset_with_options_over_its_own_fields():
    from ortgate.build.steps import optimization_config

    o3 = optimization_config(Optimize(preset="O3", options=(("enable_gelu_approximation", False),)))
    assert o3.optimization_level == 2 and o3.enable_gelu_approximation is False and not o3.optimize_for_gpu
    o1 = optimization_config(Optimize(preset="O1", options=(("disable_attention_fusion", True),)))
    assert o1.optimization_level == 1 and o1.enable_transformers_specific_optimizations is False
    assert o1.disable_attention_fusion is True
    o4 = optimization_config(Optimize(preset="O4"))
    assert o4.fp16 and o4.optimize_for_gpu and Optimize(preset="O4").for_gpu
    assert optimization_config(Optimize(99, (("use_mask_index", True),))).use_mask_index


def test_levels_must_be_integers():
    with pytest.raises(ConfigError, match="level must be 0, 1, 2 or 99"):
        Optimize(2.0)
