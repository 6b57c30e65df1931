import numpy as np
import pytest

from ortgate.measure.metrics import classification_metrics


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


def test_bad_input():
    with pytest.raises(ValueError, match="no rows"):
        classification_metrics(np.array([]), np.array([]), 2)


@pytest.mark.parametrize("num_labels", [2, 3])
def test_fast_f1_matches_scikit_learn(num_labels):
    from ortgate.measure.metrics import f1_score_fast

    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, num_labels, 500), rng.integers(0, num_labels, 500)
    assert f1_score_fast(labels, preds, num_labels) == pytest.approx(
        classification_metrics(labels, preds, num_labels).f1)
