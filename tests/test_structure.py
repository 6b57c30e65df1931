"""Structural checks: rules from each variant's definition, and the recorded expected structure that
catches a lost fusion (shown by building the same variant without it)."""

import json

import pytest

from ortgate.build.builder import Builder
from ortgate.build.graph import graph_summary
from ortgate.build.plan import explicit_variant_ids, not_applicable_reason
from ortgate.cache import Cache
from ortgate.sources.models import load_model_source
from ortgate.spec.matrix import full
from ortgate.spec.variants import Export, Optimize, Quantize, VariantSet, VariantSpec
from ortgate.verdict.structure import (
    StructureRecords,
    compare_structure,
    cpu_independent_expectation,
    layout_rewritten_nodes,
    rule_problems,
)
from tiny import sentences

TEXTS, _ = sentences(20, seed=3)
VARIANTS = VariantSet({s.id: s for s in (
    VariantSpec("pytorch"),
    VariantSpec("onnx", None, Export()),
    VariantSpec("O2", "onnx", Optimize(2)),
    VariantSpec("O2-no-attention", "onnx", Optimize(2, (("disable_attention_fusion", True),))),
    VariantSpec("O2-no-skip-ln", "onnx", Optimize(2, (("disable_skip_layer_norm_fusion", True),))),
    VariantSpec("O2-int8", "O2", Quantize("dynamic", "arm64", False, ("MatMul",))),
    VariantSpec("O2-int8-attention-only", "O2", Quantize("dynamic", "arm64", False, ("Attention",))),
)})


@pytest.fixture(scope="module")
def graphs(tiny_model, tmp_path_factory):
    builder = Builder(VARIANTS, load_model_source(str(tiny_model)), Cache(tmp_path_factory.mktemp("c")), TEXTS,
                      max_length=32)
    builder.build_all([v for v in VARIANTS.specs if v != "pytorch"])
    out = {}
    for vid in VARIANTS.specs:
        if vid != "pytorch":
            built = builder.build(vid)
            out[vid] = (graph_summary(built.onnx_path), built.metadata.get("operators_quantized"))
    return out


def _rules(graphs, vid, share=0.99, graph=None, model_type="bert"):
    fp32 = VARIANTS.fp32_ancestor(vid)
    return rule_problems(VARIANTS, vid, graph or graphs[vid][0], graphs[fp32][0] if fp32 else None, model_type,
                         graphs[vid][1], share, graphs["onnx"][0])


def test_fusion_rules_hold_and_respect_the_disable_flags(graphs):
    assert _rules(graphs, "O2") == []
    assert _rules(graphs, "O2-no-attention") == []  # fusion disabled on purpose: not expected
    assert _rules(graphs, "O2-no-skip-ln") == []
    unfused = {**graphs["O2"][0], "fused_operators": {"BiasGelu": 2}}
    problems = _rules(graphs, "O2", graph=unfused)
    assert len(problems) == 2 and "no Attention fusion in a level-2 graph of a bert model" in problems[0]
    assert "no SkipLayerNormalization fusion" in problems[1]
    assert _rules(graphs, "O2", graph=unfused, model_type="gpt2") == []  # no fusions known for it: no rule


def test_fusion_rules_follow_the_model_type_and_the_export(graphs):
    assert graphs["onnx"][0]["operators"]["Softmax"] == 2  # two attention blocks
    half = {**graphs["O2"][0], "fused_operators": {**graphs["O2"][0]["fused_operators"], "Attention": 1}}
    assert _rules(graphs, "O2", graph=half) == ["Attention fused in 1 of the 2 attention blocks of a level-2 graph "
                                                 "of a bert model"]
    assert _rules(graphs, "O2", graph=half, model_type="albert") == []  # ORT fuses the first of its shared layers
    no_attention = {**graphs["O2"][0], "fused_operators": {"SkipLayerNormalization": 4}}
    for model_type in ("mpnet", "deberta-v2"):  # ORT writes no Attention fusion for them
        assert _rules(graphs, "O2", graph=no_attention, model_type=model_type) == []
    assert "no Attention fusion" in _rules(graphs, "O2", graph=no_attention, model_type="roberta")[0]


def test_int8_rules_are_stated_over_what_was_asked_to_be_quantized(graphs):
    assert _rules(graphs, "O2-int8") == []
    assert graphs["O2-int8"][0]["float_weight_matmuls"] == 0
    # Quantizing only Attention leaves the MatMuls in fp32: allowed, since MatMul was not asked for; the
    # Attention weights were, and they are int8.
    attention_only = graphs["O2-int8-attention-only"][0]
    assert attention_only["float_weight_matmuls"] > 0 and "Attention" not in attention_only["fused_operators"]
    assert _rules(graphs, "O2-int8-attention-only") == []
    # The tiny model's embeddings dominate its file (an int8 graph is most of its parent's size), which a
    # file-size rule misjudged; the share of the asked-for weights does not depend on them.
    assert graphs["O2-int8"][0]["size_bytes"] / graphs["O2"][0]["size_bytes"] > 0.75
    # A quantizer that left two MatMul weights in fp32 (as nodes_to_exclude would):
    parent = graphs["O2"][0]["float_weight_elements_by_op"]
    asked = parent["MatMul"]  # O2-int8 asked for MatMul only
    left = {**graphs["O2-int8"][0], "float_weight_matmuls": 2,
            "float_weight_elements_by_op": {"MatMul": 2 * 32 * 64, "Gather": 999}}
    problems = _rules(graphs, "O2-int8", graph=left)
    assert "2 MatMul nodes still have fp32 weights" in problems[0]
    assert f"4,096 of the {asked:,} fp32 weight parameters that MatMul read" in problems[1]
    assert _rules(graphs, "O2-int8", graph=left, share=0.5) == problems[:1]


