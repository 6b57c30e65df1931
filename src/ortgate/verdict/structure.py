"""Structural checks: what a variant's graph must contain, independent of timing.

Two kinds:
- rules that follow from the variant's definition: a level-2+ graph of a BERT-like model has its
  Attention and SkipLayerNormalization fusions (unless the variant disables them); an int8 variant that
  quantizes MatMul leaves no MatMul with an fp32 weight and is at most a set fraction of its fp32
  parent's size;
- the expected structure, recorded per model on the first run (like a benchmark baseline) and compared
  on the next: a lost fusion or fewer quantized nodes fails with a message naming them, so a library
  upgrade that silently drops a fusion is caught even when timings are too noisy to show it. Level-99
  graphs are recorded per CPU; on a CPU without a record of its own, what the other CPUs' records agree on
  and does not depend on the CPU still applies (`cpu_independent_expectation`), and the result lists the
  rest as not checked.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from filelock import FileLock

from ortgate.build.graph import INT8_TYPES
from ortgate.files import atomic_write_text
from ortgate.spec.variants import Optimize, Quantize, VariantSet

# Which fusions ONNX Runtime's transformer optimizer writes at level 2+ for each model type, as measured on
# every architecture of tests/test_architectures.py (onnxruntime 1.32, Optimum 2.1): Optimum hands all of
# these to ORT's BERT optimizer, whose attention fusion matches the standard self-attention subgraph.
# CamemBERT (RoBERTa's code) and DeBERTa v1 (DeBERTa-v2's attention) are not in the matrix; their rows are
# assumed from the architectures they share code with.
#   "all":  one fused node per attention block of the export (its Softmax nodes);
#   "some": at least one fused node (ALBERT shares one layer's weights across layers, and ORT fuses the
#           attention of the first use only);
# MPNet (relative position bias in the scores) and DeBERTa-v2 (disentangled attention) keep their attention
# unfused, so they are held to SkipLayerNormalization only. Model types not listed get no fusion rule; the
# recorded expected structure still catches a fusion they lose.
_ATTENTION_AND_SKIP_LN = {"Attention": "all", "SkipLayerNormalization": "some"}
FUSIONS_BY_MODEL_TYPE = {
    **dict.fromkeys(("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"), _ATTENTION_AND_SKIP_LN),
    "albert": {"Attention": "some", "SkipLayerNormalization": "some"},
    **dict.fromkeys(("mpnet", "deberta", "deberta-v2"), {"SkipLayerNormalization": "some"}),
}
# The option that turns each fusion off: a variant that sets it is not held to that fusion.
FUSION_FLAGS = {"Attention": "disable_attention_fusion", "SkipLayerNormalization": "disable_skip_layer_norm_fusion"}
RECORDED_KEYS = ("nodes", "fused_operators", "quantized_nodes", "float_weight_matmuls", "initializer_types",
                 "size_bytes")
# What level 99 adds to level 2 are ONNX Runtime's layout transforms, and they depend on the CPU: NCHWc (blocks of
# the CPU's vector width; none without AVX) and NHWC (quantized convolutions). They rewrite only convolutions and
# pooling (`LAYOUT_INPUT_OPS` of the export), into `LAYOUT_FUSED_OPS` among others, insert reorder or transpose
# nodes and block weights. The rest of a level-99 graph (attention, LayerNorm, GELU fusions; what the quantizer
# makes of MatMuls) is the same on every CPU.
LAYOUT_INPUT_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool",
                    "QLinearConv", "Resize", "Upsample")
LAYOUT_FUSED_OPS = ("FusedConv", "NhwcConv", "NhwcFusedConv", "NhwcMaxPool", "QLinearConv", "QLinearAveragePool",
                    "QLinearGlobalAveragePool")


@dataclass(frozen=True)
class StructureCheck:
    variant_id: str
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    record: str = ""  # what happened to the record: "recorded", "re-recorded", "compared with ..."
    unchecked: tuple[str, ...] = ()  # expectations of the record not checked here (on a CPU not recorded), and why

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        head = f"{self.variant_id}: " + ("graph structure as expected" if self.passed else
                                         "graph structure check failed: " + "; ".join(self.problems))
        tail = [self.record] if self.record else []
        if self.unchecked:
            tail.append("not checked on this CPU: " + "; ".join(self.unchecked))
        if self.notes:
            tail.append("notes: " + "; ".join(self.notes))
        return head + ("\n  " + "\n  ".join(tail) if tail else "")


def quantizable_operators(step: Quantize, operators_quantized: list[str]) -> list[str]:
    """The asked-for operators that ONNX Runtime's quantizer handles in the step's mode and format (its
    registries): the others are left in fp32 by design, so no rule holds them to anything."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    registry = (IntegerOpsRegistry if step.mode == "dynamic" else
                QLinearOpsRegistry if step.format == "QOperator" else QDQRegistry)  # static's default is QDQ
    return [op for op in operators_quantized if op in registry]


