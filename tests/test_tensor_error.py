"""Per-node quantization error (ortgate.measure.tensor_error) on the tiny BERT's graphs: a node whose int8 weights
are ruined on purpose must come out first, and the names ranked must be names `nodes_to_exclude` acts on."""

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from ortgate.measure.tensor_error import (
    NAME_METHOD,
    QDQ_METHOD,
    DiagnoseError,
    Diagnosis,
    _layer_labels,
    _Node,
    diagnose_graphs,
    render_diagnosis_markdown,
)
from ortgate.sources.tiny_models import sentences

pytest.importorskip("optimum.onnxruntime")


def _quantize_dynamic(source: Path, target: Path, exclude: list[str] | None = None) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    return target


def _nodes(path: Path) -> list[onnx.NodeProto]:
    return list(onnx.load(str(path), load_external_data=False).graph.node)


@pytest.fixture(scope="module")
def export_dir(tiny_model, tmp_path_factory) -> Path:
    from optimum.onnxruntime import ORTModelForSequenceClassification

    out = tmp_path_factory.mktemp("tensor-error") / "export"
    ORTModelForSequenceClassification.from_pretrained(tiny_model, export=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def parent(export_dir) -> Path:
    return export_dir / "model.onnx"


@pytest.fixture(scope="module")
def feeds(tiny_model, parent) -> list[dict[str, np.ndarray]]:
    """16 short texts, one row each, with only the graph's inputs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    graph = onnx.load(str(parent), load_external_data=False).graph
    names = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    texts, _ = sentences(16, seed=3)
    return [{k: np.asarray(v, dtype=np.int64) for k, v in tokenizer([t], return_tensors="np").items() if k in names}
            for t in texts]


@pytest.fixture(scope="module")
def int8(parent, tmp_path_factory) -> Path:
    return _quantize_dynamic(parent, tmp_path_factory.mktemp("int8") / "model.onnx")


@pytest.fixture(scope="module")
def clean(int8, parent, feeds, tmp_path_factory) -> Diagnosis:
    return diagnose_graphs(int8, parent, feeds, threads=1, work_dir=tmp_path_factory.mktemp("clean-work"),
                           variant="int8", parent="export")


def _corrupt(quantized: Path, parent_node: str, out: Path) -> Path:
    """The graph with the int8 weights of `parent_node`'s MatMulInteger (ORT names it `<node>_quant`) replaced
    by seeded random int8 values."""
    model = onnx.load(str(quantized))
    node = next(n for n in model.graph.node if n.name == f"{parent_node}_quant")
    assert node.op_type == "MatMulInteger"
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    values = numpy_helper.to_array(weight)
    assert values.dtype == np.int8
    noise = np.random.default_rng(0).integers(-128, 128, size=values.shape).astype(np.int8)
    weight.CopyFrom(numpy_helper.from_array(noise, weight.name))
    onnx.save(model, str(out))
    return out


def test_a_node_with_ruined_weights_is_ranked_first(int8, parent, feeds, tmp_path):
    target = next(n.name for n in _nodes(parent) if n.op_type == "MatMul" and "layer.0/intermediate" in n.name)
    corrupted = _corrupt(int8, target, tmp_path / "corrupted.onnx")
    d = diagnose_graphs(corrupted, parent, feeds, threads=1, work_dir=tmp_path / "work")
    first = d.nodes[0]
    assert (first.node, first.op_type, first.layer, first.quantized) == (target, "MatMul", "layer.0", True)
    assert first.sqnr_db < 10 and first.relative_error > 0.3
    assert d.worst(1)[0].node == target and d.by_layer()[0][0] == "layer.0"
    assert d.method == NAME_METHOD and d.rows == len(feeds)


def test_every_quantized_matmul_is_compared_under_its_parent_name(clean, int8, parent):
    quantized_names = {n.name for n in _nodes(int8)}
    replaced = [n for n in _nodes(parent) if n.op_type == "MatMul" and f"{n.name}_quant" in quantized_names]
    assert len(replaced) >= 12  # q, k, v, attention output, intermediate, output: per layer, 2 layers
    # The quantizer keeps each replaced MatMul's output tensor name (its MatMulInteger's rescaling Mul writes it).
    produced = {out for n in _nodes(int8) for out in n.output}
    assert all(n.output[0] in produced for n in replaced)
    ranked = {n.node: n for n in clean.nodes}
    assert all(ranked[n.name].quantized and ranked[n.name].tensor == n.output[0] for n in replaced)
    assert math.isfinite(clean.logits_sqnr_db) and clean.logits_sqnr_db > 10
    introduced = [n.introduced_db for n in clean.nodes]
    assert introduced == sorted(introduced, reverse=True) and introduced[0] > 0
    assert not ranked["/bert/embeddings/LayerNorm/LayerNormalization"].quantized
    assert not ranked["/bert/embeddings/Add"].quantized  # it reads dequantized embeddings, but computes in fp32
    assert ranked["/bert/embeddings/word_embeddings/Gather"].quantized  # same name and op, int8 output
    assert {n.layer for n in clean.nodes} >= {"embeddings", "layer.0", "layer.1", "head"}


class _Rows(CalibrationDataReader):
    """The feeds, for calibration."""

    def __init__(self, feeds):
        self.rows = iter(feeds)

    def get_next(self):
        return next(self.rows, None)


@pytest.mark.parametrize("fmt, method", [("QDQ", QDQ_METHOD), ("QOperator", NAME_METHOD)])
def test_static_graphs(parent, feeds, tmp_path, fmt, method):
    from onnxruntime.quantization import QuantFormat, quantize_static

    static = tmp_path / "static.onnx"
    quantize_static(parent, static, _Rows(feeds), quant_format=getattr(QuantFormat, fmt))
    d = diagnose_graphs(static, parent, feeds, threads=1, work_dir=tmp_path / "work")
    assert d.method == method and math.isfinite(d.logits_sqnr_db)
    introduced = [n.introduced_db for n in d.nodes]
    assert introduced == sorted(introduced, reverse=True) and introduced[0] > 0
    ranked = {n.node: n for n in d.nodes}
    matmuls = [n.name for n in _nodes(parent) if n.op_type == "MatMul" and "intermediate" in n.name]
    assert matmuls and all(ranked[name].quantized for name in matmuls)  # QOperator: through its int8 output


def test_a_diagnosis_round_trips_and_renders(clean):
    encoded = json.dumps(clean.as_dict(), allow_nan=False)
    assert Diagnosis.from_dict(json.loads(encoded)) == clean
    text = render_diagnosis_markdown(clean, top=5)
    assert clean.nodes[0].node in text and "| layer |" in text and "| op type |" in text
    assert len(clean.by_op_type()) == len({n.op_type for n in clean.nodes})


def test_ranked_names_are_what_nodes_to_exclude_keeps_in_fp32(clean, parent, feeds, tmp_path):
    worst = clean.worst(1)[0]
    matmul = next(n for n in clean.worst(len(clean.nodes)) if n.op_type == "MatMul")
    kept = _quantize_dynamic(parent, tmp_path / "kept.onnx", exclude=[worst.node, matmul.node])
    assert {(worst.node, worst.op_type), (matmul.node, "MatMul")} <= {(n.name, n.op_type) for n in _nodes(kept)}
    again = {n.node: n for n in diagnose_graphs(kept, parent, feeds, threads=1, work_dir=tmp_path / "work").nodes}
    assert not again[worst.node].quantized and not again[matmul.node].quantized
    assert again[matmul.node].introduced_db < matmul.introduced_db  # in fp32 it adds (almost) no noise of its own


@pytest.fixture(scope="module")
def optimized(export_dir, tmp_path_factory) -> Path:
    """ORT level 99: Attention, SkipLayerNormalization and BiasGelu contrib ops, which ONNX shape inference
    does not know."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    out = tmp_path_factory.mktemp("o99")
    ORTOptimizer.from_pretrained(export_dir).optimize(save_dir=out,
                                                      optimization_config=OptimizationConfig(optimization_level=99))
    return next(out.glob("*.onnx"))


def _quantize_optimized(optimized: Path, out_dir: Path, exclude: list[str] | None = None) -> Path:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = out_dir / "inferred.onnx"
    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(optimized)), auto_merge=True), str(inferred))
    return _quantize_dynamic(inferred, out_dir / "int8.onnx", exclude)


