"""Accuracy gate: every variant keeps accuracy and F1 within tolerance of the PyTorch baseline,
measured on the same rows in the same run (tolerance: --ortgate-tolerance, default 1.0pp)."""

import pytest


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_within_tolerance_of_baseline(ortgate, ortgate_candidate, metric):
    result = ortgate.gates.gate(ortgate_candidate, metric)
    assert result.passed, result.message
