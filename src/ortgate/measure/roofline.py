"""GEMM rooflines: how fast a variant could run if its matrix products ran at this CPU's measured GEMM speed.

Three parts, in the order data flows: `count_macs` reads a graph and counts one sample's multiply-accumulates
per GEMM kind and shape; `measure_ceilings` times each kind and shape once per machine with a tiny ONNX model
(cached by CPU fingerprint); `roofline` / `ceiling_for_lengths` divide the one by the other.

Units: MACs and MAC/s throughout the API. GOP/s and GFLOP/s, where text shows them, are 2 × MAC/s / 1e9 (a MAC
is a multiply and an add), the convention of ONNX Runtime's and the issue's figures.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortgate.errors import ModelError, first_line
from ortgate.files import atomic_write_text

GEMM_KINDS = ("fp32", "u8s8", "u8u8")  # activation type × weight type; fp32 is float × float
S8_WEIGHT_PRESETS = ("avx512_vnni", "avx512", "arm64")  # Optimum's presets with QInt8 weights; avx2 has QUInt8
# Token counts at which shapes are inferred: every GEMM dim is fitted as c + a·s on the first two and checked
# on the third, so a graph whose dims are not affine in the length (none of the project's) fails loudly.
FIT_LENGTHS = (5, 11, 17)
_INT_NAMES = {TensorProto.UINT8: "u8", TensorProto.INT8: "s8"}
_PASS_THROUGH = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def gops(macs_per_s: float) -> float:
    """GOP/s (or GFLOP/s) from MAC/s."""
    return 2 * macs_per_s / 1e9


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


# ---------------------------------------------------------------- measuring

@dataclass(frozen=True)
class GemmCeiling:
    """The measured speed of one GEMM kind and shape: MAC/s from the best of `repeats` timed blocks."""

    kind: str
    m: int
    k: int
    n: int
    threads: int
    macs_per_s: float
    seconds_per_call: float
    calls: int  # GEMM calls per timed block

    @property
    def gops(self) -> float:
        return gops(self.macs_per_s)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> GemmCeiling:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


_NODES_PER_RUN = 8  # GEMMs per session.run: one Python call (≈5–10 µs here) would be a third of a 20 µs GEMM


def _gemm_model(kind: str, m: int, k: int, n: int, nodes: int = _NODES_PER_RUN) -> bytes:
    """`nodes` copies of one GEMM, sharing one input and one weight, with their outputs apart (the session
    runs unoptimized, so that common-subexpression elimination does not merge them). The weight stays warm
    in cache: a ceiling, not the speed of a model streaming all its weights."""
    rng = np.random.default_rng(0)
    if kind == "fp32":
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])]
        inits = [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")]
        gemm, operands, out_type = "MatMul", ["x", "w"], TensorProto.FLOAT
    elif kind in ("u8s8", "u8u8"):
        signed = kind == "u8s8"
        w = rng.integers(-127, 128, (k, n), dtype=np.int8) if signed else rng.integers(0, 256, (k, n), np.uint8)
        inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])]
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
                 numpy_helper.from_array(np.array(0 if signed else 128, w.dtype), "w_zero")]
        gemm, operands, out_type = "MatMulInteger", ["x", "w", "x_zero", "w_zero"], TensorProto.INT32
    else:
        raise ValueError(f"unknown GEMM kind {kind!r}; choose one of {GEMM_KINDS}")
    gemms = [helper.make_node(gemm, operands, [f"y{i}"]) for i in range(nodes)]
    outputs = [helper.make_tensor_value_info(f"y{i}", out_type, [m, n]) for i in range(nodes)]
    graph = helper.make_graph(gemms, f"{kind}_gemm", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def _gemm_runner(kind: str, m: int, k: int, n: int, threads: int) -> Callable[[], None]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keeps the copies apart
    options.log_severity_level = 3
    session = ort.InferenceSession(_gemm_model(kind, m, k, n), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k), dtype=np.float32) if kind == "fp32" else rng.integers(0, 256, (m, k), np.uint8)
    binding = session.io_binding()  # bound, preallocated outputs: no allocation or copy in the timed loop
    binding.bind_cpu_input("x", x)
    out_dtype = np.float32 if kind == "fp32" else np.int32
    for output in session.get_outputs():
        binding.bind_ortvalue_output(output.name, ort.OrtValue.ortvalue_from_numpy(np.empty((m, n), out_dtype)))
    return lambda: session.run_with_iobinding(binding)


def measure_gemm(kind: str, m: int, k: int, n: int, threads: int, min_seconds: float = 0.2,
                 repeats: int = 5) -> GemmCeiling:
    """Time [m, k] × [k, n] GEMMs of `kind` on the CPU provider (see `measure_gemms`)."""
    return measure_gemms([(kind, m, k, n)], threads, min_seconds, repeats)[0]


def measure_gemms(shapes: Sequence[tuple[str, int, int, int]], threads: int, min_seconds: float = 0.2,
                  repeats: int = 5) -> list[GemmCeiling]:
    """Time each (kind, m, k, n) in `repeats` blocks of at least `min_seconds`, the shapes taking turns block by
    block, and keep each shape's best block. Noise (other processes, a VM slowed for minutes) only ever slows
    a block down, so the fastest is the closest to what the kernel can do, and a ceiling should be that; taking
    turns spreads every shape's blocks over the whole measurement, so one slow spell cannot own a shape."""
    runners = [_gemm_runner(kind, m, k, n, threads) for kind, m, k, n in shapes]
    runs = [_runs_lasting(run, min_seconds) for run in runners]
    best = [math.inf] * len(shapes)
    for _ in range(max(1, repeats)):
        for i, run in enumerate(runners):
            started = time.perf_counter()
            for _ in range(runs[i]):
                run()
            best[i] = min(best[i], (time.perf_counter() - started) / runs[i])
    ceilings = []
    for (kind, m, k, n), seconds, count in zip(shapes, best, runs, strict=True):
        per_call = seconds / _NODES_PER_RUN
        ceilings.append(GemmCeiling(kind, m, k, n, threads, m * k * n / per_call, per_call, count * _NODES_PER_RUN))
    return ceilings