def test_a_level_99_graph_with_contrib_ops(optimized, feeds, tmp_path):
    int8 = _quantize_optimized(optimized, tmp_path)
    d = diagnose_graphs(int8, optimized, feeds, threads=1, work_dir=tmp_path / "work")
    ranked = {n.node: n for n in d.nodes}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu", "MatMul"} <= {n.op_type for n in d.nodes}
    assert ranked["Attention_0"].quantized and ranked["Attention_0"].layer == "layer.0"  # from its output's name
    assert not any(n.quantized for n in d.nodes if n.op_type == "SkipLayerNormalization")
    assert math.isfinite(d.logits_sqnr_db) and d.logits_sqnr_db > 10
    attention = next(n for n in d.worst(len(d.nodes)) if n.op_type == "Attention")
    (tmp_path / "kept").mkdir()
    kept = _quantize_optimized(optimized, tmp_path / "kept", exclude=[attention.node])
    assert (attention.node, "Attention") in {(n.name, n.op_type) for n in _nodes(kept)}


def test_a_ruined_node_of_a_level_99_graph_is_ranked_first(optimized, feeds, tmp_path):
    int8 = _quantize_optimized(optimized, tmp_path)
    target = "/bert/encoder/layer.1/output/dense/MatMul"
    d = diagnose_graphs(_corrupt(int8, target, tmp_path / "corrupted.onnx"), optimized, feeds, threads=1,
                        work_dir=tmp_path / "work")
    assert (d.nodes[0].node, d.nodes[0].layer) == (target, "layer.1")


def test_layer_labels_fall_back_to_the_last_layer_seen():
    nodes = [_Node("/bert/embeddings/Add", "Add", ("a",), ("b",)), _Node("", "Cast", ("m",), ("mask",)),
             _Node("Attention_0", "Attention", ("b",), ("/encoder/layers.3/attn_out",)),
             _Node("FastGelu_1", "FastGelu", ("c",), ("d",)), _Node("/pooler/dense/Gemm", "Gemm", ("d",), ("e",)),
             _Node("/h/block_2/MatMul", "MatMul", ("e",), ("f",))]
    assert _layer_labels(nodes) == ["embeddings", "", "layer.3", "after layer.3", "head", "block.2"]


def test_unusable_inputs_are_diagnose_errors(int8, parent, feeds, tmp_path):
    with pytest.raises(DiagnoseError, match="does not exist"):
        diagnose_graphs(tmp_path / "missing.onnx", parent, feeds, threads=1, work_dir=tmp_path)
    with pytest.raises(DiagnoseError, match="at least one"):
        diagnose_graphs(int8, parent, [], threads=1, work_dir=tmp_path)
    with pytest.raises(DiagnoseError, match="input_ids"):
        diagnose_graphs(int8, parent, [{"attention_mask": feeds[0]["attention_mask"]}], threads=1, work_dir=tmp_path)