def quantized_weight_share(graph: dict, fp32_graph: dict, operators: list[str]) -> tuple[float | None, int, int]:
    """(share of the parent's fp32 weight parameters read by `operators` that the variant no longer keeps in fp32
    for those operators, those parameters, the parameters left in fp32). Weight matrices only (2-D and up):
    biases, scales and LayerNorm vectors stay fp32 by design. Counted as what is left rather than as int8
    bytes, because the quantizer renames and reshapes weights (a Gemm becomes MatMulInteger on a transposed
    int8 copy) but leaves an unquantized weight where it was."""
    before = fp32_graph.get("float_weight_elements_by_op", {})
    after = graph.get("float_weight_elements_by_op", {})
    asked = sum(before.get(op, 0) for op in operators)
    left = sum(after.get(op, 0) for op in operators)
    return (1 - left / asked if asked else None), asked, left


def fusion_problems(step: Optimize, graph: dict, export_graph: dict | None, model_type: str) -> list[str]:
    """The fusions a level-2+ graph of this model type must have (FUSIONS_BY_MODEL_TYPE), unless disabled."""
    problems = []
    blocks = (export_graph or {}).get("operators", {}).get("Softmax", 0)  # attention blocks of the plain export
    for op, extent in FUSIONS_BY_MODEL_TYPE.get(model_type, {}).items():
        if step.option(FUSION_FLAGS[op]):
            continue
        found = graph["fused_operators"].get(op, 0)
        where = f"a level-{step.effective_level} graph of a {model_type} model"
        if not found:
            problems.append(f"no {op} fusion in {where} (fused operators: {_counts(graph['fused_operators'])})")
        elif extent == "all" and blocks and found < blocks:
            problems.append(f"{op} fused in {found} of the {blocks} attention blocks of {where}")
    return problems


def rule_problems(variants: VariantSet, variant_id: str, graph: dict, fp32_graph: dict | None, model_type: str,
                  operators_quantized: list[str] | None, min_weight_share: float,
                  export_graph: dict | None = None) -> list[str]:
    """Problems with the rules that follow from the variant's own definition and the model's type."""
    step = variants.specs[variant_id].step
    problems = []
    if isinstance(step, Optimize) and step.effective_level >= 2 \
            and step.option("enable_transformers_specific_optimizations"):
        problems += fusion_problems(step, graph, export_graph, model_type)
    if isinstance(step, Quantize) and operators_quantized:
        if "MatMul" in operators_quantized and graph["float_weight_matmuls"]:
            problems.append(f"{graph['float_weight_matmuls']} MatMul nodes still have fp32 weights although MatMul "
                            "was to be quantized")
        operators = quantizable_operators(step, operators_quantized)
        share, asked, left = quantized_weight_share(graph, fp32_graph, operators) if fp32_graph else (None, 0, 0)
        if share is not None and share < min_weight_share:
            problems.append(f"{left:,} of the {asked:,} fp32 weight parameters that {', '.join(operators)} read in the "
                            f"parent graph are still fp32 weights of those operators: {share:.1%} quantized, less "
                            f"than the required {min_weight_share:.0%} (operators asked for: "
                            f"{', '.join(operators_quantized)})")
    return problems


def rule_notes(graph: dict) -> list[str]:
    """What the rules do not fail but a reader should know about the graph."""
    per_call = graph.get("weights_quantized_per_call", 0)
    if per_call:
        return [f"{per_call} fp32 weights (shared between layers, reached through Identity) are quantized again on "
                "every call by DynamicQuantizeLinear instead of stored as int8: ONNX Runtime's dynamic quantizer "
                "takes them for activations"]
    return []


def _count_changes(old: dict, new: dict, lost: str, gained: str) -> tuple[list[str], list[str]]:
    """Counts that fell (problems) and rose (notes), each message formatted with (name, before, after)."""
    problems, notes = [], []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, 0), new.get(name, 0)
        if after < before:
            problems.append(lost.format(name, before, after))
        elif after > before:
            notes.append(gained.format(name, before, after))
    return problems, notes


