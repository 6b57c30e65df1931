"""Where a quantized graph loses accuracy: its intermediate tensors against its fp32 parent's, node by node.

A failing int8 variant says only that its logits moved. To repair it (keep a few nodes in fp32 with the
quantizer's `nodes_to_exclude`) or explain it (`ortgate diagnose`), one needs the nodes that add the error. Both
graphs are run on the same rows with every intermediate tensor exposed as a graph output; each parent tensor is
compared with the quantized graph's tensor of the same name (ORT's quantizers keep the float names of the tensors
they replace), and each parent node is charged the noise it adds. The ranking names parent nodes, because those
are the names `nodes_to_exclude` takes.

The charge, `introduced_db`, is CAP_DB (120) plus 10*log10 of the noise fraction, noise / (signal + noise), that
the node's output has beyond its worst input's: CAP_DB - SQNR(output) when its inputs are exact and its output is
close. Not the plain difference SQNR(worst input) - SQNR(output): that charges a node by how clean its inputs
were, so every node reading graph inputs (a quantized embedding Gather: 120 -> 43 dB, "77 dB lost") outranks a
MatMul deep in the graph that adds five times more noise (43 -> 35 dB, "8 dB lost"), and on the tiny BERT a
MatMul with ruined weights (35 -> -2 dB) ranked below the embeddings. The fraction, unlike noise/signal, stays
below 1, so the nodes after a ruined one, amplifying noise that already swamps the signal, are charged less than
it. Nodes left in fp32 can be charged too where they amplify relative noise (LayerNorm removes the mean that
dominated the signal), hence `Diagnosis.worst(quantized_only=True)` for repairs. Totals per layer or op type add
the nodes' noise fractions, not their dB.

Why not `qdq_loss_debug.modify_model_output_intermediate_tensors` to expose the tensors: it keeps only tensors
that ONNX shape inference typed, and ONNX does not know ORT's contrib ops, so on a graph optimized at level 99
(Attention, SkipLayerNormalization, BiasGelu) it keeps nothing downstream of the first of them (7 of 30 node
outputs of the tiny BERT). Here every node output becomes a graph output with no type, and ORT (which knows its
contrib ops) infers it; only the float ones are fetched. For QDQ graphs, qdq_loss_debug's
`create_activation_matching` pairs each activation with its post-QDQ value, which is what the next node reads.

Both graphs run with graph optimizations off: ORT would otherwise fuse nodes and drop the tensors between them.
Errors are summed over all rows (sums of squares, one running total per tensor), never stored per row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ortgate.errors import OrtgateError

CAP_DB = 120.0  # the SQNR an exact tensor (graph inputs, untouched branches) counts as in introduced_db
QDQ_METHOD = "qdq_loss_debug"
NAME_METHOD = "tensor-name matching"
_FLOAT_TYPES = frozenset({"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"})
_VIEW_SUFFIX = "_ortgate_dequantized"  # a QOperator int8 tensor, dequantized so it can be compared
_QUANTIZED_SUFFIX = "_quantized"
_QDQ_OUTPUT = re.compile(r"_DequantizeLinear_Output(_\d+)?$")
_LAYER = re.compile(r"(?<![A-Za-z])(layers?|blocks?)[._/-]?(\d+)", re.IGNORECASE)
_HEAD = re.compile(r"classifier|pooler|(?<![A-Za-z])head|logits", re.IGNORECASE)
_EMBEDDINGS = re.compile(r"embed", re.IGNORECASE)
_LARGE_MODEL_BYTES = 1_500_000_000  # above this the augmented copy keeps its weights in an external file


class DiagnoseError(OrtgateError):
    """The two graphs cannot be compared (missing file, wrong parent, inputs the rows lack)."""


# ------------------------------------------------------------------ results


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _from_json(value: float | None) -> float:
    """None stands for +inf: an exact tensor's SQNR, or the relative error of a tensor whose parent is all zeros."""
    return math.inf if value is None else float(value)