def _runs_lasting(run: Callable[[], None], min_seconds: float) -> int:
    run()  # the first run spins up the thread pool
    started = time.perf_counter()
    run()
    return max(1, math.ceil(min_seconds / max(time.perf_counter() - started, 1e-9)))


@dataclass(frozen=True)
class Ceilings(Mapping):
    """One machine's measured GEMM ceilings, by (kind, m, k, n)."""

    entries: Mapping[tuple[str, int, int, int], GemmCeiling]
    fingerprint_id: str = ""
    threads: int = 0

    def __getitem__(self, key: tuple[str, int, int, int]) -> GemmCeiling:
        return self.entries[key]

    def __iter__(self) -> Iterator[tuple[str, int, int, int]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def by_kind(self) -> dict[str, float]:
        """The best MAC/s measured per kind."""
        best: dict[str, float] = {}
        for c in self.entries.values():
            best[c.kind] = max(best.get(c.kind, 0.0), c.macs_per_s)
        return best

    def as_dict(self) -> dict:
        return {"fingerprint_id": self.fingerprint_id, "threads": self.threads,
                "ceilings": [c.as_dict() for c in self.entries.values()]}


def _cache_key(ort_version: str, threads: int, kind: str, m: int, k: int, n: int) -> str:
    return f"onnxruntime-{ort_version}/threads-{threads}/{kind}/{m}x{k}x{n}"


def _read_cache(path: Path, log: Callable[[str], None]) -> dict:
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log(f"GEMM ceiling cache {path} is unreadable ({exc}); measuring again")
        return {}


def measure_ceilings(shapes: Iterable[tuple[str, int, int, int]], threads: int, cache_dir: Path | str,
                     log: Callable[[str], None] = print, min_seconds: float = 0.2, repeats: int = 5,
                     refresh: bool = False) -> Ceilings:
    """The ceiling of each (kind, m, k, n), measured once per CPU fingerprint, onnxruntime version and thread
    count, and cached in `cache_dir/roofline/gemm-<fingerprint id>.json`; `refresh` measures them again (a
    figure cached while the machine was slowed stays until then).

    The lock is held while measuring: two processes timing GEMMs at once would slow each other, and each
    would cache a figure for a machine half as fast."""
    import onnxruntime
    from filelock import FileLock

    from ortgate.isa import cpu_fingerprint, fingerprint_id

    fid, version = fingerprint_id(), onnxruntime.__version__
    path = Path(cache_dir).expanduser() / "roofline" / f"gemm-{fid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    wanted = list(dict.fromkeys(tuple(s) for s in shapes))
    with FileLock(str(path.with_name(path.name + ".lock"))):
        stored = _read_cache(path, log)
        missing = [s for s in wanted if refresh or _cache_key(version, threads, *s) not in stored]
        if missing:
            log(f"measuring {len(missing)} GEMM ceiling(s) at {threads} threads (once per machine): "
                + ", ".join(f"{kind} {m}x{k}x{n}" for kind, m, k, n in missing))
            when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for ceiling in measure_gemms(missing, threads, min_seconds, repeats):
                shape = (ceiling.kind, ceiling.m, ceiling.k, ceiling.n)
                stored[_cache_key(version, threads, *shape)] = {**ceiling.as_dict(), "measured_at": when}
            record = {"fingerprint_id": fid, "cpu": cpu_fingerprint(), "entries": stored}
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))
    entries = {s: GemmCeiling.from_dict(stored[_cache_key(version, threads, *s)]) for s in wanted}
    return Ceilings(entries, fid, threads)