def compare_structure(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(problems, notes) between a recorded structure and this run's: losses fail, gains are noted."""
    problems, notes = _count_changes(old["fused_operators"], new["fused_operators"],
                                     "lost fusion {0}: {1} → {2} nodes", "more {0} nodes: {1} → {2}")
    fewer, more = _count_changes(old["quantized_nodes"], new["quantized_nodes"],
                                 "fewer quantized nodes ({0}): {1} → {2}", "more quantized nodes ({0}): {1} → {2}")
    problems, notes = problems + fewer, notes + more
    if new["float_weight_matmuls"] > old["float_weight_matmuls"]:
        problems.append(f"MatMuls with fp32 weights: {old['float_weight_matmuls']} → {new['float_weight_matmuls']}")
    for dtype in ("INT8", "UINT8"):
        before, after = old["initializer_types"].get(dtype, 0), new["initializer_types"].get(dtype, 0)
        if after < before:
            problems.append(f"fewer {dtype} weights: {before} → {after}")
    if new["nodes"] != old["nodes"]:
        notes.append(f"nodes {old['nodes']} → {new['nodes']}")
    if old["size_bytes"] and abs(new["size_bytes"] / old["size_bytes"] - 1) > 0.05:
        notes.append(f"size {old['size_bytes'] / 1e6:.1f} MB → {new['size_bytes'] / 1e6:.1f} MB")
    return problems, notes


def layout_rewritten_nodes(export_graph: dict | None) -> int:
    """The export's nodes that level 99's layout transforms rewrite differently per CPU (convolutions, pooling)."""
    return sum((export_graph or {}).get("operators", {}).get(op, 0) for op in LAYOUT_INPUT_OPS)


def _agreed(values: dict[str, int], what: str, unchecked: list[str]) -> bool:
    """Whether every recorded CPU (id -> value) has the same value; if not, `unchecked` says so."""
    if len(set(values.values())) <= 1:
        return True
    unchecked.append(f"{what} (the recorded CPUs differ: {', '.join(f'{cpu} {v}' for cpu, v in values.items())})")
    return False


def _expected_counts(recorded: dict[str, dict], current: dict, what: str, unchecked: list[str],
                     cpu_dependent: tuple[str, ...] = ()) -> dict:
    """Per name: the count every recorded CPU (id -> counts) agrees on, else (CPU-dependent, or no agreement)
    the current graph's own, so that it is not compared."""
    names = sorted(set(current).union(*recorded.values()))
    expected = {}
    for name in names:
        values = {cpu: counts.get(name, 0) for cpu, counts in recorded.items()}
        agreed = name not in cpu_dependent and _agreed(values, what.format(name), unchecked)
        expected[name] = next(iter(values.values())) if agreed and values else current.get(name, 0)
    return expected


def cpu_independent_expectation(recorded: dict[str, dict], structure: dict, layout_nodes: int) -> tuple[
        dict, list[str]]:
    """What the structures recorded for other CPUs (CPU id -> structure) expect of this CPU's graph `structure`,
    as a structure to compare it with (`compare_structure`): the values every recorded CPU agrees on that do not
    depend on the CPU, and this graph's own values elsewhere (not compared); with the expectations not checked
    and why. `layout_nodes`: the export's nodes that level 99 lays out per CPU (`layout_rewritten_nodes`)."""
    unchecked = ["node count and file size (level 99's layout transforms may add reorder nodes and block "
                 "weights for the CPU that optimizes the graph)"]
    layout = LAYOUT_FUSED_OPS if layout_nodes else ()
    if layout_nodes:
        unchecked.append(f"quantized-node counts, int8 weight counts and the fusions {', '.join(layout)} (the export "
                         f"has {layout_nodes} convolution or pooling nodes, which level 99's NCHWc and NHWC layout "
                         "transforms rewrite differently per CPU)")
    fused = _expected_counts({c: r["fused_operators"] for c, r in recorded.items()}, structure["fused_operators"],
                             "fusion {}", unchecked, layout)
    quantized = structure["quantized_nodes"] if layout_nodes else _expected_counts(
        {c: r["quantized_nodes"] for c, r in recorded.items()}, structure["quantized_nodes"],
        "quantized nodes ({})", unchecked)
    types = dict(structure["initializer_types"])
    if not layout_nodes:
        int8 = {c: {t: n for t, n in r["initializer_types"].items() if t in INT8_TYPES} for c, r in recorded.items()}
        current = {t: n for t, n in types.items() if t in INT8_TYPES}
        types.update(_expected_counts(int8, current, "{} weights", unchecked))
    matmuls = {c: r["float_weight_matmuls"] for c, r in recorded.items()}
    agreed = _agreed(matmuls, "MatMuls with fp32 weights", unchecked)
    return {**structure, "fused_operators": fused, "quantized_nodes": quantized, "initializer_types": types,
            "float_weight_matmuls": next(iter(matmuls.values())) if agreed else structure["float_weight_matmuls"]}, \
        unchecked


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}×{v}" for k, v in counts.items()) or "none"


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:] or "model"