@dataclass(frozen=True)
class NodeError:
    node: str  # node name in the fp32 parent graph ("" where it has none: nodes_to_exclude cannot name it)
    op_type: str
    layer: str  # "layer.3", "after layer.3", "embeddings", "head" or ""
    tensor: str  # the output tensor compared
    sqnr_db: float  # 10*log10(sum f^2 / sum (q-f)^2) over all rows; inf when exact
    relative_error: float  # ||q - f|| / ||f|| over all rows
    introduced_db: float  # CAP_DB + 10*log10(noise fraction added to its worst input's); 0: none. Ranking key
    quantized: bool  # the quantized graph computes it on int8 values (replaced op, int8 output, or QDQ around it)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"], d["relative_error"] = _json_float(self.sqnr_db), _json_float(self.relative_error)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeError:
        return cls(node=d["node"], op_type=d["op_type"], layer=d["layer"], tensor=d["tensor"],
                   sqnr_db=_from_json(d["sqnr_db"]), relative_error=_from_json(d["relative_error"]),
                   introduced_db=float(d["introduced_db"]), quantized=bool(d["quantized"]))


def _noise_fraction(db: float) -> float:
    """noise / (signal + noise) of a tensor with this SQNR: the noise-to-signal ratio while that is small, but
    bounded by 1, so that a ruined tensor's successors, amplifying noise that already swamps the signal, are
    not charged more than the node that ruined it. An exact tensor (inf dB) counts as CAP_DB."""
    ratio = 10.0 ** (-min(CAP_DB, db) / 10.0)
    return ratio / (1.0 + ratio)


def _as_introduced_db(added_fraction: float) -> float:
    return max(0.0, CAP_DB + 10.0 * math.log10(added_fraction)) if added_fraction > 0 else 0.0


def _added_fraction(introduced_db: float) -> float:
    return 10.0 ** ((introduced_db - CAP_DB) / 10.0) if introduced_db > 0 else 0.0


def _summed(nodes: Iterable[NodeError], key) -> list[tuple[str, float]]:
    """introduced_db of groups of nodes: their added noise fractions summed, in the same dB scale."""
    totals: dict[str, float] = {}
    for node in nodes:
        totals[key(node)] = totals.get(key(node), 0.0) + _added_fraction(node.introduced_db)
    return sorted(((label, _as_introduced_db(total)) for label, total in totals.items()),
                  key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True)
class Diagnosis:
    variant: str
    parent: str
    rows: int  # runs compared (one per feed)
    method: str  # QDQ_METHOD or NAME_METHOD
    nodes: tuple[NodeError, ...]  # ranked by introduced_db, worst first
    logits_sqnr_db: float  # at the graph output ("logits" where the graph has it)

    def by_layer(self) -> list[tuple[str, float]]:
        """introduced_db per layer label (the layer's nodes' added noise summed), largest first."""
        return _summed(self.nodes, lambda n: n.layer)

    def by_op_type(self) -> list[tuple[str, float]]:
        return _summed(self.nodes, lambda n: n.op_type)

    def worst(self, k: int, quantized_only: bool = True) -> list[NodeError]:
        """The k worst nodes that `nodes_to_exclude` can name (unnamed parent nodes are skipped): what a
        repair keeps in fp32. Excluding a node the quantizer left in fp32 changes nothing, hence quantized_only."""
        return [n for n in self.nodes if n.node and (n.quantized or not quantized_only)][:k]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (infinite values as None)."""
        return {"variant": self.variant, "parent": self.parent, "rows": self.rows, "method": self.method,
                "logits_sqnr_db": _json_float(self.logits_sqnr_db), "nodes": [n.as_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnosis:
        return cls(variant=d["variant"], parent=d["parent"], rows=int(d["rows"]), method=d["method"],
                   nodes=tuple(NodeError.from_dict(n) for n in d["nodes"]),
                   logits_sqnr_db=_from_json(d["logits_sqnr_db"]))


# ------------------------------------------------------------------ graph structure


@dataclass(frozen=True)
class _Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class _Graph:
    """The top-level structure of a graph (subgraphs of If/Loop are not compared)."""

    nodes: tuple[_Node, ...]
    inputs: frozenset[str]
    initializers: frozenset[str]
    outputs: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> _Graph:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        nodes = tuple(_Node(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node)
        initializers = frozenset(i.name for i in graph.initializer)
        return cls(nodes, frozenset(i.name for i in graph.input) - initializers, initializers,
                   tuple(o.name for o in graph.output))

    def producers(self) -> dict[str, _Node]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[_Node]]:
        found: dict[str, list[_Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                found.setdefault(name, []).append(node)
        return found

    def is_qdq(self) -> bool:
        """Static QDQ format: activations pass QuantizeLinear -> DequantizeLinear, named by ORT's suffixes."""
        return any(_QDQ_OUTPUT.search(out) for node in self.nodes if node.op_type == "DequantizeLinear"
                   for out in node.outputs)


