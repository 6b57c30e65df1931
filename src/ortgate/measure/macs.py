"""Counting a graph's multiply-accumulates: `count_macs` reads an ONNX graph and counts one sample's MACs per GEMM
kind and shape, the numerator of a roofline (`ortgate.measure.roofline` divides it by this CPU's measured GEMM speeds).

Shapes come from onnxruntime's symbolic shape inference, with the contrib ops that quantized and optimized graphs use
added, run once per file at FIT_LENGTHS and fitted as affine in the length. Each GEMM op has a handler that says its
products' kind (activation type × weight type, one of GEMM_KINDS) and dims.

Units: MACs (a MAC is a multiply and an add).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from ortgate.errors import ModelError, first_line

GEMM_KINDS = ("fp32", "u8s8", "u8u8")  # activation type × weight type; fp32 is float × float
# Token counts at which shapes are inferred: every GEMM dim is fitted as c + a·s on the first two and checked
# on the third, so a graph whose dims are not affine in the length (none of the project's) fails loudly.
FIT_LENGTHS = (5, 11, 17)
_INT_NAMES = {TensorProto.UINT8: "u8", TensorProto.INT8: "s8"}
_PASS_THROUGH = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")


# ---------------------------------------------------------------- counting


@dataclass(frozen=True)
class GemmShape:
    """`count` products of [m, k] × [k, n] per sample (for attention products, count includes the heads)."""

    kind: str
    m: int
    k: int
    n: int
    count: int = 1

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.count

    def as_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs}


@dataclass(frozen=True)
class MacCount:
    """One sample's (batch 1) MACs at `seq_len` tokens. `gemms`: products with a constant (weight) operand, M =
    the rows per sample (tokens, or 1 where the graph took the first token, as BERT's pooler does).
    `attention`: activation × activation products (QK^T, attention·V), of the kind their op runs in: fp32 in
    fused attention ops and float graphs, u8u8 where a dynamic quantizer made them MatMulInteger."""

    seq_len: int
    by_kind: dict[str, int]
    gemms: tuple[GemmShape, ...]
    attention: tuple[GemmShape, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def weight_macs(self, kind: str | None = None) -> int:
        return sum(g.macs for g in self.gemms if kind in (None, g.kind))

    def as_dict(self) -> dict:
        return {"seq_len": self.seq_len, "total": self.total, "by_kind": dict(self.by_kind),
                "gemms": [g.as_dict() for g in self.gemms], "attention": [g.as_dict() for g in self.attention]}


@dataclass(frozen=True)
class _Product:
    """One GEMM of a node: dims (batch, m, k, n), each as c + a·seq_len once fitted."""

    node: str
    kind: str
    weight: bool
    dims: tuple

    def at(self, seq_len: int) -> tuple[int, ...]:
        return tuple(c + a * seq_len for c, a in self.dims)


def count_macs(onnx_path: Path | str, seq_len: int) -> MacCount:
    """One sample's MACs at `seq_len` tokens, by GEMM kind and shape. Shapes are inferred once per file (at
    FIT_LENGTHS), so counting at many lengths costs no more than at one."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1 token, not {seq_len}")
    path = Path(onnx_path)
    stat = path.stat()
    return _mac_count(_fitted_products(str(path.resolve()), stat.st_mtime_ns, stat.st_size), seq_len)


def _load_for_shapes(path: Path | str) -> onnx.ModelProto:
    """The graph without its weights' values (shapes need dims only), but with the small tensors a shape
    may be computed from (Reshape targets, Slice bounds) even where they were saved as external data."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) and math.prod(tensor.dims) <= 4096:
            load_external_data_for_tensor(tensor, str(Path(path).parent))
    return model


def _count_at_length(onnx_path: Path | str, seq_len: int) -> MacCount:
    """Direct count: shape inference at exactly `seq_len` (what the fitted count must agree with)."""
    model = _load_for_shapes(onnx_path)
    products = _products_at(model, _symbolic_input_dims(model), seq_len, Path(onnx_path).name)
    return _mac_count(tuple(_Product(p.node, p.kind, p.weight, tuple((d, 0) for d in p.dims)) for p in products),
                      seq_len)


def _mac_count(products: Iterable[_Product], seq_len: int) -> MacCount:
    groups: dict[tuple, int] = defaultdict(int)
    for p in products:
        batch, m, k, n = p.at(seq_len)
        groups[(p.weight, p.kind, m, k, n)] += batch
    by_kind: dict[str, int] = defaultdict(int)
    shapes: dict[bool, list[GemmShape]] = {True: [], False: []}
    for (weight, kind, m, k, n), count in groups.items():
        shapes[weight].append(GemmShape(kind, m, k, n, count))
        by_kind[kind] += m * k * n * count
    return MacCount(seq_len, dict(by_kind), tuple(shapes[True]), tuple(shapes[False]))


@functools.lru_cache(maxsize=64)
def _fitted_products(path: str, mtime_ns: int, size: int) -> tuple[_Product, ...]:
    """The graph's GEMMs with every dim fitted as c + a·s (mtime and size in the key: a rebuilt file is re-read)."""
    model = _load_for_shapes(path)
    symbolic = _symbolic_input_dims(model)
    name = Path(path).name
    runs = [_products_at(model, symbolic, s, name) for s in FIT_LENGTHS]
    if len({len(r) for r in runs}) != 1:
        raise ModelError(f"{name}: the number of GEMMs changes with the sequence length; cannot count its MACs")
    return tuple(_fit(name, FIT_LENGTHS, products) for products in zip(*runs, strict=True))


