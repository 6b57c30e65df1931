"""Accuracy gate: every variant keeps accuracy and F1 within tolerance of the PyTorch baseline,
measured on the same rows in the same run (tolerance: --ortgate-tolerance, default 1.0pp). A gate whose rows
cannot tell the drop from the tolerance is inconclusive: --ortgate-inconclusive says whether it warns (the
default: passes with a pytest warning), fails or passes."""

import warnings

import pytest

from ortgate.verdict.gate import InconclusiveGate


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_within_tolerance_of_baseline(ortgate, ortgate_candidate, metric):
    result = ortgate.gates.gate(ortgate_candidate, metric)
    action = result.action(ortgate.settings.inconclusive)
    if action == "warn":
        warnings.warn(InconclusiveGate(result.message), stacklevel=1)
    assert action != "fail", result.message