def test_only_operators_the_quantizer_handles_in_its_mode_are_held_to_the_rule():
    from ortgate.verdict.structure import quantizable_operators

    ops = ["MatMul", "Attention", "LayerNormalization", "Gemm"]
    assert quantizable_operators(Quantize("dynamic", "arm64", True, tuple(ops)), ops) == ["MatMul", "Attention"]
    static = Quantize("static", "arm64", True, tuple(ops), "minmax", 8)
    assert quantizable_operators(static, ops) == ["MatMul", "LayerNormalization", "Gemm"]


def test_a_removed_fusion_fails_against_the_recorded_structure(graphs, tmp_path):
    records = StructureRecords(tmp_path, "tiny model")
    versions = {"onnxruntime": "1.32.0", "optimum": "2.1.0"}
    problems, _, what, _ = records.check("O2", graphs["O2"][0], "hash-a", versions, update=False)
    assert problems == [] and what.startswith("recorded as the expected structure")
    doc = json.loads((tmp_path / "tiny_model.json").read_text())
    assert doc["variants"]["O2"]["structure"]["fused_operators"]["Attention"] == 2
    # The same variant, built again without its attention fusion (as an upgrade that lost it would):
    problems, _, what, _ = records.check("O2", graphs["O2-no-attention"][0], "hash-a", versions, update=False)
    assert "lost fusion Attention: 2 → 0 nodes" in problems
    assert "compared with the structure recorded" in what and "onnxruntime 1.32.0" in what
    assert "--ortgate-update-structure" in problems[-1]
    problems, _, _, _ = records.check("O2", graphs["O2-no-skip-ln"][0], "hash-b", versions, update=False)
    assert any("lost fusion SkipLayerNormalization" in p for p in problems)
    assert "definition changed since it was recorded" in problems[-1]
    # Recording again accepts the new structure.
    assert records.check("O2", graphs["O2-no-attention"][0], "hash-a", versions, update=True)[0] == []
    assert records.check("O2", graphs["O2-no-attention"][0], "hash-a", versions, update=False)[0] == []


VERSIONS = {"onnxruntime": "1.32.0", "optimum": "2.1.0"}


def test_a_cpu_without_a_record_is_held_to_what_the_other_cpus_recorded(graphs, tmp_path):
    """Level-99 records are kept per CPU; on a CPU seen for the first time, the other CPUs' records still
    catch a lost fusion, and the result says what they could not check."""
    records = StructureRecords(tmp_path, "tiny model")
    assert records.check("O2@cpu-a", graphs["O2"][0], "hash-a", VERSIONS, False, other_cpus_of="O2@").problems == []
    # This CPU's graph lost its attention fusion, as a library upgrade that dropped it would build it:
    lost = records.check("O2@cpu-b", graphs["O2-no-attention"][0], "hash-a", VERSIONS, False, other_cpus_of="O2@")
    assert lost.problems[0] == "lost fusion Attention: 2 → 0 nodes"
    assert lost.record.startswith("no structure recorded for this CPU: compared with what the structures recorded "
                                  "for 1 other CPU(s) (cpu-a; latest recorded ")
    assert lost.unchecked[0].startswith("node count and file size (level 99's layout transforms")
    assert not any(n.startswith("nodes ") for n in lost.notes)  # the node count is not compared across CPUs
    assert "O2@cpu-b" not in json.loads(records.path.read_text())["variants"]  # a failing graph is not recorded
    # The intact graph passes, is recorded for this CPU, and says what was not checked; from then on this CPU
    # is compared with its own record, in full.
    ok = records.check("O2@cpu-b", graphs["O2"][0], "hash-a", VERSIONS, False, other_cpus_of="O2@")
    assert ok.problems == [] and ok.unchecked == lost.unchecked
    assert ok.record.endswith(f"recorded as the expected structure for this CPU (cpu-b) in {records.path}")
    again = records.check("O2@cpu-b", graphs["O2-no-attention"][0], "hash-a", VERSIONS, False, other_cpus_of="O2@")
    assert again.record.startswith("compared with the structure recorded") and again.unchecked == ()
    assert "lost fusion Attention: 2 → 0 nodes" in again.problems and "nodes 2" not in again.notes