def _fit(name: str, lengths: Sequence[int], products: Sequence[_Product]) -> _Product:
    (s1, s2, s3), first = lengths, products[0]
    dims = []
    for d1, d2, d3 in zip(*(p.dims for p in products), strict=True):
        slope, rest = divmod(d2 - d1, s2 - s1)
        if rest or d1 - slope * s1 + slope * s3 != d3:
            raise ModelError(f"{name}: a dim of GEMM node {first.node!r} is not affine in the sequence length "
                             f"({d1}, {d2}, {d3} at {s1}, {s2}, {s3} tokens); cannot count its MACs")
        dims.append((d1 - slope * s1, slope))
    return _Product(first.node, first.kind, first.weight, tuple(dims))


def _symbolic_input_dims(model: onnx.ModelProto) -> list[tuple[int, int]]:
    """(input index, dim index) of every symbolic dim of the graph's real inputs (not initializers)."""
    initializers = {i.name for i in model.graph.initializer}
    return [(i, j) for i, inp in enumerate(model.graph.input) if inp.name not in initializers
            for j, dim in enumerate(inp.type.tensor_type.shape.dim) if not dim.HasField("dim_value")]


def _products_at(model: onnx.ModelProto, symbolic: list[tuple[int, int]], seq_len: int, name: str) -> list:
    # A text classifier's symbolic dims are [batch, sequence]: the first becomes 1, every other one seq_len.
    for i, j in symbolic:
        model.graph.input[i].type.tensor_type.shape.dim[j].dim_value = 1 if j == 0 else seq_len
    graph = _GraphInfo(model, _infer_value_infos(model, name), name)
    products = []
    for node in model.graph.node:
        handler = _GEMM_HANDLERS.get(node.op_type)
        if handler:
            products += [_Product(node.name or node.op_type, kind, weight, dims)
                         for kind, weight, dims in handler(node, graph)]
    return products


# ------------------------------------------------------------ shape inference


