"""The build steps: export with Optimum, optimize with ORTOptimizer, quantize with ORTQuantizer (dynamic or
static, with calibration). Each reads its parent's folder and writes a variant folder; `Builder` runs them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from ortgate.cache import MANIFEST
from ortgate.errors import BuildError, NotApplicable
from ortgate.sources.inputs import select_inputs
from ortgate.spec.variants import Optimize, Quantize

ONNX_FILE = "model.onnx"


def _quiet_optimum() -> None:
    import onnxruntime

    for name in ("optimum", "onnxruntime", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The level-99 "hardware specific" notice is a C++ log line; ortgate already keys such graphs by CPU.
    onnxruntime.set_default_logger_severity(3)


def export(model_dir: Path, out: Path) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    _quiet_optimum()
    model = ORTModelForSequenceClassification.from_pretrained(model_dir, export=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def optimization_config(step: Optimize):
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, OptimizationConfig

    if step.preset is not None:
        # Optimum's preset fields, then the variant's own options over them (with_optimization_level would
        # refuse an option the preset also sets). O4 means a GPU graph, as with_optimization_level makes it.
        fields = {**AutoOptimizationConfig._LEVELS[step.preset], **dict(step.options)}
        fields.setdefault("optimize_for_gpu", step.preset == "O4")
        return OptimizationConfig(**fields)
    return OptimizationConfig(optimization_level=step.level, **dict(step.options))


def optimize(parent_dir: Path, out: Path, step: Optimize) -> None:
    from optimum.onnxruntime import ORTOptimizer

    _quiet_optimum()
    optimizer = ORTOptimizer.from_pretrained(parent_dir, file_names=[ONNX_FILE])
    optimizer.optimize(save_dir=out, file_suffix=None, optimization_config=optimization_config(step))


def quantization_config(step: Quantize, operators: Sequence[str] | None = None):
    """The ISA preset's config; `operators` (resolved, for derived lists) overrides the step's list."""
    from onnxruntime.quantization import QuantFormat
    from optimum.onnxruntime.configuration import ORT_DEFAULT_OPS_STATIC_QUANTIZATION_QOPS, AutoQuantizationConfig

    if operators is None and isinstance(step.operators, tuple):
        operators = step.operators
    preset = getattr(AutoQuantizationConfig, step.isa)
    config = preset(
        is_static=step.mode == "static",
        per_channel=step.per_channel,
        operators_to_quantize=list(operators) if operators is not None else None,
        nodes_to_exclude=list(step.nodes_to_exclude or ()),
    )
    if step.reduce_range is not None:  # arm64 and avx512_vnni take no reduce_range argument; the config does
        config.reduce_range = step.reduce_range
    if step.mode == "static" and step.format == "QOperator":
        # The presets write QDQ for static quantization; QOperator (QLinear* nodes) has its own default list.
        config.format = QuantFormat.QOperator
        if operators is None:
            config.operators_to_quantize = list(ORT_DEFAULT_OPS_STATIC_QUANTIZATION_QOPS)
    return config


def derived_operators(which: str, parent_onnx: Path, export_onnx: Path) -> list[str]:
    """Operator lists the reference workflow read off the graphs with Optimum's own helpers."""
    from optimum.onnxruntime import ORTOptimizer

    if which == "fused":
        found = ORTOptimizer.get_fused_operators(parent_onnx)
    else:
        difference = ORTOptimizer.get_operators_difference(export_onnx, parent_onnx)
        found = {op: n for op, n in difference.items() if (n > 0 if which == "removed" else n < 0)}
    operators = sorted(op for op, n in found.items() if n)
    if not operators:
        what = {"fused": "has no fused operators", "removed": "lost no operators to optimization",
                "added": "gained no operators from optimization"}[which]
        raise NotApplicable(f"the parent graph {what}: there is nothing to derive operators={which!r} from",
                            f"operators={which!r}: the parent graph {what}")
    return operators