def ceiling_shapes(macs: MacCount) -> list[tuple[str, int, int, int]]:
    """The shapes to measure for a variant: its weight GEMMs' own, plus, for an attention kind that no
    weight GEMM has (u8u8 attention beside u8s8 weights), the weight GEMMs' shapes in that kind."""
    shapes = [(g.kind, g.m, g.k, g.n) for g in macs.gemms]
    weight_kinds = {g.kind for g in macs.gemms}
    for kind in dict.fromkeys(g.kind for g in macs.attention if g.kind not in weight_kinds):
        shapes += [(kind, g.m, g.k, g.n) for g in macs.gemms]
    return list(dict.fromkeys(shapes))


# ---------------------------------------------------------------- rooflines

@dataclass(frozen=True)
class Roofline:
    """The GEMM-bound ceiling of a variant over `samples` texts: the time its GEMMs would take at the measured
    speeds, per sample, by kind. Everything else a model does (layer norms, softmax, quantizing activations,
    the session's own overhead) is left out, so measured speed stays below this."""

    samples: int
    mean_tokens: float
    macs_per_sample: float
    seconds_per_sample_by_kind: dict[str, float]

    @property
    def seconds_per_sample(self) -> float:
        return sum(self.seconds_per_sample_by_kind.values())

    @property
    def ceiling_samples_per_s(self) -> float:
        return 1 / self.seconds_per_sample if self.seconds_per_sample > 0 else math.inf

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds_per_sample": self.seconds_per_sample,
                "ceiling_samples_per_s": self.ceiling_samples_per_s}


def nearest_ceiling(ceilings: Mapping | Iterable[GemmCeiling], kind: str, m: int, k: int, n: int) -> GemmCeiling:
    """The ceiling measured for `kind` at the shape nearest (m, k, n): the least summed |log ratio| of the dims.
    Attention products ([tokens, head size] × [head size, tokens]) are smaller than any weight GEMM, so they
    get a weight GEMM's speed: optimistic, as a ceiling may be, and a percent or two of the MACs at ~20 tokens."""
    values = list(ceilings.values()) if isinstance(ceilings, Mapping) else list(ceilings)
    candidates = [c for c in values if c.kind == kind]
    if not candidates:
        raise KeyError(f"no {kind} GEMM ceiling measured; measure the shapes ceiling_shapes() lists")
    return min(candidates, key=lambda c: sum(abs(math.log(x / y)) for x, y in ((c.m, m), (c.k, k), (c.n, n))))