class RecordCheck(NamedTuple):
    """A graph against its recorded expected structure."""

    problems: list[str]
    notes: list[str]
    record: str  # what happened to the record: "recorded ...", "compared with ..."
    unchecked: tuple[str, ...] = ()  # expectations not checked (a CPU without a record of its own), and why


def _hint(problems: list[str], definition_changed: bool) -> list[str]:
    if not problems:
        return []
    if definition_changed:
        return ["the variant's definition changed since it was recorded; if that was intended, record it again "
                "with --ortgate-update-structure"]
    return ["if the change is intended, record it again with --ortgate-update-structure"]


def _recorded_with(old: dict) -> str:
    return (f"recorded {old['recorded']} with onnxruntime {old['versions'].get('onnxruntime')}, optimum "
            f"{old['versions'].get('optimum')}")


class StructureRecords:
    """The expected structures of one model's variants: `<folder>/<model>.json`, written atomically under a
    lock. Hardware-specific variants are recorded per CPU fingerprint (`<variant>@<cpu id>`)."""

    def __init__(self, folder: Path, model_name: str) -> None:
        self.path = Path(folder) / f"{model_slug(model_name)}.json"
        self.model_name = model_name

    def load(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text()).get("variants", {})
        except (OSError, ValueError) as exc:
            from ortgate.errors import ConfigError

            raise ConfigError(f"the structure record {self.path} is unreadable ({exc}); fix or delete it, then "
                              "run with --ortgate-update-structure to record it again") from None

    def check(self, key: str, structure: dict, step_hash: str, versions: dict, update: bool,
              other_cpus_of: str | None = None, layout_nodes: int = 0) -> RecordCheck:
        """Compare with the record for `key` (recording it if absent or `update`).

        `other_cpus_of`: `key` is `<other_cpus_of><cpu id>`, the record for this CPU of a variant whose graph
        depends on the CPU (level 99). When this CPU has none, the variant's records for other CPUs give what
        does not depend on the CPU (`cpu_independent_expectation`, with `layout_nodes`); the graph is recorded for
        this CPU only if it meets that, and the result says what was not checked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        # The lock lives in the temp folder, not beside the record: that folder is meant to be committed.
        with FileLock(str(Path(tempfile.gettempdir()) / f"ortgate-structure-{digest}.lock")):
            records = self.load()
            old = records.get(key)
            if old is not None and not update:
                problems, notes = compare_structure(old["structure"], structure)
                problems += _hint(problems, old.get("step_hash") != step_hash)
                return RecordCheck(problems, notes, f"compared with the structure {_recorded_with(old)} ({self.path})")
            others = {k.removeprefix(other_cpus_of): r for k, r in records.items()
                      if other_cpus_of and not update and k.startswith(other_cpus_of) and k != key}
            crossed = self._check_across_cpus(others, structure, step_hash, layout_nodes) if others else None
            if crossed is not None and crossed.problems:
                return crossed  # not recorded: the next run on this CPU checks it again
            records[key] = {"structure": {k: structure[k] for k in RECORDED_KEYS}, "step_hash": step_hash,
                            "versions": versions, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            doc = {"model": self.model_name, "note": "expected graph structure per variant, recorded by ortgate; "
                   "commit it like a benchmark baseline", "variants": dict(sorted(records.items()))}
            atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=False) + "\n")
            what = ("re-recorded" if old is not None else "recorded") + " as the expected structure" + (
                f" for this CPU ({key.removeprefix(other_cpus_of)})" if other_cpus_of else "") + f" in {self.path}"
            return crossed._replace(record=f"{crossed.record}; {what}") if crossed else RecordCheck([], [], what)

    def _check_across_cpus(self, others: dict[str, dict], structure: dict, step_hash: str,
                           layout_nodes: int) -> RecordCheck:
        """This CPU's graph against what the records of other CPUs (CPU id -> record) agree on and does not
        depend on the CPU; records of the variant's current definition when there are any."""
        same = {cpu: r for cpu, r in others.items() if r.get("step_hash") == step_hash}
        used = same or others
        expected, unchecked = cpu_independent_expectation({cpu: r["structure"] for cpu, r in used.items()},
                                                          structure, layout_nodes)
        problems, notes = compare_structure(expected, structure)
        problems += _hint(problems, not same)
        latest = max(used.values(), key=lambda r: r["recorded"])
        record = (f"no structure recorded for this CPU: compared with what the structures recorded for "
                  f"{len(used)} other CPU(s) ({', '.join(used)}; latest {_recorded_with(latest)}) agree on and "
                  f"does not depend on the CPU ({self.path})")
        return RecordCheck(problems, notes, record, tuple(unchecked))
