"""What a variant's ONNX graph contains: nodes, fused and quantized operators, weight types, size.

Reads, never runs. `graph_summary` is what the results JSON and the summary keep for every variant;
`structure.py` turns it into checks that do not depend on timing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# Quantized node kinds, as ONNX Runtime's quantizer writes them.
DYNAMIC_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
               "QAttention", "ConvInteger", "DynamicQuantizeLSTM")
QUANTIZED_OPS = (*DYNAMIC_OPS, "QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QGemm", "QLinearAdd",
                 "QLinearMul", "QLinearConv", "QLinearSoftmax", "QLinearConcat", "QOrderedAttention",
                 "QEmbedLayerNormalization")
INT8_TYPES = ("INT8", "UINT8")


def _is_qlinear(op: str) -> bool:
    return op.startswith("QLinear") or op in ("QGemm", "QEmbedLayerNormalization", "QOrderedAttention")


def _elements(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def graph_summary(onnx_path: Path, export_summary: dict | None = None) -> dict:
    """Node and operator counts, fused (com.microsoft contrib) operators, quantized nodes by kind
    (dynamic, QLinear, QDQ pairs), float MatMuls left with a constant weight, weights' data types and the
    file size; with `export_summary`, the node and operator differences from the plain export."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes = list(model.graph.node)
    ops = Counter(node.op_type for node in nodes)
    fused = Counter(node.op_type for node in nodes if node.domain == "com.microsoft")
    initializers = {t.name: t for t in model.graph.initializer}
    weight_types = Counter(TensorProto.DataType.Name(t.data_type) for t in initializers.values())
    weight_bytes = Counter()
    for t in initializers.values():
        weight_bytes[TensorProto.DataType.Name(t.data_type)] += len(t.raw_data)
    producers = {out: node for node in nodes for out in node.output}
    qdq_pairs = sum(1 for node in nodes if node.op_type == "DequantizeLinear"
                    and node.input and producers.get(node.input[0]) is not None
                    and producers[node.input[0]].op_type == "QuantizeLinear")
    dq_weights = sum(1 for node in nodes if node.op_type == "DequantizeLinear" and node.input
                     and node.input[0] in initializers)
    weight_elements_by_op, float_weight_matmuls, weights_quantized_per_call = _float_weights(nodes, initializers)
    summary = {
        "nodes": len(nodes),
        "operators": dict(sorted(ops.items())),
        "fused_operators": dict(sorted(fused.items())),
        "quantized_operators": {op: ops[op] for op in QUANTIZED_OPS if ops[op]},
        "quantized_nodes": {
            "dynamic": sum(ops[op] for op in DYNAMIC_OPS),
            "qlinear": sum(n for op, n in ops.items() if _is_qlinear(op)),
            "qdq_pairs": qdq_pairs,
            "dequantized_weights": dq_weights,
        },
        "float_weight_matmuls": float_weight_matmuls,
        "weights_quantized_per_call": weights_quantized_per_call,
        "initializer_types": dict(sorted(weight_types.items())),
        "float_weight_elements_by_op": dict(sorted(weight_elements_by_op.items())),
        "int8_weight_fraction": (sum(weight_bytes[t] for t in INT8_TYPES) / sum(weight_bytes.values())
                                 if sum(weight_bytes.values()) else 0.0),
        "size_bytes": onnx_path.stat().st_size,
    }
    if export_summary is not None:
        summary.update(_differences_from_export(summary, export_summary))
    return summary


def _differences_from_export(summary: dict, export_summary: dict) -> dict:
    """Node and per-operator count changes against the plain export."""
    ops, export_ops = summary["operators"], export_summary["operators"]
    return {"nodes_vs_export": summary["nodes"] - export_summary["nodes"],
            "operators_vs_export": {op: ops.get(op, 0) - export_ops.get(op, 0)
                                    for op in sorted(set(ops) | set(export_ops))
                                    if ops.get(op, 0) != export_ops.get(op, 0)}}


def _float_weights(nodes: list, initializers: dict) -> tuple[dict[str, int], int, int]:
    """fp32 weight elements by the operator that reads them, MatMuls with an fp32 constant weight, and weights
    that DynamicQuantizeLinear quantizes on every call."""
    from onnx import TensorProto

    # A weight shared between layers (ALBERT) reaches its later uses through Identity nodes: follow them, so
    # such a MatMul counts as a weight MatMul like any other.
    through_identity = {node.output[0]: node.input[0] for node in nodes
                        if node.op_type == "Identity" and node.input and node.input[0] in initializers}

    def float_weight(name: str):
        tensor = initializers.get(through_identity.get(name, name))
        return tensor if tensor is not None and tensor.data_type == TensorProto.FLOAT and len(tensor.dims) >= 2 \
            else None

    weights_by_op: dict[str, dict] = {}  # fp32 weight matrices (2-D and up) by the operator that reads them
    for node in nodes:
        for name in node.input if node.op_type != "Identity" else ():
            if (tensor := float_weight(name)) is not None:
                weights_by_op.setdefault(node.op_type, {})[tensor.name] = tensor
    weight_elements_by_op = {op: sum(_elements(t) for t in weights.values()) for op, weights in weights_by_op.items()}
    float_weight_matmuls = sum(1 for node in nodes if node.op_type == "MatMul" and len(node.input) > 1
                               and float_weight(node.input[1]) is not None)
    # Dynamic quantization treats a weight it reaches only through Identity as an activation: it stays fp32 in
    # the file and DynamicQuantizeLinear quantizes it again on every call.
    weights_quantized_per_call = sum(1 for node in nodes if node.op_type == "DynamicQuantizeLinear" and node.input
                                     and float_weight(node.input[0]) is not None)
    return weight_elements_by_op, float_weight_matmuls, weights_quantized_per_call
