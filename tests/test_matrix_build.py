"""Building the reference and full matrices' kinds of variants on the tiny model: presets, option
toggles, derived operator lists, static calibration methods and formats, failures kept as results,
parallel builds, and hardware-specific graphs refused on another CPU."""

import numpy as np
import onnx
import pytest

from ortgate.build import builder as builder_module
from ortgate.build import steps as steps_module
from ortgate.build.builder import Builder, NotApplicable
from ortgate.build.graph import graph_summary
from ortgate.build.runtime import OnnxPredictor, TorchPredictor, predict_logits
from ortgate.cache import Cache
from ortgate.errors import BuildError
from ortgate.sources.models import load_model_source
from ortgate.spec.matrix import reference
from ortgate.spec.variants import Export, Optimize, Quantize, VariantSet, VariantSpec
from tiny import sentences

TEXTS, _ = sentences(60, seed=7)


def _set(*specs):
    base = [VariantSpec("pytorch"), VariantSpec("onnx", None, Export())]
    return VariantSet({s.id: s for s in [*base, *specs]})


@pytest.fixture(scope="module")
def source(tiny_model):
    return load_model_source(str(tiny_model))


@pytest.fixture(scope="module")
def ref_builder(source, tmp_path_factory):
    builder = Builder(reference(), source, Cache(tmp_path_factory.mktemp("ref")), TEXTS[:32], max_length=32)
    builder.build_all([v for v in reference().specs if v != "pytorch"])
    return builder


def test_the_reference_preset_builds_on_the_tiny_model(ref_builder, source):
    torch_logits = predict_logits(TorchPredictor(source.path, 1, 32), TEXTS[32:])
    for vid in reference().specs:
        if vid == "pytorch":
            continue
        assert ref_builder.status(vid) == "built", (vid, ref_builder.failures.get(vid))
        built = ref_builder.build(vid)
        onnx.checker.check_model(str(built.onnx_path))
        logits = predict_logits(OnnxPredictor(built.path, 1, 32), TEXTS[32:])
        agreement = np.mean(logits.argmax(-1) == torch_logits.argmax(-1))
        assert agreement >= 0.8, f"{vid} agrees with PyTorch on {agreement:.0%} of rows"


def test_options_and_presets_change_the_graph_as_documented(ref_builder):
    g = {v: graph_summary(ref_builder.build(v).onnx_path) for v in ("O1", "O2", "O99", "O99-gelu-approx")}
    assert g["O1"]["fused_operators"] == {}  # O1: no transformer fusions
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= set(g["O2"]["fused_operators"])
    assert "FastGelu" in g["O99-gelu-approx"]["fused_operators"] and "BiasGelu" not in g["O99-gelu-approx"][
        "fused_operators"]


def test_derived_operator_lists_are_read_off_the_graphs(ref_builder):
    fused = ref_builder.build("O99-dynamic-int8-arm64-fused-ops").metadata["operators_quantized"]
    removed = ref_builder.build("O99-dynamic-int8-arm64-removed-ops").metadata["operators_quantized"]
    added = ref_builder.build("O99-dynamic-int8-arm64-added-ops").metadata["operators_quantized"]
    o99 = graph_summary(ref_builder.build("O99").onnx_path)
    export = graph_summary(ref_builder.build("onnx").onnx_path)
    assert set(fused) <= set(o99["fused_operators"]) | {"LayerNormalization"} and "Attention" in fused
    assert "MatMul" in removed and export["operators"]["MatMul"] > o99["operators"]["MatMul"]
    assert "Attention" in added and "MatMul" not in added
    # quantizing Attention turns it into QAttention; quantizing the removed operators quantizes the MatMuls
    assert graph_summary(ref_builder.build("O99-dynamic-int8-arm64-fused-ops").onnx_path)["fused_operators"].get(
        "QAttention")
    assert graph_summary(ref_builder.build("O99-dynamic-int8-arm64-removed-ops").onnx_path)[
        "float_weight_matmuls"] == 0


def test_a_derived_list_with_nothing_to_derive_is_not_applicable(source, tmp_path):
    # The export compared with itself: optimization removed nothing.
    variants = _set(VariantSpec("removed-of-export", "onnx", Quantize("dynamic", "arm64", False, "removed")),
                    VariantSpec("child", "removed-of-export", Optimize(1)))
    builder = Builder(variants, source, Cache(tmp_path), TEXTS[:8], max_length=32)
    builder.build_all(["removed-of-export", "child"])
    assert builder.status("removed-of-export") == "not applicable"
    assert "lost no operators to optimization" in builder.failures["removed-of-export"].reason
    assert builder.status("child") == "not applicable"
    assert builder.failures["child"].reason.startswith("parent removed-of-export:")


