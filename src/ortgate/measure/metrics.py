"""Classification metrics of one variant, and how its predictions differ from the baseline's. Pure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    f1: float
    precision: float
    recall: float
    n: int
    average: str

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "f1": self.f1, "precision": self.precision,
                "recall": self.recall, "n": self.n, "average": self.average}


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> Metrics:
    """Binary models: F1/precision/recall of label id 1 (the positive class of a 0/1 model);
    more classes: macro averages."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if len(labels) == 0:
        raise ValueError("no rows to score")
    average = "binary" if num_labels == 2 else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average=average, labels=list(range(num_labels)) if average == "macro" else None,
        zero_division=0,
    )
    return Metrics(float(accuracy_score(labels, predictions)), float(f1), float(precision), float(recall),
                   int(len(labels)), average)


def f1_score_fast(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> float:
    """F1 as `classification_metrics` computes it (binary: class 1; else macro), in plain numpy, for
    the thousands of resamples of a bootstrap interval."""
    classes = [1] if num_labels == 2 else range(num_labels)
    scores = []
    for k in classes:
        tp = np.sum((predictions == k) & (labels == k))
        denominator = np.sum(predictions == k) + np.sum(labels == k)
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))
