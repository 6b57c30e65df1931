"""Each variant builder on the tiny model: real Optimum exports, ORT optimization and quantization."""

import json

import numpy as np
import onnx
import pytest

from ortgate.build import builder as builder_module
from ortgate.build import steps as steps_module
from ortgate.build.builder import Builder, BuildStatus, NotApplicable, build_key, calibration_fingerprint
from ortgate.build.graph import graph_summary
from ortgate.build.runtime import OnnxPredictor, TorchPredictor, predict_logits
from ortgate.cache import Cache
from ortgate.errors import BuildError
from ortgate.sources.models import load_model_source
from ortgate.spec.variants import DEFAULT_VARIANTS
from tiny import sentences

TEXTS, LABELS = sentences(40, seed=11)
ONNX_VARIANTS = [v for v in DEFAULT_VARIANTS.specs if v != "pytorch"]


@pytest.fixture(scope="module")
def source(tiny_model):
    return load_model_source(str(tiny_model))


@pytest.fixture(scope="module")
def builder(source, tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("cache"))
    return Builder(DEFAULT_VARIANTS, source, cache, TEXTS[:16], max_length=32)


@pytest.fixture(scope="module")
def reference_logits(source):
    return predict_logits(TorchPredictor(source.path, 1, 32), TEXTS)


@pytest.mark.parametrize("variant_id", ONNX_VARIANTS)
def test_each_variant_builds_loads_and_agrees_with_pytorch(builder, reference_logits, variant_id):
    built = builder.build(variant_id)
    onnx.checker.check_model(str(built.onnx_path))
    assert (built.path / "config.json").is_file() and (built.path / "tokenizer.json").is_file()
    logits = predict_logits(OnnxPredictor(built.path, 1, 32), TEXTS)
    assert logits.shape == reference_logits.shape
    agreement = np.mean(logits.argmax(-1) == reference_logits.argmax(-1))
    assert agreement >= 0.9, f"{variant_id} agrees with PyTorch on only {agreement:.0%} of rows"
    if variant_id in ("onnx", "O99"):  # fp32 graphs: same numbers up to float rounding
        np.testing.assert_allclose(logits, reference_logits, atol=1e-4)


def test_graphs_show_what_each_step_did(builder):
    export = graph_summary(builder.build("onnx").onnx_path)
    o99 = graph_summary(builder.build("O99").onnx_path)
    arm64 = graph_summary(builder.build("O99-dynamic-int8-arm64").onnx_path)
    static = graph_summary(builder.build("static-int8").onnx_path)
    assert export["fused_operators"] == {}
    assert o99["fused_operators"]["Attention"] == 2 and o99["fused_operators"]["SkipLayerNormalization"] >= 2
    assert o99["nodes"] < export["nodes"]
    assert arm64["fused_operators"].get("QAttention") == 2 and arm64["quantized_operators"]["MatMulInteger"] > 0
    assert static["quantized_operators"]["QuantizeLinear"] > 0  # QDQ format
    assert "INT8" in arm64["initializer_types"] and "UINT8" in graph_summary(
        builder.build("O99-dynamic-int8-avx2").onnx_path)["initializer_types"]


def test_quantizing_an_optimized_graph_needs_the_shape_inference_workaround(builder, tmp_path):
    """Without symbolic shape inference, ORT's quantizer fails on the fused graph (optimum#2186)."""
    step = DEFAULT_VARIANTS.specs["O99-dynamic-int8-arm64"].step
    with pytest.raises(RuntimeError, match="Unable to find data type"):
        steps_module.quantize(builder.build("O99").path, tmp_path, step, [], 32, infer_shapes_first=False)


def test_second_builder_hits_the_cache(builder, source):
    builder.build("O99-dynamic-int8-avx2")
    again = Builder(DEFAULT_VARIANTS, source, builder.cache, TEXTS[:16], max_length=32)
    assert again.build("O99-dynamic-int8-avx2").cache_hit
    assert again.build("onnx").cache_hit