def _own_params(name: str, known: set[str]) -> tuple[str, str] | None:
    """`X_scale`/`X_zero_point` for `X_quantized`, the names ORT's quantizer gives them, where both exist."""
    base = name[: -len(_QUANTIZED_SUFFIX)]
    scale, zero = f"{base}_scale", f"{base}_zero_point"
    return (scale, zero) if name.endswith(_QUANTIZED_SUFFIX) and scale in known and zero in known else None


def _quantization_params(graph: _Graph) -> dict[str, tuple[str, str]]:
    """Scale and zero point of each int8 tensor `X_quantized` of a QOperator graph whose float X is gone.

    Quantizing ops (QLinear*, QuantizeLinear) and int8 weights have their own; ops that only move int8 data
    (Reshape, Transpose, Gather...) keep their first input's, so those are inherited along the graph."""
    produced = graph.producers()
    known = set(graph.initializers) | set(graph.inputs) | set(produced)
    params = {name: p for name in graph.initializers if (p := _own_params(name, known))}
    for node in graph.nodes:
        own = node.op_type in ("QuantizeLinear", "QGemm") or node.op_type.startswith("QLinear")
        inherited = params.get(node.inputs[0]) if node.inputs else None
        for out in node.outputs:
            if not out.endswith(_QUANTIZED_SUFFIX) or out[: -len(_QUANTIZED_SUFFIX)] in produced:
                continue
            found = _own_params(out, known) if own else None
            if found or inherited:
                params[out] = found or inherited
    return {name: value for name, value in params.items() if name in produced}


# ------------------------------------------------------------------ running both graphs


def _augment(source: Path, target: Path, graph: _Graph, dequantize: bool) -> Path:
    """A copy of `source` whose every node output is also a graph output, typed by ORT when it loads it."""
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    exposed = set(graph.outputs)
    if dequantize:
        for name, (scale, zero) in _quantization_params(graph).items():
            view = name[: -len(_QUANTIZED_SUFFIX)] + _VIEW_SUFFIX
            model.graph.node.append(helper.make_node("DequantizeLinear", [name, scale, zero], [view],
                                                     name=f"ortgate/{view}"))
    for node in model.graph.node:
        for out in node.output:
            if out and out not in exposed:
                model.graph.output.append(helper.make_empty_tensor_value_info(out))
                exposed.add(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    large = sum(len(t.raw_data) for t in model.graph.initializer) > _LARGE_MODEL_BYTES
    onnx.save_model(model, str(target), save_as_external_data=large, location=f"{target.name}.data")
    return target


def _session(path: Path, threads: int):
    import onnxruntime as ort

    from ortgate.build.runtime import session_options

    options = session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise DiagnoseError(f"ONNX Runtime cannot load the augmented graph {path}: {exc}. Check that the "
                            "original graph loads in ONNX Runtime on its own") from exc


class _Runner:
    """One graph's session, fetching only its float tensors."""

    def __init__(self, path: Path, threads: int, what: str) -> None:
        self.session, self.what = _session(path, threads), what
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = [o.name for o in self.session.get_outputs() if o.type in _FLOAT_TYPES]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.inputs if name not in feed]
        if missing:
            raise DiagnoseError(f"the rows lack the inputs {missing} that the {self.what} graph needs; "
                                f"tokenize the rows for its inputs {self.inputs}")
        values = self.session.run(self.names, {name: feed[name] for name in self.inputs})
        return dict(zip(self.names, values, strict=True))


def _paired(quantized: Mapping[str, np.ndarray], parent: Mapping[str, np.ndarray],
            qdq: bool) -> dict[str, np.ndarray]:
    """Parent tensor name -> the quantized graph's value for it (post-QDQ in QDQ graphs, dequantized views of
    QOperator int8 tensors)."""
    pairs = {name: value for name, value in quantized.items() if name in parent}
    for name, value in quantized.items():
        if name.endswith(_VIEW_SUFFIX) and name[: -len(_VIEW_SUFFIX)] in parent:
            pairs.setdefault(name[: -len(_VIEW_SUFFIX)], value)
    if qdq:
        from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

        matching = create_activation_matching({k: [v] for k, v in quantized.items()},
                                              {k: [v] for k, v in parent.items()})
        for name, match in matching.items():
            if name in parent:
                pairs[name] = match["post_qdq"][0]
    return pairs