def _infer_value_infos(model: onnx.ModelProto, name: str) -> dict:
    """Shapes and types of every tensor, by onnxruntime's symbolic shape inference with the contrib ops that
    quantized and optimized graphs use added. Driven step by step rather than by `infer_shapes`, which rejects
    a graph with any unknown op and writes a temporary model into the working directory when it does."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_attribute

    class GemmShapeInference(SymbolicShapeInference):
        def __init__(self) -> None:
            super().__init__(int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
            self.dispatcher_.update({"QAttention": self._qattention, "FusedMatMul": self._fused_matmul,
                                     "DynamicQuantizeMatMul": self._float_matmul, "QGemm": self._qgemm,
                                     "MatMulIntegerToFloat": self._float_matmul})

        def _set(self, node, shape, dtype=TensorProto.FLOAT) -> None:
            self.known_vi_[node.output[0]].CopyFrom(helper.make_tensor_value_info(node.output[0], dtype, shape))

        def _qattention(self, node) -> None:
            x, w = self._get_shape(node, 0), self._get_shape(node, 1)
            sizes = get_attribute(node, "qkv_hidden_sizes")
            self._set(node, [x[0], x[1], sizes[2] if sizes else w[1] // 3])

        def _fused_matmul(self, node) -> None:
            a = _transposed(self._get_shape(node, 0), get_attribute(node, "transA", 0))
            b = _transposed(self._get_shape(node, 1), get_attribute(node, "transB", 0))
            batch = self._broadcast_shapes(a[:-2], b[:-2])
            self._set(node, [*batch, a[-2], b[-1]], self.known_vi_[node.input[0]].type.tensor_type.elem_type)

        def _float_matmul(self, node) -> None:
            self._compute_matmul_shape(node, TensorProto.FLOAT)

        def _qgemm(self, node) -> None:
            a = _transposed(self._get_shape(node, 0), get_attribute(node, "transA", 0))
            b = _transposed(self._get_shape(node, 3), get_attribute(node, "transB", 0))
            y_zp = node.input[8] if len(node.input) > 8 else ""
            dtype = self.known_vi_[y_zp].type.tensor_type.elem_type if y_zp else TensorProto.FLOAT
            self._set(node, [a[0], b[1]], dtype)

    engine = GemmShapeInference()
    try:
        engine._preprocess(model)
        while engine.run_:
            engine._infer_impl()
    except Exception as exc:  # the tool raises bare Exceptions, asserts and TypeErrors on graphs it cannot read
        raise ModelError(f"{name}: onnxruntime's symbolic shape inference failed ({first_line(exc)}); cannot "
                         "count its MACs") from exc
    return engine.known_vi_


def _transposed(shape: list, trans: int) -> list:
    return [*shape[:-2], shape[-1], shape[-2]] if trans and len(shape) >= 2 else list(shape)


class _GraphInfo:
    """What the GEMM handlers ask of a graph: inferred shapes and types, producers, and which tensors are
    constant (depend on no graph input: initializers and whatever is computed from them alone)."""

    def __init__(self, model: onnx.ModelProto, value_infos: dict, name: str) -> None:
        self.value_infos, self.name = value_infos, name
        self.producer = {out: node for node in model.graph.node for out in node.output}
        initializers = {i.name for i in model.graph.initializer}
        self.dynamic = {i.name for i in model.graph.input if i.name not in initializers}
        for node in model.graph.node:  # ONNX requires nodes in topological order
            if any(i in self.dynamic for i in node.input):
                self.dynamic.update(node.output)

    def shape(self, node: onnx.NodeProto, index: int) -> list[int]:
        name = node.input[index] if index < len(node.input) else ""
        info = self.value_infos.get(name)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim] \
            if info is not None and info.type.tensor_type.HasField("shape") else None
        if not dims or None in dims:
            raise ModelError(f"{self.name}: no inferred shape for input {index} ({name!r}) of GEMM node "
                             f"{node.name or node.op_type!r} ({node.op_type}); cannot count its MACs. Check that "
                             "onnxruntime's symbolic shape inference handles every op of the graph")
        return dims

    def elem_type(self, name: str) -> int:
        info = self.value_infos.get(name)
        return info.type.tensor_type.elem_type if info is not None else TensorProto.UNDEFINED

    def is_const(self, name: str) -> bool:
        return name not in self.dynamic

    def quantized_type(self, name: str) -> int | None:
        """The integer type behind a float operand that is a DequantizeLinear output (QDQ), else None."""
        node = self.producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = self.producer.get(node.input[0])
        return self.elem_type(node.input[0]) if node is not None and node.op_type == "DequantizeLinear" else None


# ---------------------------------------------------------------- GEMM handlers

def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _int_kind(graph: _GraphInfo, a_type: int, b_type: int, node: onnx.NodeProto) -> str:
    if a_type not in _INT_NAMES or b_type not in _INT_NAMES:
        raise ModelError(f"{graph.name}: integer GEMM node {node.name or node.op_type!r} has operand types "
                         f"{TensorProto.DataType.Name(a_type)} × {TensorProto.DataType.Name(b_type)}; "
                         "only 8-bit integers are counted")
    return _INT_NAMES[a_type] + _INT_NAMES[b_type]


def _matmul_dims(a: list[int], b: list[int]) -> tuple[int, int, int, int]:
    """(batch, m, k, n) of A @ B with numpy's rules; a 2-D right operand folds A's leading dims into m, as
    the kernels do."""
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    if len(b) == 2:
        return 1, math.prod(a[:-1]), a[-1], b[-1]
    pa, pb = a[:-2], b[:-2]
    width = max(len(pa), len(pb))
    pa, pb = [1] * (width - len(pa)) + pa, [1] * (width - len(pb)) + pb
    return math.prod(max(x, y) for x, y in zip(pa, pb, strict=True)), a[-2], a[-1], b[-1]


def _product(graph: _GraphInfo, node: onnx.NodeProto, kind: str, a: int, b: int, trans_a=0, trans_b=0) -> tuple:
    dims = _matmul_dims(_transposed(graph.shape(node, a), trans_a), _transposed(graph.shape(node, b), trans_b))
    return kind, graph.is_const(node.input[a]) or graph.is_const(node.input[b]), dims


def _float_gemm(node: onnx.NodeProto, graph: _GraphInfo) -> list:
    # In a QDQ graph both operands of a quantized MatMul come out of DequantizeLinear; ONNX Runtime fuses
    # them into an integer GEMM of those types. A float operand on either side means a float GEMM.
    qa, qb = graph.quantized_type(node.input[0]), graph.quantized_type(node.input[1])
    kind = _int_kind(graph, qa, qb, node) if qa is not None and qb is not None else "fp32"
    return [_product(graph, node, kind, 0, 1, _attr(node, "transA", 0), _attr(node, "transB", 0))]


def _integer_gemm(a: int, b: int, dynamic_a: bool = False) -> Callable:
    def handler(node: onnx.NodeProto, graph: _GraphInfo) -> list:
        # DynamicQuantizeMatMul takes float A and quantizes it to u8 itself
        a_type = TensorProto.UINT8 if dynamic_a else graph.elem_type(node.input[a])
        kind = _int_kind(graph, a_type, graph.elem_type(node.input[b]), node)
        return [_product(graph, node, kind, a, b, _attr(node, "transA", 0), _attr(node, "transB", 0))]

    return handler


def _attention_products(batch: int, heads: int, q_len: int, kv_len: int, qk_hidden: int, v_hidden: int) -> list:
    return [("fp32", False, (batch * heads, q_len, qk_hidden // heads, kv_len)),
            ("fp32", False, (batch * heads, q_len, kv_len, v_hidden // heads))]


def _fused_attention(past_index: int, quantized: bool) -> Callable:
    """Attention / QAttention: one projection by the fused QKV weight [hidden, q+k+v], then the attention
    products, which both ops compute in fp32."""

    def handler(node: onnx.NodeProto, graph: _GraphInfo) -> list:
        x, w = graph.shape(node, 0), graph.shape(node, 1)
        sizes = _attr(node, "qkv_hidden_sizes") or [w[1] // 3] * 3
        past = graph.shape(node, past_index)[3] if len(node.input) > past_index and node.input[past_index] else 0
        kind = _int_kind(graph, graph.elem_type(node.input[0]), graph.elem_type(node.input[1]), node) \
            if quantized else "fp32"
        projection = (kind, True, (1, x[0] * x[1], w[0], w[1]))
        return [projection, *_attention_products(x[0], _attr(node, "num_heads"), x[1], x[1] + past, sizes[0],
                                                 sizes[2])]

    return handler


def _multi_head_attention(node: onnx.NodeProto, graph: _GraphInfo) -> list:
    """Projections come before this op (as MatMuls); only the attention products are its own."""
    heads, q = _attr(node, "num_heads"), graph.shape(node, 0)
    key = graph.shape(node, 1) if len(node.input) > 1 and node.input[1] else None
    value = graph.shape(node, 2) if len(node.input) > 2 and node.input[2] else None
    if len(q) == 5:  # packed QKV [batch, seq, heads, 3, head size]
        return _attention_products(q[0], heads, q[1], q[1], q[2] * q[4], q[2] * q[4])
    if key is None:
        kv_len, v_hidden = q[1], q[2]
    elif len(key) == 5:  # packed KV [batch, kv len, heads, 2, head size]
        kv_len, v_hidden = key[1], key[2] * key[4]
    else:  # [batch, kv len, hidden] or [batch, heads, kv len, head size]
        kv_len, v_hidden = key[1] if len(key) == 3 else key[2], q[2]
    if value is not None:
        v_hidden = value[2] if len(value) == 3 else value[1] * value[3]  # [B, L, Dv] or [B, N, L, H]
    return _attention_products(q[0], heads, q[1], kv_len, q[2], v_hidden)


_GEMM_HANDLERS: dict[str, Callable] = {
    "MatMul": _float_gemm,
    "FusedMatMul": _float_gemm,
    "Gemm": _float_gemm,
    "MatMulInteger": _integer_gemm(0, 1),
    "MatMulIntegerToFloat": _integer_gemm(0, 1),
    "DynamicQuantizeMatMul": _integer_gemm(0, 1, dynamic_a=True),
    "QLinearMatMul": _integer_gemm(0, 3),
    "QGemm": _integer_gemm(0, 3),
    "Attention": _fused_attention(past_index=4, quantized=False),
    "QAttention": _fused_attention(past_index=8, quantized=True),
    "MultiHeadAttention": _multi_head_attention,
}
