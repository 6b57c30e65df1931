"""MAC counts of hand-built graphs of every kind the project builds: float, dynamically and statically quantized
(QDQ), integer and fused attention ops; the fitted count against direct inference; unknown shapes as model errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortgate.errors import ModelError
from ortgate.measure import macs

H, HEADS, FFN, LAYERS, VOCAB = 16, 2, 32, 2, 11
MS = "com.microsoft"


def _save(tmp_path, name, nodes, inputs, outputs, inits) -> object:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                              ir_version=9)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _w(name, *shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)
    return numpy_helper.from_array(rng.integers(0, 100, shape).astype(dtype), name)


def _tokens(name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "sequence", H])


def bert_like(tmp_path, transposed_key=True):
    """Embedding, LAYERS× (Q, K, V, attention, output, FFN), a first-token pooler (Gemm, transB) and a head."""
    nodes, inits = [helper.make_node("Gather", ["emb", "input_ids"], ["x0"])], [_w("emb", VOCAB, H)]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("split", [0, 0, HEADS, H // HEADS]), ("merge", [0, 0, H]), ("first", 0))]
    x = "x0"
    for i in range(LAYERS):
        def t(name, _i=i):
            return f"l{_i}_{name}"
        inits += [_w(t("wq"), H, H, seed=1), _w(t("wv"), H, H, seed=3), _w(t("wo"), H, H, seed=4),
                  _w(t("w1"), H, FFN, seed=5), _w(t("w2"), FFN, H, seed=6), _w(t("wk"), H, H, seed=2)]
        if transposed_key:  # the weight stored [out, in], used through a Transpose, as some exports do
            nodes.append(helper.make_node("Transpose", [t("wk")], [t("wk_t")], perm=[1, 0]))
        nodes += [helper.make_node("MatMul", [x, t("wq")], [t("q")]),
                  helper.make_node("MatMul", [x, t("wk_t") if transposed_key else t("wk")], [t("k")]),
                  helper.make_node("MatMul", [x, t("wv")], [t("v")])]
        for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            nodes += [helper.make_node("Reshape", [t(name), "split"], [t(name + "4")]),
                      helper.make_node("Transpose", [t(name + "4")], [t(name + "h")], perm=perm)]
        nodes += [helper.make_node("MatMul", [t("qh"), t("kh")], [t("scores")]),
                  helper.make_node("Softmax", [t("scores")], [t("probs")], axis=-1),
                  helper.make_node("MatMul", [t("probs"), t("vh")], [t("ctx")]),
                  helper.make_node("Transpose", [t("ctx")], [t("ctx_t")], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [t("ctx_t"), "merge"], [t("ctx3")]),
                  helper.make_node("MatMul", [t("ctx3"), t("wo")], [t("o")]),
                  helper.make_node("Add", [t("o"), x], [t("x1")]),
                  helper.make_node("MatMul", [t("x1"), t("w1")], [t("f")]),
                  helper.make_node("Relu", [t("f")], [t("fr")]),
                  helper.make_node("MatMul", [t("fr"), t("w2")], [t("f2")]),
                  helper.make_node("Add", [t("f2"), t("x1")], [t("out")])]
        x = t("out")
    inits += [_w("wp", H, H, seed=7), _w("bp", H), _w("wc", 2, H, seed=8), _w("bc", 2)]
    nodes += [helper.make_node("Gather", [x, "first"], ["pooled"], axis=1),
              helper.make_node("Gemm", ["pooled", "wp", "bp"], ["pool"], transB=1),
              helper.make_node("Tanh", ["pool"], ["pool_t"]),
              helper.make_node("Gemm", ["pool_t", "wc", "bc"], ["logits"], transB=1)]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    return _save(tmp_path, f"bert_like{'_t' if transposed_key else ''}", nodes, [ids], [logits], inits)


def weight_macs(s):  # per layer: Q, K, V, output (h²), FFN in and out (h·ffn); then pooler (h²) and head (2h)
    return LAYERS * s * (4 * H * H + 2 * H * FFN) + H * H + 2 * H


def attention_macs(s):  # QK^T and attention·V: heads · s · (h/heads) · s each
    return LAYERS * 2 * s * s * H


@pytest.mark.parametrize("s", [1, 3, 22, 64])
def test_bert_like_fp32_counts_every_gemm(tmp_path, s):
    count = macs.count_macs(bert_like(tmp_path), s)
    assert count.by_kind == {"fp32": weight_macs(s) + attention_macs(s)}
    assert count.weight_macs() == weight_macs(s)
    if s > 1:  # at one token the pooler's shape is the layers' and the groups merge
        assert macs.GemmShape("fp32", s, H, H, 4 * LAYERS) in count.gemms  # the transposed K weight counts
        assert macs.GemmShape("fp32", 1, H, H, 1) in count.gemms  # the pooler sees the first token only
    assert macs.GemmShape("fp32", 1, H, 2, 1) in count.gemms
    assert sum(g.macs for g in count.attention) == attention_macs(s)
    assert count.as_dict()["total"] == count.total


def test_fitted_count_agrees_with_direct_inference(tmp_path):
    path = bert_like(tmp_path)
    for s in (1, 2, 7, 40, 129):
        assert macs.count_macs(path, s) == macs._count_at_length(path, s)


def test_a_graph_with_external_data_is_counted(tmp_path):
    model = onnx.load(str(bert_like(tmp_path)))
    path = tmp_path / "external" / "model.onnx"
    path.parent.mkdir()
    # every tensor outside, the Reshape targets too: those must be read back, the weights need not be
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    assert macs.count_macs(path, 9).total == weight_macs(9) + attention_macs(9)


def test_counting_many_lengths_reuses_the_inference(tmp_path, monkeypatch):
    path = bert_like(tmp_path)
    macs.count_macs(path, 4)
    calls = []
    monkeypatch.setattr(macs, "_infer_value_infos", lambda *a: calls.append(a))
    for s in range(1, 50):
        macs.count_macs(path, s)
    assert calls == []


def _reader(s_values=(3, 6)):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"input_ids": np.arange(s, dtype=np.int64)[None] % VOCAB} for s in s_values])

        def get_next(self):
            return next(self.feeds, None)

    return Reader()


@pytest.mark.parametrize(("weight_type", "kind"), [("QInt8", "u8s8"), ("QUInt8", "u8u8")])
def test_dynamic_int8_moves_weight_macs_to_its_kind(tmp_path, weight_type, kind):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = bert_like(tmp_path, transposed_key=False)
    int8 = tmp_path / f"dynamic-{kind}.onnx"
    # Optimum's quantizer also quantizes activation × activation MatMuls; quantize_dynamic must be told to
    quantize_dynamic(str(fp32), str(int8), weight_type=getattr(QuantType, weight_type),
                     extra_options={"MatMulConstBOnly": False})
    count = macs.count_macs(int8, 22)
    assert count.total == macs.count_macs(fp32, 22).total
    # Gemm as well as MatMul becomes MatMulInteger, and the attention products u8 × u8
    assert count.weight_macs(kind) == weight_macs(22)
    assert {g.kind for g in count.attention} == {"u8u8"}


def test_static_qdq_takes_its_kind_from_the_quantized_types(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32 = bert_like(tmp_path, transposed_key=False)
    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(fp32), str(qdq), _reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    count = macs.count_macs(qdq, 9)
    assert count.total == macs.count_macs(fp32, 9).total
    assert count.weight_macs("u8s8") == LAYERS * 9 * (4 * H * H + 2 * H * FFN)
    assert count.weight_macs("fp32") == H * H + 2 * H  # the Gemms were left in float
    assert count.by_kind["u8u8"] == attention_macs(9)


def test_integer_ops_take_their_kind_from_the_operand_types(tmp_path):
    k, n = H, 24
    inits = [_w("ws8", k, n, dtype=np.int8), _w("wu8", k, n, dtype=np.uint8),
             numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, np.int8), "zs8"),
             numpy_helper.from_array(np.array(0, np.uint8), "zu8"), _w("ws8_t", n, k, dtype=np.int8),
             numpy_helper.from_array(np.array([-1, k], np.int64), "flat")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "ws8", "xz", "zs8"], ["a"]),
             helper.make_node("MatMulInteger", ["xq", "wu8", "xz", "zu8"], ["b"]),
             helper.make_node("DynamicQuantizeMatMul", ["x", "ws8", "scale", "zs8"], ["c"], domain=MS),
             helper.make_node("QLinearMatMul", ["xq", "xs", "xz", "wu8", "scale", "zu8", "scale", "zu8"], ["d"]),
             # QDQ: a quantized activation and an int8 weight through DequantizeLinear into a float MatMul
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xdq"]),
             helper.make_node("DequantizeLinear", ["ws8", "scale", "zs8"], ["wdq"]),
             helper.make_node("MatMul", ["xdq", "wdq"], ["e"]),
             helper.make_node("MatMul", ["x", "wdq"], ["f"]),  # float activation: a float GEMM
             helper.make_node("Reshape", ["xq", "flat"], ["xq2"]),
             helper.make_node("QGemm", ["xq2", "xs", "xz", "ws8_t", "scale", "zs8"], ["g"], domain=MS, transB=1)]
    outs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in "abcdefg"]
    count = macs.count_macs(_save(tmp_path, "integer", nodes, [_tokens()], outs, inits), 7)
    assert count.by_kind == {"u8s8": 4 * 7 * k * n, "u8u8": 2 * 7 * k * n, "fp32": 7 * k * n}
    assert count.attention == ()


def test_fused_attention_ops(tmp_path):
    inits = [_w("qkv", H, 3 * H), _w("bias", 3 * H), _w("qkv8", H, 3 * H, dtype=np.int8),
             numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, np.int8), "z8"), _w("wt", 5, H)]
    mask = helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch"])
    nodes = [helper.make_node("Attention", ["x", "qkv", "bias", "mask"], ["a"], domain=MS, num_heads=HEADS),
             helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("QAttention", ["xq", "qkv8", "bias", "xs", "scale", "mask", "xz", "z8"], ["b"],
                              domain=MS, num_heads=HEADS),
             helper.make_node("MultiHeadAttention", ["a", "b", "x"], ["c"], domain=MS, num_heads=HEADS),
             helper.make_node("FusedMatMul", ["c", "wt"], ["d"], domain=MS, transB=1, alpha=1.0)]
    outs = [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)]
    count = macs.count_macs(_save(tmp_path, "attention", nodes, [_tokens(), mask], outs, inits), 13)
    s = 13
    assert set(count.gemms) == {macs.GemmShape("fp32", s, H, 3 * H, 1), macs.GemmShape("u8s8", s, H, 3 * H, 1),
                                macs.GemmShape("fp32", s, H, 5, 1)}
    assert sum(g.macs for g in count.attention) == 3 * 2 * s * s * H  # three attention ops, fp32 inside
    assert macs.GemmShape("fp32", s, H // HEADS, s, HEADS * 3) in count.attention


def test_an_unknown_shape_is_a_model_error(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "y"], ["z"])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)  # no shape to infer from
    outs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]
    with pytest.raises(ModelError, match="shape inference failed|no inferred shape"):
        macs.count_macs(_save(tmp_path, "unknown", nodes, [_tokens(), y], outs, []), 5)