def test_corrupt_onnx_in_cache_is_rebuilt(builder, source):
    built = builder.build("dynamic-int8")
    data = built.onnx_path.read_bytes()
    built.onnx_path.write_bytes(data[: len(data) // 2])  # a truncated file, as after a crash or full disk
    notes = []
    fresh = Builder(DEFAULT_VARIANTS, source, builder.cache, TEXTS[:16], max_length=32, log=notes.append)
    rebuilt = fresh.build("dynamic-int8")
    assert not rebuilt.cache_hit and any("truncated" in n for n in notes)
    onnx.checker.check_model(str(rebuilt.onnx_path))


def test_key_covers_cpu_only_for_hardware_specific_graphs(source, monkeypatch):
    keys = {v: build_key(DEFAULT_VARIANTS, v, source, "cal") for v in ("onnx", "O99", "O99-dynamic-int8-arm64")}
    monkeypatch.setattr(builder_module, "cpu_fingerprint", lambda: {"arch": "aarch64", "flags": ["asimddp"]})
    moved = {v: build_key(DEFAULT_VARIANTS, v, source, "cal") for v in keys}
    assert moved["onnx"] == keys["onnx"]
    assert moved["O99"] != keys["O99"] and moved["O99-dynamic-int8-arm64"] != keys["O99-dynamic-int8-arm64"]


def test_key_covers_calibration_rows_only_for_static(source):
    def key(variant, calibration):
        return build_key(DEFAULT_VARIANTS, variant, source, calibration)

    assert key("static-int8", "a") != key("static-int8", "b")
    assert key("dynamic-int8", "a") == key("dynamic-int8", "b")


def test_key_covers_library_versions(source, monkeypatch):
    before = build_key(DEFAULT_VARIANTS, "onnx", source, None)
    monkeypatch.setattr(builder_module, "library_versions", lambda: {"onnxruntime": "9.9.9"})
    assert build_key(DEFAULT_VARIANTS, "onnx", source, None) != before


def test_build_failure_names_the_variant(source, tmp_path):
    broken = Builder(DEFAULT_VARIANTS, source, Cache(tmp_path), [], max_length=32)
    with pytest.raises(BuildError, match="building variant static-int8 failed.*calibration rows"):
        broken.build("static-int8")
    with pytest.raises(BuildError, match="PyTorch baseline"):
        broken.build("pytorch")


def test_status_is_a_string_enum(source, tmp_path):
    fresh = Builder(DEFAULT_VARIANTS, source, Cache(tmp_path), [], max_length=32)
    assert fresh.status("onnx") is BuildStatus.PENDING and fresh.status("onnx") == "pending"
    fresh.mark_not_applicable("O99", "no such CPU")
    assert fresh.status("O99") == "not applicable" and isinstance(fresh.failures["O99"], NotApplicable)
    fresh.failures["static-int8"] = BuildError("building variant static-int8 failed: boom\ndetails")
    assert fresh.status("static-int8") is BuildStatus.BUILD_FAILED
    assert fresh.failures["static-int8"].reason == "building variant static-int8 failed: boom"
    assert json.dumps([fresh.status("O99"), BuildStatus.BUILT]) == '["not applicable", "built"]'
    assert f"{BuildStatus.BUILD_FAILED}" == "build failed"


def test_calibration_fingerprint_bytes_are_pinned():
    # Part of static variants' cache keys: a change here orphans their cache entries.
    assert calibration_fingerprint([], 128) == "b40ce3749e8504b68bb5d79a5a6bde87a7cf31ec728e09ab824d807bc82010dc"
    assert calibration_fingerprint(["héllo wörld", "ünïcode ★", 'a"b'], 16) == (
        "f9e4563cb85e97b64f2f2514a562526c01d6e116d02df7a25225e9af3b10581e")
