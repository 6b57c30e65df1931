import pytest

from ortgate.errors import ConfigError
from ortgate.spec.variants import (
    BASELINE_ID,
    DEFAULT_VARIANTS,
    REFERENCE_OPERATORS,
    Export,
    Optimize,
    Quantize,
    VariantSet,
    VariantSpec,
    describe_step,
    first_match,
)


def test_default_set_has_the_issue_variants_in_order():
    assert list(DEFAULT_VARIANTS.specs) == [
        "pytorch", "onnx", "O99", "dynamic-int8", "O99-dynamic-int8-arm64", "O99-dynamic-int8-avx2",
        "O99-dynamic-int8-avx512", "O99-dynamic-int8-avx512_vnni", "static-int8",
    ]
    arm64 = DEFAULT_VARIANTS.specs["O99-dynamic-int8-arm64"].step
    assert arm64.operators == REFERENCE_OPERATORS and arm64.per_channel is False and arm64.isa == "arm64"


def test_content_hash_is_stable_and_covers_the_whole_chain():
    h = DEFAULT_VARIANTS.content_hash("O99-dynamic-int8-arm64")
    assert h == DEFAULT_VARIANTS.content_hash("O99-dynamic-int8-arm64") and len(h) == 64
    # A change upstream (the parent's level) changes the descendant's hash.
    changed = dict(DEFAULT_VARIANTS.specs)
    changed["O99"] = VariantSpec("O99", "onnx", Optimize(2))
    assert VariantSet(changed).content_hash("O99-dynamic-int8-arm64") != h
    # Renaming does not: the hash is of steps, not ids.
    renamed = {"base": VariantSpec("base", None, Export()),
               "q": VariantSpec("q", "base", Quantize("dynamic", "arm64", True))}
    assert VariantSet(renamed).content_hash("q") == DEFAULT_VARIANTS.content_hash("dynamic-int8")


def test_content_hash_bytes_are_pinned():
    # Cache keys are made of these: a change here orphans every cache entry built before it.
    assert DEFAULT_VARIANTS.content_hash("O99-dynamic-int8-arm64") == (
        "675a17e206f7fd764b5a5bb42946d9d1769b11016be70142453f581d3e54e70d")
    assert DEFAULT_VARIANTS.content_hash("static-int8") == (
        "268cec08542efea6ab4daed5ad25b39c919f8850f9151e1650460e18e4464887")


def test_arm64_and_avx2_differ():
    assert DEFAULT_VARIANTS.content_hash("O99-dynamic-int8-arm64") != DEFAULT_VARIANTS.content_hash(
        "O99-dynamic-int8-avx2")


def test_hardware_specific_follows_level_99_down_the_chain():
    assert DEFAULT_VARIANTS.hardware_specific("O99")
    assert DEFAULT_VARIANTS.hardware_specific("O99-dynamic-int8-avx2")
    assert not DEFAULT_VARIANTS.hardware_specific("onnx")
    assert not DEFAULT_VARIANTS.hardware_specific("static-int8")


def test_select_by_name_and_glob_keeps_the_baseline_and_order():
    assert DEFAULT_VARIANTS.select(["O99-*-avx*"]) == [
        BASELINE_ID, "O99-dynamic-int8-avx2", "O99-dynamic-int8-avx512", "O99-dynamic-int8-avx512_vnni"]
    assert DEFAULT_VARIANTS.select(["static-int8", "onnx"]) == [BASELINE_ID, "onnx", "static-int8"]
    assert DEFAULT_VARIANTS.select(None) == list(DEFAULT_VARIANTS.specs)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown variant 'O3'.*O99-dynamic-int8-avx2"):
        DEFAULT_VARIANTS.select(["O3"])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Optimize(3), "level must be 0, 1, 2 or 99"),
        (lambda: Quantize("dynamic", "sse4", False), "unknown ISA preset 'sse4'"),
        (lambda: Quantize("static", "avx2", False), "calibration"),
        (lambda: Quantize("dynamic", "avx2", False, calibration="minmax", calibration_samples=8), "no calibration"),
        (lambda: Quantize("weird", "avx2", False), "mode"),
        (lambda: VariantSpec("bad id", None, Export()), "without spaces"),
        (lambda: VariantSpec("q", None, Quantize("dynamic", "avx2", False)), "needs a parent"),
        (lambda: VariantSet({"q": VariantSpec("q", "missing", Optimize(1))}), "parent 'missing'"),
    ],
)
def test_invalid_specs_say_what_is_wrong(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_first_match_takes_the_first_matching_glob():
    pairs = (("O99-*", 1), ("*int8*", 2), ("O99-dynamic-int8-arm64", 3))
    assert first_match(pairs, "O99-dynamic-int8-arm64") == 1
    assert first_match(pairs, "static-int8") == 2
    assert first_match(pairs, "onnx") is None
    assert first_match(pairs, "onnx", default=0) == 0
    assert first_match(pairs, "o99-x") is None  # case-sensitive, like variant ids


def test_describe_step_names_the_set_fields():
    assert describe_step(Export()) == "export"
    assert describe_step(Optimize(99)) == "level=99"
    assert describe_step(Optimize(preset="O2", options=(("fp16", True),))) == "preset=O2, fp16=True"
    assert describe_step(Quantize("dynamic", "arm64", True)) == "mode=dynamic, isa=arm64, per_channel=True"
    assert describe_step(Quantize("static", "avx2", False, ("MatMul",), "minmax", 8)) == (
        "mode=static, isa=avx2, per_channel=False, operators=('MatMul',), calibration=minmax, calibration_samples=8")