def _accumulate(quantized: _Runner, parent: _Runner, feeds: Sequence[Mapping[str, np.ndarray]],
                qdq: bool) -> dict[str, np.ndarray]:
    """Per parent tensor: [sum f^2, sum (q - f)^2] over all rows. A tensor whose shapes differ in any row is
    dropped (the graphs compute something else there)."""
    sums: dict[str, np.ndarray] = {}
    dropped: set[str] = set()
    for feed in feeds:
        floats = parent.run(feed)
        for name, value in _paired(quantized.run(feed), floats, qdq).items():
            reference = floats[name]
            if name in dropped or value.shape != reference.shape:
                dropped.add(name)
                sums.pop(name, None)
                continue
            f = reference.astype(np.float64)
            noise = value.astype(np.float64) - f
            total = sums.setdefault(name, np.zeros(2))
            total += (float(np.sum(f * f)), float(np.sum(noise * noise)))
    return sums


# ------------------------------------------------------------------ errors per node


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if not math.isfinite(noise) or not signal > 0:  # NaN/inf in the quantized graph, or an all-zero parent tensor
        return -CAP_DB
    return max(-CAP_DB, 10.0 * math.log10(signal / noise))


def _relative_error(signal: float, noise: float) -> float:
    if noise == 0:
        return 0.0
    if not math.isfinite(noise) or not signal > 0:
        return math.inf
    return math.sqrt(noise / signal)


def _introduced_db(input_dbs: Sequence[float], output_db: float) -> float:
    """CAP_DB minus the SQNR of the noise the node adds to its worst input's (see the module docstring)."""
    worst_input = max(map(_noise_fraction, input_dbs), default=_noise_fraction(CAP_DB))
    return _as_introduced_db(_noise_fraction(output_db) - worst_input)


def _layer_of(text: str) -> str | None:
    match = _LAYER.search(text)
    if match is None:
        return None
    word = match.group(1).lower()
    return f"{word[:-1] if word.endswith('s') else word}.{match.group(2)}"


def _layer_labels(nodes: Sequence[_Node]) -> list[str]:
    """A layer from the node's name or output names; else "head"/"embeddings" by name; else the last layer seen
    in topological order ("after layer.3"), since fused nodes (Attention_0) often lose the layer in their name."""
    labels, last = [], None
    for node in nodes:
        names = (node.name, *node.outputs)
        own = next((layer for layer in map(_layer_of, names) if layer), None)
        if own:
            last, label = own, own
        elif any(_HEAD.search(n) for n in names):
            label = "head"
        elif any(_EMBEDDINGS.search(n) for n in names):
            label = "embeddings"
        else:
            label = f"after {last}" if last else ""
        labels.append(label)
    return labels


def _was_quantized(node: _Node, tensor: str, quantized: _Graph, producers: Mapping[str, _Node],
                   consumers: Mapping[str, list[_Node]], qdq: bool) -> bool:
    """Quantized unless the quantized graph still computes `tensor` with the same op under the same name and,
    in QDQ graphs, neither reads DequantizeLinear outputs nor passes `tensor` through QDQ. (Elsewhere a
    DequantizeLinear input only means a quantized node came before: an Add after dequantized embeddings.)"""
    producer = producers.get(tensor)
    if producer is None or producer.op_type != node.op_type or producer.name != node.name:
        return True
    if not qdq:
        return False
    if any(producers[i].op_type == "DequantizeLinear" for i in producer.inputs if i in producers):
        return True
    return any(c.op_type == "QuantizeLinear" for c in consumers.get(tensor, ()))


def _node_errors(parent: _Graph, quantized: _Graph, sums: Mapping[str, np.ndarray],
                 qdq: bool) -> tuple[NodeError, ...]:
    db = {name: _sqnr_db(*total) for name, total in sums.items()}
    producers, consumers = quantized.producers(), quantized.consumers()
    found = []
    for node, layer in zip(parent.nodes, _layer_labels(parent.nodes), strict=True):
        tensor = next((out for out in node.outputs if out in sums), None)
        if tensor is None:
            continue
        inputs = [CAP_DB if name in parent.inputs else db[name]
                  for name in node.inputs if name in parent.inputs or name in db]
        introduced = _introduced_db(inputs, db[tensor])
        found.append(NodeError(node=node.name, op_type=node.op_type, layer=layer, tensor=tensor,
                               sqnr_db=db[tensor], relative_error=_relative_error(*sums[tensor]),
                               introduced_db=introduced,
                               quantized=_was_quantized(node, tensor, quantized, producers, consumers, qdq)))
    # Ties (most often 0: no noise of its own is visible) go to the noisier output.
    return tuple(sorted(found, key=lambda n: (-n.introduced_db, n.sqnr_db)))