def test_static_calibration_methods_and_formats(source, tmp_path):
    variants = _set(*(VariantSpec(f"s-{m}-{f}", "onnx", Quantize("static", "arm64", True, ("MatMul",), m, 16, f))
                      for m in ("minmax", "entropy", "percentile") for f in ("QDQ", "QOperator")))
    builder = Builder(variants, source, Cache(tmp_path), TEXTS[:16], max_length=32)
    builder.build_all([v for v in variants.specs if v.startswith("s-")])
    qdq = graph_summary(builder.build("s-minmax-QDQ").onnx_path)["quantized_nodes"]
    qop = graph_summary(builder.build("s-minmax-QOperator").onnx_path)["quantized_nodes"]
    assert qdq["qdq_pairs"] > 0 and qdq["qlinear"] == 0
    assert qop["qlinear"] > 0 and qop["qdq_pairs"] == 0
    assert builder.build("s-minmax-QDQ").metadata["calibration_rows_used"] == 16
    for vid in variants.specs:
        if vid.startswith("s-"):  # each either builds or is a kept failure with its reason, never a crash
            status = builder.status(vid)
            assert status in ("built", "build failed"), vid
            if status == "build failed":
                assert builder.failures[vid].reason


def test_a_build_failure_is_kept_with_its_first_line_and_fails_its_descendants(source, tmp_path, monkeypatch):
    real_optimize = steps_module.optimize

    def optimize(parent_dir, out, step):
        if dict(step.options).get("no_attention_mask"):
            raise RuntimeError("simulated optimizer crash\nwith a long traceback")
        return real_optimize(parent_dir, out, step)

    monkeypatch.setattr(steps_module, "optimize", optimize)
    variants = _set(VariantSpec("broken", "onnx", Optimize(99, (("no_attention_mask", True),))),
                    VariantSpec("broken-int8", "broken", Quantize("dynamic", "arm64", False)),
                    VariantSpec("fine", "onnx", Optimize(1)))
    logs = []
    builder = Builder(variants, source, Cache(tmp_path), TEXTS[:8], max_length=32, log=logs.append)
    builder.build_all(["broken-int8", "fine"])
    assert builder.status("fine") == "built"
    assert builder.status("broken") == "build failed"
    assert builder.failures["broken"].reason == "RuntimeError: simulated optimizer crash"
    assert builder.status("broken-int8") == "build failed"
    assert "its parent broken was not" in str(builder.failures["broken-int8"])
    with pytest.raises(BuildError, match="building variant broken failed"):
        builder.build("broken")
    assert not list((tmp_path / "variants").glob("broken-*")), "a failed build left a cache entry"
    assert any("build failed: RuntimeError: simulated optimizer crash" in line for line in logs)


def test_parallel_builds_give_the_same_graphs_as_one_at_a_time(source, tmp_path):
    variants = _set(VariantSpec("L1", "onnx", Optimize(1)), VariantSpec("L2", "onnx", Optimize(2)),
                    VariantSpec("L2-q", "L2", Quantize("dynamic", "avx2", True)),
                    VariantSpec("q", "onnx", Quantize("dynamic", "arm64", True)),
                    VariantSpec("none", "onnx", Quantize("dynamic", "arm64", True, "added")))
    ids = ["L1", "L2", "L2-q", "q", "none"]
    one = Builder(variants, source, Cache(tmp_path / "one"), TEXTS[:8], max_length=32)
    one.build_all(ids, jobs=1)
    two = Builder(variants, source, Cache(tmp_path / "two"), TEXTS[:8], max_length=32)
    done = []
    two.build_all(ids, jobs=2, on_done=done.append)
    assert sorted(done) == sorted(ids + ["onnx"])
    for vid in ids[:-1]:
        assert two.status(vid) == "built"
        assert two.build(vid).graph_sha256 == one.build(vid).graph_sha256, vid
    assert two.status("none") == "not applicable" and isinstance(two.failures["none"], NotApplicable)


def test_a_level_99_graph_from_another_cpu_is_not_loaded_and_is_rebuilt(source, tmp_path, monkeypatch):
    variants = _set(VariantSpec("O99", "onnx", Optimize(99)), VariantSpec("L2", "onnx", Optimize(2)))
    cache = Cache(tmp_path)
    monkeypatch.setattr(builder_module, "fingerprint_id", lambda fp=None: "othercpu0001")
    elsewhere = Builder(variants, source, cache, TEXTS[:8], max_length=32)
    first, portable = elsewhere.build("O99"), elsewhere.build("L2")
    monkeypatch.undo()
    logs = []
    here = Builder(variants, source, cache, TEXTS[:8], max_length=32, log=logs.append)
    again = here.build("O99")
    assert again.path != first.path and not again.cache_hit
    refusal = [line for line in logs if "built on another CPU" in line]
    assert refusal and "fingerprint othercpu0001" in refusal[0] and "layout transforms" in refusal[0]
    assert again.metadata["cpu_id"] != "othercpu0001"
    # a portable (level-2) graph is shared across CPUs
    assert here.build("L2").path == portable.path and here.build("L2").cache_hit
