"""`ortgate calibrate` on synthetic saved runs (seeded, known effects): the A/A and detection bookkeeping, not
timings. The figures on real runs come from benchmarks/calibrate_compare.py (README)."""

import json

import numpy as np
import pytest

from ortgate.cli import main
from ortgate.errors import OrtgateError
from ortgate.record.result import InterleavedResult, VariantResult
from ortgate.report.calibration import calibrate, consecutive_aa, measured_slowdown, render_markdown
from records import benchmark_json, make_run


def saved_run(seed: int, twin_slowdown: float, run_sd: float = 0.02, cycles: int = 10):
    """A run as the suite saves it: the baseline, the export, O99 and its twin timed in the same cycles; each
    run's own state moves O99 against the export by a log-sd of `run_sd`."""
    rng = np.random.default_rng(seed)
    machine = np.exp(rng.normal(0, 0.3, cycles))  # noise that comes and goes: shared by every graph of a cycle
    state = rng.normal(0, run_sd)

    def graph(name, factor):
        times = tuple(float(t) for t in factor * machine * np.exp(rng.normal(0, 0.03, cycles)))
        return VariantResult(name, interleaved={"end-to-end": InterleavedResult("pytorch", times, 1.0, (1, 1), 0.95)})

    return make_run([graph("pytorch", 2.0), graph("onnx", 1.0), graph("O99", 0.8 * np.exp(state)),
                     graph("O99-no-attention", 0.8 * np.exp(state) * (1 + twin_slowdown))])


def test_a_large_slowdown_is_caught_and_a_null_one_is_not():
    runs = [saved_run(seed, 0.30) for seed in range(6)]
    result = calibrate(runs, "O99", "O99-no-attention", per_side=3, splits=20)
    assert result.slowdown["end-to-end"] == pytest.approx(0.30, abs=0.03)
    assert result.detections["end-to-end"] == 20
    null = calibrate([saved_run(seed, 0.0) for seed in range(6)], "O99", "O99-no-attention", per_side=3, splits=20)
    assert null.detections["end-to-end"] <= 2 and null.aa_job_failures <= 2 and null.aa_rows == 20 * 2
    assert "O99 end-to-end" in null.run_sd and "A/A jobs failed" in render_markdown([result, null])
    consecutive = consecutive_aa([saved_run(seed, 0.0) for seed in range(6)], ["O99-no-attention"])
    assert consecutive["pairs"] == 15 and len(consecutive["pairs_failed"]) <= 1 and consecutive["per_half"] == 3


def test_measured_slowdown_is_the_twin_against_the_variant_in_the_same_cycles():
    assert measured_slowdown([saved_run(1, 0.12)], "O99", "O99-no-attention")["end-to-end"] == pytest.approx(
        0.12, abs=0.04)


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    runs = [saved_run(seed, 0.2) for seed in range(3)]
    with pytest.raises(OrtgateError, match="need at least 4 saved runs"):
        calibrate(runs, "O99", "O99-no-attention", per_side=2)
    with pytest.raises(OrtgateError, match="slower twin 'nope'"):
        calibrate(runs, "O99", "nope", per_side=1)
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run-{i}.json")
        paths[-1].write_text(json.dumps(benchmark_json(run)))
    out = tmp_path / "calibration.json"
    assert main(["calibrate", *map(str, paths), "--per-side", "1", "--splits", "5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["splits"] == 5
    assert main(["calibrate", *map(str, paths), "--per-side", "2"]) == 2
    assert "need at least 4" in capsys.readouterr().err
