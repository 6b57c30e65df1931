"""Evaluation: each variant's logits, predictions and metrics on the evaluation rows, computed once.

A variant whose graph is byte-identical to an earlier one gets that one's evaluation (identical graphs give
identical logits), said in the log and in the record (`same_graph_as`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np

from ortgate.build.plan import BuildPlan
from ortgate.build.runtime import predict_logits
from ortgate.measure.metrics import Metrics, classification_metrics
from ortgate.sources.data import EvalData

Log = Callable[[str], None]


@dataclass(frozen=True)
class Evaluation:
    variant_id: str
    logits: np.ndarray
    predictions: np.ndarray
    metrics: Metrics


@dataclass
class Evaluator:
    plan: BuildPlan
    data: EvalData
    num_labels: int
    batch_size: int = 1
    log: Log = print
    progress_scope: Callable[[], AbstractContextManager] = contextlib.nullcontext
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    same_graph: dict[str, str] = field(default_factory=dict)  # variant -> the variant whose evaluation it reuses

    def evaluate(self, variant_id: str) -> Evaluation:
        if variant_id in self.evaluations:
            return self.evaluations[variant_id]
        original = self.plan.duplicate_of(variant_id)
        if original is not None:
            first = self.evaluate(original)
            self.same_graph[variant_id] = original
            self.log(f"[ortgate] variant {variant_id}: same graph as {original} (byte-identical model.onnx); "
                     "its evaluation is reused")
            self.evaluations[variant_id] = Evaluation(variant_id, first.logits, first.predictions, first.metrics)
            return self.evaluations[variant_id]
        predictor = self.plan.predictor(variant_id)
        started = time.perf_counter()
        with self.progress_scope():
            logits = predict_logits(predictor, self.data.texts, self.batch_size, desc=f"evaluating {variant_id}")
        seconds = time.perf_counter() - started
        predictions = logits.argmax(-1)
        metrics = classification_metrics(self.data.labels, predictions, self.num_labels)
        self.log(f"[ortgate] variant {variant_id}: accuracy {metrics.accuracy:.4f}, F1 {metrics.f1:.4f} "
                 f"on {metrics.n} rows ({seconds:.1f}s)")
        self.evaluations[variant_id] = Evaluation(variant_id, logits, predictions, metrics)
        return self.evaluations[variant_id]
