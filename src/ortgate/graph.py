"""What a variant's ONNX graph contains: node counts, fused and quantized operators. Reads, never runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

QUANTIZED_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QuantizeLinear",
                 "DequantizeLinear", "QLinearMatMul", "QAttention", "QGemm", "MatMulIntegerToFloat",
                 "QLinearAdd", "QLinearMul", "QOrderedAttention")


def graph_summary(onnx_path: Path) -> dict:
    """Node count, operator counts, fused (com.microsoft contrib) and quantized operator counts."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    fused = Counter(node.op_type for node in model.graph.node if node.domain == "com.microsoft")
    weight_types = Counter(TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer)
    return {
        "nodes": sum(ops.values()),
        "operators": dict(sorted(ops.items())),
        "fused_operators": dict(sorted(fused.items())),
        "quantized_operators": {op: ops[op] for op in QUANTIZED_OPS if ops[op]},
        "initializer_types": dict(sorted(weight_types.items())),
        "size_bytes": onnx_path.stat().st_size,
    }