def _logits_sqnr(parent: _Graph, sums: Mapping[str, np.ndarray]) -> float:
    outputs = sorted(parent.outputs, key=lambda name: name != "logits")
    compared = [name for name in outputs if name in sums]
    if not compared:
        raise DiagnoseError(f"no graph output of the parent ({list(parent.outputs)}) could be compared with the "
                            "quantized graph's: pass the fp32 graph the variant was quantized from")
    return _sqnr_db(*sums[compared[0]])


# ------------------------------------------------------------------ entry points


def _check(quantized_onnx: Path, parent_onnx: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
    for path, what in ((quantized_onnx, "quantized"), (parent_onnx, "parent")):
        if not Path(path).is_file():
            raise DiagnoseError(f"the {what} graph {path} does not exist; build the variant (and its parent) first")
    if not feeds:
        raise DiagnoseError("no rows to compare the graphs on; pass at least one tokenized row")


def diagnose_graphs(quantized_onnx: Path, parent_onnx: Path, feeds: Sequence[dict[str, np.ndarray]], threads: int,
                    work_dir: Path, variant: str = "variant", parent: str = "parent") -> Diagnosis:
    """Rank the parent graph's nodes by the SQNR they lose in the quantized graph, over `feeds` (one run each).

    The augmented copies of both graphs are written into `work_dir`."""
    quantized_onnx, parent_onnx, work_dir = Path(quantized_onnx), Path(parent_onnx), Path(work_dir)
    _check(quantized_onnx, parent_onnx, feeds)
    q_graph, p_graph = _Graph.load(quantized_onnx), _Graph.load(parent_onnx)
    qdq = q_graph.is_qdq()
    q_runner = _Runner(_augment(quantized_onnx, work_dir / "quantized.augmented.onnx", q_graph, dequantize=True),
                       threads, "quantized")
    p_runner = _Runner(_augment(parent_onnx, work_dir / "parent.augmented.onnx", p_graph, dequantize=False),
                       threads, "parent")
    sums = _accumulate(q_runner, p_runner, feeds, qdq)
    if not sums:
        raise DiagnoseError(f"{quantized_onnx} and {parent_onnx} share no float tensor of the same name and shape; "
                            "pass the fp32 graph the variant was quantized from as the parent")
    return Diagnosis(variant=variant, parent=parent, rows=len(feeds), method=QDQ_METHOD if qdq else NAME_METHOD,
                     nodes=_node_errors(p_graph, q_graph, sums, qdq), logits_sqnr_db=_logits_sqnr(p_graph, sums))


def _db(value: float) -> str:
    return "exact" if value == math.inf else f"{value:.1f}"


def render_diagnosis_markdown(d: Diagnosis, top: int = 10) -> str:
    """The worst nodes, then the loss per layer and per op type: where to look, and what a repair would exclude."""
    lines = [f"### Where {d.variant} loses accuracy (against {d.parent})", "",
             f"{d.rows} rows, {d.method}; logits SQNR {_db(d.logits_sqnr_db)} dB. "
             f"Introduced = {CAP_DB:.0f} dB minus the SQNR of the noise a node adds to its inputs' "
             "(higher is worse; 0: adds none).", "",
             "| # | node | op | layer | quantized | introduced dB | SQNR dB | relative error |",
             "|---|---|---|---|---|---|---|---|"]
    for rank, n in enumerate(d.nodes[:top], start=1):
        lines.append(f"| {rank} | `{n.node or '(unnamed)'}` | {n.op_type} | {n.layer or '-'} | "
                     f"{'yes' if n.quantized else 'no'} | {n.introduced_db:.1f} | {_db(n.sqnr_db)} | "
                     f"{n.relative_error:.3g} |")
    for title, rows in (("layer", d.by_layer()), ("op type", d.by_op_type())):
        lines += ["", f"| {title} | introduced dB |", "|---|---|"]
        lines += [f"| {label or '-'} | {total:.1f} |" for label, total in rows]
    return "\n".join(lines) + "\n"
