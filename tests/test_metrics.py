import numpy as np
import pytest

from ortgate.metrics import classification_metrics, differing_predictions


def test_binary_metrics_of_the_positive_class():
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    preds = np.array([1, 1, 0, 0, 0, 1, 1, 0])
    m = classification_metrics(labels, preds, 2)
    # TP=3, FN=1, FP=1, TN=3
    assert (m.accuracy, m.precision, m.recall, m.f1) == pytest.approx((0.75, 0.75, 0.75, 0.75))
    assert m.n == 8 and m.average == "binary"


def test_multiclass_uses_macro_average():
    m = classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), 3)
    assert m.average == "macro" and m.accuracy == 0.75


def test_differing_predictions_and_bad_input():
    assert differing_predictions(np.array([1, 0, 1]), np.array([1, 1, 0])) == 2
    with pytest.raises(ValueError, match="no rows"):
        classification_metrics(np.array([]), np.array([]), 2)