def roofline(macs: MacCount, ceilings: Mapping | Iterable[GemmCeiling]) -> Roofline:
    """One sample's GEMM-bound ceiling: Σ over its GEMMs of MACs / MAC/s at that kind's nearest measured shape."""
    values = list(ceilings.values()) if isinstance(ceilings, Mapping) else list(ceilings)
    seconds: dict[str, float] = defaultdict(float)
    for g in (*macs.gemms, *macs.attention):
        seconds[g.kind] += g.macs / nearest_ceiling(values, g.kind, g.m, g.k, g.n).macs_per_s
    return Roofline(1, float(macs.seq_len), float(macs.total), dict(seconds))


def ceiling_for_lengths(onnx_path: Path | str, lengths: Sequence[int],
                        ceilings: Mapping | Iterable[GemmCeiling]) -> Roofline:
    """The ceiling over texts of these token lengths: total samples / Σ each text's ceiling seconds."""
    if not lengths:
        raise ValueError("need at least one text length")
    values = list(ceilings.values()) if isinstance(ceilings, Mapping) else list(ceilings)
    seconds: dict[str, float] = defaultdict(float)
    macs = 0.0
    for length, texts in Counter(lengths).items():
        count = count_macs(onnx_path, length)
        one = roofline(count, values)
        for kind, s in one.seconds_per_sample_by_kind.items():
            seconds[kind] += s * texts
        macs += count.total * texts
    samples = len(lengths)
    return Roofline(samples, sum(lengths) / samples, macs / samples, {k: s / samples for k, s in seconds.items()})


