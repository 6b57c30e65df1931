"""Structural checks: what a variant's graph must contain, independent of timing.

Two kinds:
- rules that follow from the variant's definition: a level-2+ graph of a BERT-like model has its
  Attention and SkipLayerNormalization fusions (unless the variant disables them); an int8 variant that
  quantizes MatMul leaves no MatMul with an fp32 weight and is at most a set fraction of its fp32
  parent's size;
- the expected structure, recorded per model on the first run (like a benchmark baseline) and compared
  on the next: a lost fusion or fewer quantized nodes fails with a message naming them, so a library
  upgrade that silently drops a fusion is caught even when timings are too noisy to show it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ortgate.variants import Optimize, Quantize, VariantSet

# Model types whose graphs ORT's transformer optimizer fuses into Attention + SkipLayerNormalization.
FUSING_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "albert", "electra",
                      "mpnet", "deberta", "deberta-v2")
EXPECTED_FUSIONS = {"Attention": "disable_attention_fusion", "SkipLayerNormalization": "disable_skip_layer_norm_fusion"}
RECORDED_KEYS = ("nodes", "fused_operators", "quantized_nodes", "float_weight_matmuls", "initializer_types",
                 "size_bytes")


@dataclass(frozen=True)
class StructureCheck:
    variant_id: str
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    record: str = ""  # what happened to the record: "recorded", "re-recorded", "compared with ..."

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        head = f"{self.variant_id}: " + ("graph structure as expected" if self.passed else
                                         "graph structure check failed: " + "; ".join(self.problems))
        tail = [self.record] if self.record else []
        if self.notes:
            tail.append("notes: " + "; ".join(self.notes))
        return head + ("\n  " + "\n  ".join(tail) if tail else "")


def rule_problems(variants: VariantSet, variant_id: str, graph: dict, fp32_graph: dict | None, model_type: str,
                  operators_quantized: list[str] | None, max_int8_size_fraction: float) -> list[str]:
    """Problems with the rules that follow from the variant's own definition."""
    step = variants.specs[variant_id].step
    problems = []
    if (isinstance(step, Optimize) and step.effective_level >= 2 and model_type in FUSING_MODEL_TYPES
            and step.option("enable_transformers_specific_optimizations")):
        for op, flag in EXPECTED_FUSIONS.items():
            if not step.option(flag) and not graph["fused_operators"].get(op):
                problems.append(f"no {op} fusion in a level-{step.effective_level} graph of a {model_type} model "
                                f"(fused operators: {_counts(graph['fused_operators'])})")
    if isinstance(step, Quantize) and "MatMul" in (operators_quantized or []):
        # MatMul carries most of a transformer's weights: quantizing it must quantize every weight MatMul
        # and shrink the graph. (Lists without MatMul, e.g. fused operators only, are not held to this.)
        if graph["float_weight_matmuls"]:
            problems.append(f"{graph['float_weight_matmuls']} MatMul nodes still have fp32 weights although MatMul "
                            "was to be quantized")
        if fp32_graph is not None:
            fraction = graph["size_bytes"] / fp32_graph["size_bytes"]
            if fraction > max_int8_size_fraction:
                problems.append(f"the int8 graph is {fraction:.0%} of its fp32 parent's size, more than the "
                                f"allowed {max_int8_size_fraction:.0%} (int8 weights: "
                                f"{graph['int8_weight_fraction']:.0%} of weight bytes; quantized operators asked "
                                f"for: {', '.join(operators_quantized)})")
    return problems


def compare_structure(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(problems, notes) between a recorded structure and this run's: losses fail, gains are noted."""
    problems, notes = [], []
    for op in sorted(set(old["fused_operators"]) | set(new["fused_operators"])):
        before, after = old["fused_operators"].get(op, 0), new["fused_operators"].get(op, 0)
        if after < before:
            problems.append(f"lost fusion {op}: {before} → {after} nodes")
        elif after > before:
            notes.append(f"more {op} nodes: {before} → {after}")
    for kind in sorted(set(old["quantized_nodes"]) | set(new["quantized_nodes"])):
        before, after = old["quantized_nodes"].get(kind, 0), new["quantized_nodes"].get(kind, 0)
        if after < before:
            problems.append(f"fewer quantized nodes ({kind}): {before} → {after}")
        elif after > before:
            notes.append(f"more quantized nodes ({kind}): {before} → {after}")
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


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}×{v}" for k, v in counts.items()) or "none"


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:] or "model"


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

    def check(self, key: str, structure: dict, step_hash: str, versions: dict, update: bool) -> tuple[
            list[str], list[str], str]:
        """Compare with the record for `key` (recording it if absent or `update`): problems, notes, what happened."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        # The lock lives in the temp folder, not beside the record: that folder is meant to be committed.
        with FileLock(str(Path(tempfile.gettempdir()) / f"ortgate-structure-{digest}.lock")):
            records = self.load()
            old = records.get(key)
            if old is not None and not update:
                problems, notes = compare_structure(old["structure"], structure)
                record = (f"compared with the structure recorded {old['recorded']} with onnxruntime "
                          f"{old['versions'].get('onnxruntime')}, optimum {old['versions'].get('optimum')} "
                          f"({self.path})")
                if problems and old.get("step_hash") != step_hash:
                    problems.append("the variant's definition changed since it was recorded; if that was intended, "
                                    "record it again with --ortgate-update-structure")
                elif problems:
                    problems.append("if the change is intended, record it again with --ortgate-update-structure")
                return problems, notes, record
            records[key] = {"structure": {k: structure[k] for k in RECORDED_KEYS}, "step_hash": step_hash,
                            "versions": versions, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            doc = {"model": self.model_name, "note": "expected graph structure per variant, recorded by ortgate; "
                   "commit it like a benchmark baseline", "variants": dict(sorted(records.items()))}
            tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
            os.replace(tmp, self.path)
            what = "re-recorded" if old is not None else "recorded"
            return [], [], f"{what} as the expected structure in {self.path}"
