"""Load a variant and run it: tokenization, batch-1 inference, predictions.

One interface for the PyTorch baseline and every ONNX variant, so evaluation and benchmarks treat
them alike. `encode` is the tokenizer's share of the work, `run` the model's: benchmarks time them
together (end to end) or `run` alone (model only).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ortgate.sources.inputs import forward_inputs, select_inputs


class Predictor(Protocol):
    def encode(self, texts: Sequence[str]) -> Any: ...

    def run(self, features: Any) -> np.ndarray: ...


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ORT's default (ENABLE_ALL) is what a deployed ORTModel gets; keep it so speeds match deployment.
    options.log_severity_level = 3
    return options


class OnnxPredictor:
    def __init__(self, model_dir: Path, threads: int, max_length: int) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        # run(None) and pick by index: naming outputs costs a few µs a call, which a bare loop does not pay.
        self.logits_index = outputs.index("logits") if "logits" in outputs else 0
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                 padding=len(texts) > 1, return_attention_mask=True, return_tensors="np")
        selected = select_inputs(encoded, self.input_names, "the ONNX graph")
        return {name: np.asarray(value, dtype=np.int64) for name, value in selected.items()}

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, features)[self.logits_index]


class TorchPredictor:
    def __init__(self, model_dir: Path, threads: int, max_length: int) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = max_length
        # The forward signature decides: a DistilBERT model saved with a BERT tokenizer takes no token_type_ids.
        self.input_names = forward_inputs(self.model.forward, self.tokenizer.model_input_names)

    def encode(self, texts: Sequence[str]):
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                 padding=len(texts) > 1, return_tensors="pt")
        return select_inputs(encoded, self.input_names, "the PyTorch model")

    def run(self, features) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(**features).logits.numpy()


def predict_logits(predictor: Predictor, texts: Sequence[str], batch_size: int = 1, desc: str = "") -> np.ndarray:
    """Logits for every text, in order. Batch 1 by default: dynamic int8 computes activation scales
    per batch, so batching would change the very predictions being gated."""
    from tqdm.auto import tqdm  # here, not at the top: a footprint probe's process imports this module, not tqdm

    chunks = []
    bar = tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch" if batch_size > 1 else "row",
               leave=False, mininterval=1.0 if os.isatty(2) else 30.0, disable=None)
    for start in bar:
        chunks.append(predictor.run(predictor.encode(texts[start : start + batch_size])))
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), dtype=np.float32)