def test_what_the_recorded_cpus_disagree_on_or_layout_transforms_rewrite_is_not_checked(graphs):
    o2, no_attention, int8 = graphs["O2"][0], graphs["O2-no-attention"][0], graphs["O2-int8"][0]
    assert layout_rewritten_nodes(graphs["onnx"][0]) == 0  # a BERT has no convolution: nothing is laid out per CPU
    # Two recorded CPUs that disagree on Attention: it is not checked, SkipLayerNormalization still is.
    unfused = no_attention  # as if cpu-b's ONNX Runtime did not fuse attention
    expected, unchecked = cpu_independent_expectation({"cpu-a": o2, "cpu-b": unfused}, no_attention, 0)
    assert compare_structure(expected, no_attention)[0] == []
    assert "fusion Attention (the recorded CPUs differ: cpu-a 2, cpu-b 0)" in unchecked
    assert any(u.startswith("MatMuls with fp32 weights (the recorded CPUs differ") for u in unchecked)
    skip_ln = o2["fused_operators"]["SkipLayerNormalization"]
    no_skip_ln = {**o2, "fused_operators": {k: v for k, v in o2["fused_operators"].items()
                                            if k != "SkipLayerNormalization"}}
    expected, _ = cpu_independent_expectation({"cpu-a": o2, "cpu-b": unfused}, no_skip_ln, 0)
    assert compare_structure(expected, no_skip_ln)[0] == [f"lost fusion SkipLayerNormalization: {skip_ln} → 0 nodes"]
    # A model with convolutions: their fusions and the quantized counts depend on the CPU (NCHWc, NHWC), the
    # attention fusion does not.
    with_conv = {**int8, "fused_operators": {**int8["fused_operators"], "FusedConv": 3}}
    fewer = {**int8, "quantized_nodes": {**int8["quantized_nodes"], "dynamic": 1}}
    expected, unchecked = cpu_independent_expectation({"cpu-a": with_conv}, fewer, 0)
    assert len(compare_structure(expected, fewer)[0]) == 2  # lost FusedConv, fewer quantized nodes
    expected, unchecked = cpu_independent_expectation({"cpu-a": with_conv}, fewer, 4)
    assert compare_structure(expected, fewer)[0] == []
    assert "the export has 4 convolution or pooling nodes" in unchecked[1]
    lost = compare_structure(expected, {**fewer, "fused_operators": {}})[0]  # every fusion lost
    assert lost == [f"lost fusion {op}: {n} → 0 nodes" for op, n in int8["fused_operators"].items()] and lost


def test_fewer_quantized_nodes_fail_and_gains_are_only_noted(graphs):
    int8 = graphs["O2-int8"][0]
    fewer = {**int8, "quantized_nodes": {**int8["quantized_nodes"], "dynamic": 1}}
    problems, _ = compare_structure(int8, fewer)
    assert problems == [f"fewer quantized nodes (dynamic): {int8['quantized_nodes']['dynamic']} → 1"]
    problems, notes = compare_structure(graphs["O2-no-attention"][0], graphs["O2"][0])
    assert problems == [] and "more Attention nodes: 0 → 2" in notes


def test_an_unreadable_record_says_how_to_fix_it(tmp_path):
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(Exception, match="unreadable.*--ortgate-update-structure"):
        StructureRecords(tmp_path, "m").load()


def test_gpu_only_graphs_are_not_applicable_on_a_cpu_unless_named():
    by_glob = explicit_variant_ids((), ("O*",))
    reason = not_applicable_reason(full(), "O4", by_glob)
    assert reason and "fp16 graph for a GPU" in reason and "name the variant" in reason
    assert not_applicable_reason(full(), "O3", by_glob) is None
    assert not_applicable_reason(full(), "O4", explicit_variant_ids((), ("O4",))) is None
    assert not_applicable_reason(full(), "O4", explicit_variant_ids(("O4",), None)) is None


def test_weights_shared_through_identity_count_as_weights_and_per_call_quantization_is_noted(tmp_path):
    """ALBERT's export feeds a layer's shared weights to its later uses through Identity nodes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ortgate.verdict.structure import rule_notes

    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Identity", ["W"], ["W_shared"]),
             helper.make_node("MatMul", ["h", "W_shared"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "shared.onnx"))
    summary = graph_summary(tmp_path / "shared.onnx")
    assert summary["float_weight_matmuls"] == 2 and summary["float_weight_elements_by_op"] == {"MatMul": 16}
    assert summary["weights_quantized_per_call"] == 0 and rule_notes(summary) == []

    nodes[2:] = [helper.make_node("DynamicQuantizeLinear", ["W_shared"], ["Wq", "Ws", "Wz"])]
    graph = helper.make_graph(nodes, "g", graph.input, [helper.make_tensor_value_info("Wq", TensorProto.UINT8, [4, 4])],
                              [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "per_call.onnx"))
    summary = graph_summary(tmp_path / "per_call.onnx")
    assert summary["weights_quantized_per_call"] == 1
    assert "1 fp32 weights (shared between layers" in rule_notes(summary)[0]