def variant_roofline(onnx_path: Path | str, lengths: Sequence[int], threads: int, cache_dir: Path | str,
                     log: Callable[[str], None] = print, **measure: float) -> Roofline:
    """count → measure (cached) → divide, for one graph: ceilings are measured at the median length's M and
    serve every length (a shorter text's smaller GEMMs run slower, so its ceiling is an optimistic one)."""
    median = sorted(lengths)[len(lengths) // 2]
    shapes = ceiling_shapes(count_macs(onnx_path, median))
    return ceiling_for_lengths(onnx_path, lengths, measure_ceilings(shapes, threads, cache_dir, log, **measure))


def achieved_fraction(measured_samples_per_s: float, ceiling: Roofline | float) -> float:
    """Measured speed as a fraction of the GEMM-bound ceiling (1.0: every cycle went to GEMMs at full speed)."""
    limit = ceiling.ceiling_samples_per_s if isinstance(ceiling, Roofline) else float(ceiling)
    return measured_samples_per_s / limit


# ---------------------------------------------------------------- presets

def measured_preset_figures(threads: int, cache_dir: Path | str, k: int = 384, n: int = 1536, m: int = 32,
                            log: Callable[[str], None] = print, **measure: float) -> dict[str, float]:
    """MAC/s of each GEMM kind at one representative shape (default: the default model's FFN-in GEMM, 32
    tokens), measured once per machine."""
    ceilings = measure_ceilings([(kind, m, k, n) for kind in GEMM_KINDS], threads, cache_dir, log, **measure)
    return {kind: ceilings[(kind, m, k, n)].macs_per_s for kind in GEMM_KINDS}


def suggest_preset_measured(ceilings_by_kind: Mapping[str, float], fingerprint: dict,
                            margin: float = 1.2) -> tuple[str, str]:
    """The quantization preset the measured kernels point to (figures in MAC/s), and why.

    Flags alone mislead: a CPU with VNNI may run u8 × u8 at fp32 speed (seen on a Xeon) or at half its u8 × s8
    speed (seen on an EPYC). s8 weights win when they measure `margin` times as fast as u8 weights; u8 weights
    (avx2's preset) win when at least as fast; in between, the flags decide."""
    from ortgate.isa import suggest_preset

    preset, reason = suggest_preset(fingerprint)
    s8, u8 = ceilings_by_kind.get("u8s8"), ceilings_by_kind.get("u8u8")
    if not s8 or not u8:
        return preset, f"{reason} (from CPU flags only: no measured u8s8 and u8u8 GEMM figures)"
    figures = f"measured u8s8 {gops(s8):.0f} GOP/s, u8u8 {gops(u8):.0f} GOP/s"
    if ceilings_by_kind.get("fp32"):
        figures += f", fp32 {gops(ceilings_by_kind['fp32']):.0f} GFLOP/s"
    if s8 >= margin * u8:
        why = f"s8 weights run {s8 / u8:.1f}x as fast as u8 weights ({figures})"
        if preset in S8_WEIGHT_PRESETS:
            return preset, f"{reason}; {why}"
        return "arm64", (f"{why}; the flags pointed to {preset}, so the generic u8 × s8 preset, which assumes "
                         "no AVX-512")
    if u8 >= s8:
        flags = "" if preset == "avx2" else f"; the flags pointed to {preset}"
        return "avx2", f"u8 weights run as fast as s8 weights or faster ({figures}): avx2's preset uses u8{flags}"
    return preset, f"{reason}; s8 weights only {s8 / u8:.2f}x as fast as u8 weights ({figures}): the flags decide"


# ---------------------------------------------------------------- the run's stage

@dataclass(frozen=True)
class Limit:
    """One graph of the run against this CPU's limit."""

    variant: str
    roofline: Roofline
    macs_by_kind: dict[str, float]  # mean over the benchmark texts, per sample
    achieved_samples_per_s: float  # model only, from the round-robin cycles (median cycle)

    @property
    def fraction(self) -> float:
        return achieved_fraction(self.achieved_samples_per_s, self.roofline)

    def as_record(self) -> dict:
        """The fields of `record.result.RooflineResult`."""
        return {"tokens_mean": self.roofline.mean_tokens, "macs_per_sample": dict(self.macs_by_kind),
                "ceiling_samples_per_s": self.roofline.ceiling_samples_per_s,
                "achieved_samples_per_s": self.achieved_samples_per_s, "fraction": self.fraction}


class RooflineMeter:
    """The run's roofline stage: every distinct ONNX graph of the run (`SpeedMeter.interleaved_ids`), its MACs at
    the benchmark texts' token lengths, this CPU's GEMM ceilings at those shapes (measured once per machine and
    cached), and the share of the ceiling its model-only round-robin speed reached; once per run."""

    def __init__(self, meter, cache_dir: Path, threads: int, log: Callable[[str], None] = print,
                 progress_scope: Callable | None = None) -> None:
        self.meter, self.cache_dir, self.threads, self.log = meter, Path(cache_dir), threads, log
        self.progress_scope = progress_scope
        self.results: dict[str, Limit] = {}
        self.ceilings: Mapping[tuple[str, int, int, int], GemmCeiling] = {}

    def token_lengths(self, variant_id: str) -> list[int]:
        predictor = self.meter.plan.predictor(variant_id)
        return [int(predictor.encode([text])["input_ids"].shape[-1]) for text in self.meter.texts]

    def measure(self) -> dict[str, Limit]:
        if self.results:
            return self.results
        import statistics

        from ortgate.spec.variants import BASELINE_ID

        plan = self.meter.plan
        ids = [vid for vid in self.meter.interleaved_ids() if vid != BASELINE_ID]
        if not ids:
            return {}
        lengths = self.token_lengths(ids[0])  # one tokenizer for every graph of the model
        median = sorted(lengths)[len(lengths) // 2]
        paths = {vid: plan.built(vid).onnx_path for vid in ids}
        shapes = list(dict.fromkeys(s for vid in ids for s in ceiling_shapes(count_macs(paths[vid], median))))
        cycles = self.meter.interleaved("model-only")  # the round-robin, if no test has run it yet
        self.ceilings = measure_ceilings(shapes, self.threads, self.cache_dir, self.log)
        for vid in ids:
            counts = [count_macs(paths[vid], n).by_kind for n in lengths]
            kinds = sorted({k for c in counts for k in c})
            macs = {k: sum(c.get(k, 0) for c in counts) / len(counts) for k in kinds}
            achieved = len(self.meter.texts) / statistics.median(cycles[vid])
            self.results[vid] = Limit(vid, ceiling_for_lengths(paths[vid], lengths, self.ceilings), macs, achieved)
        return self.results