def quantize(
    parent_dir: Path,
    out: Path,
    step: Quantize,
    calibration_texts: Sequence[str],
    max_length: int,
    infer_shapes_first: bool,
    export_onnx: Path | None = None,
) -> dict:
    """Quantize the parent's graph into `out/model.onnx`; returns the operator types it asked to quantize
    (and, for static quantization, how many calibration rows it used).

    Quantizing an ORT-optimized graph fails upstream (huggingface/optimum#2186: "Unable to find data
    type for weight_name=..."), because the fused graph lacks value_info for intermediate tensors.
    Symbolic shape inference (which knows ORT's contrib ops) restores them first.
    """
    import onnx
    from optimum.onnxruntime import ORTQuantizer

    _quiet_optimum()
    operators, info = None, {}
    if step.mode == "static":
        _refuse_subgraphs(parent_dir / ONNX_FILE)
    if isinstance(step.operators, str):
        operators = derived_operators(step.operators, parent_dir / ONNX_FILE, export_onnx or parent_dir / ONNX_FILE)
    work = out / "_input"
    shutil.copytree(parent_dir, work, ignore=shutil.ignore_patterns(MANIFEST))
    if infer_shapes_first:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(onnx.load(str(work / ONNX_FILE)), auto_merge=True)
        onnx.save(inferred, str(work / ONNX_FILE))
    qconfig = quantization_config(step, operators)
    quantizer = ORTQuantizer.from_pretrained(work, file_name=ONNX_FILE)
    ranges = None
    if step.mode == "static":
        dataset = calibration_dataset(work, calibration_texts[: step.calibration_samples], max_length)
        info["calibration_rows_used"] = len(dataset)  # fewer than asked when the dataset is small
        ranges = calibration_ranges(quantizer, step, dataset, work / "augmented.onnx", qconfig.operators_to_quantize)
    quantizer.quantize(save_dir=out, file_suffix=None, quantization_config=qconfig, calibration_tensors_range=ranges)
    shutil.rmtree(work)
    return {"operators_quantized": list(qconfig.operators_to_quantize), **info}


def calibration_ranges(quantizer, step: Quantize, dataset, augmented: Path, operators: list[str]):
    """The activation ranges static quantization uses, from the step's calibration method."""
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    method = {"minmax": AutoCalibrationConfig.minmax, "entropy": AutoCalibrationConfig.entropy,
              "percentile": AutoCalibrationConfig.percentiles}[step.calibration]
    config = method(dataset)
    if step.calibration == "minmax":
        return quantizer.fit(dataset=dataset, calibration_config=config, onnx_augmented_model_name=augmented,
                             operators_to_quantize=operators)
    # Histogram calibrators (entropy, percentile) stack the activations of all rows they are given into one
    # array, then fold it into histograms. Given all rows at once they fail: unpadded rows differ in length
    # ("inhomogeneous shape"); padded rows bring the attention mask's -3.4e38 bias into the histogram range
    # ("Too many bins for data range"); and 128 padded rows of a 6-layer BERT took over 20 GB here before
    # being killed. So the calibrator gets the rows one at a time, unpadded as deployed, and merges each
    # row's histograms into the running ones.
    shards = [dataset.select(range(i, min(i + HISTOGRAM_SHARD, len(dataset))))
              for i in range(0, len(dataset), HISTOGRAM_SHARD)]
    quantizer.partial_fit(dataset=shards[0], calibration_config=config, onnx_augmented_model_name=augmented,
                          operators_to_quantize=operators)
    for shard in shards[1:]:
        quantizer._calibrator.collect_data(_calibration_reader(shard))
    return quantizer.compute_ranges()


# Control-flow nodes carry subgraphs; Optimum's ORTQuantizer refuses static quantization of such graphs.
SUBGRAPH_OPS = ("If", "Loop", "Scan", "SequenceMap")


def _refuse_subgraphs(onnx_path: Path) -> None:
    """Static quantization does not apply to a graph with control flow (DeBERTa-v2's export has If nodes):
    say so as a result, before calibration is spent on it."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    found = sorted({node.op_type for node in graph.node if node.op_type in SUBGRAPH_OPS})
    if found:
        raise NotApplicable(
            f"static quantization does not apply: the parent graph has control-flow nodes with subgraphs "
            f"({', '.join(found)}), which Optimum's ORTQuantizer does not statically quantize",
            f"static quantization of a graph with subgraphs ({', '.join(found)}) is not supported by Optimum")


HISTOGRAM_SHARD = 1  # rows per call to the entropy and percentile calibrators


def _calibration_reader(dataset):
    from optimum.onnxruntime.quantization import ORTCalibrationDataReader

    return ORTCalibrationDataReader(dataset, 1)


def calibration_dataset(model_dir: Path, texts: Sequence[str], max_length: int):
    """Tokenized calibration rows (batch 1, unpadded, as the model sees them at inference)."""
    import datasets
    import onnx
    from transformers import AutoTokenizer

    if not texts:
        raise BuildError("static quantization needs calibration rows, and the dataset left none")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = [i.name for i in onnx.load(str(model_dir / ONNX_FILE), load_external_data=False).graph.input]
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=True)
    return datasets.Dataset.from_dict(select_inputs(encoded, inputs, "the ONNX graph"))
