"""Step detection in run histories (`ortgate.history.changepoints`) on seeded synthetic series (log scale)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from ortgate.history.analysis import analyse_all
from ortgate.history.changepoints import MIN_SIZE, Detection, detect, estimate_noise
from ortgate.history.series import METRICS, Point, RunInfo

CALIBRATE = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate_steps.py"


@pytest.fixture(scope="module")
def calibrate():
    """benchmarks/calibrate_steps.py as a module (benchmarks/ is no package; its dataclass needs it in
    sys.modules while it is defined)."""
    spec = importlib.util.spec_from_file_location("calibrate_steps", CALIBRATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def noisy(n: int, sd: float, seed: int) -> np.ndarray:
    return sd * np.random.default_rng(seed).standard_normal(n)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sign", [1, -1])
def test_clear_step_is_found_at_its_index(seed, sign):
    y = noisy(60, 0.03, seed)
    y[30:] += sign * math.log(1.2)
    found = detect(y)
    assert len(found.indices) == 1
    assert abs(found.indices[0] - 30) <= 1


def test_flat_series_has_no_step():
    found = detect(noisy(200, 0.03, 7))
    assert found.indices == ()
    assert found.noise == pytest.approx(0.03, rel=0.2)


@pytest.mark.parametrize("where", [0, 30, 59])
def test_single_outlier_run_is_no_step(where):
    """One run at -25% (over 9 sd at 3% noise): as a lone run it is clipped, so it buys no segment, wherever it is
    (the newest run included)."""
    y = noisy(60, 0.03, 3)
    y[where] += math.log(0.75)
    assert detect(y).indices == ()


def test_estimate_noise_ignores_steps():
    y = noisy(1000, 0.03, 11)
    y[300:] += 0.1
    y[700:] -= 0.2
    assert estimate_noise(y) == pytest.approx(0.03, rel=0.15)
    assert np.std(y) > 0.06  # what a plain sd would have said


def test_estimate_noise_needs_three_points():
    assert estimate_noise([1.0, 2.0]) == 0.0
    assert estimate_noise([]) == 0.0


def test_zero_noise_without_floor_is_no_step():
    assert detect(np.zeros(40)).indices == ()
    y = np.r_[np.zeros(20), np.full(20, 0.1)]
    found = detect(y)  # every difference but one is 0: the noise reads 0
    assert (found.indices, found.noise) == ((), 0.0)


def test_zero_noise_with_floor_finds_a_real_step():
    assert detect(np.zeros(40), floor=0.005).indices == ()
    y = np.r_[np.zeros(20), np.full(20, 0.1)]  # 20 × the floor
    found = detect(y, floor=0.005)
    assert found.indices == (20,)
    assert found.noise == 0.005


def test_given_noise_is_used():
    y = noisy(60, 0.03, 5)
    y[30:] += 0.05
    assert detect(y, noise=0.5).indices == ()  # a 5% change is nothing against an sd of 50%
    assert detect(y, noise=0.5).noise == 0.5


def test_too_short_series_has_no_step():
    y = np.r_[np.zeros(MIN_SIZE), np.ones(MIN_SIZE - 1)]
    assert detect(y, floor=0.01) == Detection((), 0.01, 0.0)


def test_scale_does_not_matter():
    y = noisy(80, 0.03, 9)
    y[50:] += math.log(1.15)
    assert detect(y).indices == detect(10 * y).indices == (50,)


def test_not_finite_is_an_error():
    with pytest.raises(ValueError, match="not finite"):
        detect(np.r_[np.zeros(10), -np.inf])


def test_detection_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        detect(np.zeros(10)).indices = (1,)  # type: ignore[misc]


def test_calibration_pipeline_analyses_as_history_does(calibrate):
    """The calibration's pipeline (`machine_noise`, `pipeline_steps`) gives the noise and steps that
    `analysis.analyse_all` gives the same series of one machine - what `ortgate history` and CI run."""
    rng = np.random.default_rng(4)
    values = 0.03 * rng.standard_normal((4, 40))
    values[0, :5] *= 0.1  # a quiet start: its own estimate is low, the pooled one is not
    values[1, 25:] += math.log(1.12)
    values[2, 30:] -= math.log(1.06)
    ratio = METRICS["ratio"]
    runs = [RunInfo(i, f"2026-01-01T00:{i:02d}:00", "m", "cpu") for i in range(values.shape[1])]
    raw = [(f"v{j}", "m", ratio, [Point(run, math.exp(v)) for run, v in zip(runs, row, strict=True)], None)
           for j, row in enumerate(values)]
    for t in (4, 12, 40):
        shipped = analyse_all([(v, m, metric, points[:t], parent) for v, m, metric, points, parent in raw])
        sds = calibrate.machine_noise(values[:, :t])
        for series, row, sd in zip(shipped, values, sds, strict=True):
            assert series.noise == pytest.approx(max(sd, ratio.floor), rel=1e-9)
            assert tuple(step.index for step in series.steps) == calibrate.pipeline_steps(row[:t], sd, 12.0)
    assert [s.index for s in shipped[1].steps] == [25]


def test_calibration_pipeline_finds_a_large_step(calibrate):
    """The pipeline simulation on a tiny setting: its rows, and a 30% step (about 8 sd at 3.1% noise) found within
    5 runs in every trial of both noise kinds; the same seed gives the same figures."""
    settings = {"noises": [0.031], "steps": [0.30], "penalties": [12.0], "series": 3, "trials": 6, "machines": 1,
                "runs": 20, "before": 20, "seed": 3}
    rows = calibrate.simulate_pipeline(**settings)
    assert [(r["kind"], r["penalty"], r["noise"], r["series"]) for r in rows] == [
        ("gaussian", 12.0, 0.031, 3), ("t5", 12.0, 0.031, 3)]
    for r in rows:
        assert set(r) >= {"final", "ci_failing", "ci_new", "ci_new_upper", "runs", "detection"}
        assert r["runs"] == 3 * 20
        assert 0.0 <= r["ci_new"] <= r["ci_failing"] and r["ci_new"] <= r["ci_new_upper"]
        found = r["detection"]["0.3"]
        rates = [found[f"k{k}"] for k in range(1, 6)]
        assert rates == sorted(rates)  # cumulative
        assert found["k5"] == 1.0 and found["median_k"] <= 5
    assert calibrate.simulate_pipeline(**settings) == rows
    assert calibrate.choose_penalty(rows, max_false=1e9) == 12.0


def test_calibration_spread_finds_a_large_step_on_the_noisiest_series(calibrate):
    """The spread simulation on a tiny setting: series sds spaced on the log scale (the median series at
    sqrt(low·high)), its rows, and a 30% step on the noisiest series (about 5 sd at 4.9%) found within 5 runs in
    every trial of both noise kinds; the figures do not depend on how the flat machines are chunked."""
    assert calibrate.spread_sds(0.02, 0.049, 19)[9] == pytest.approx(math.sqrt(0.02 * 0.049))
    assert calibrate.noisiest_quarter(19) == [14, 15, 16, 17, 18] and calibrate.noisiest_quarter(3) == [2]
    settings = {"low": 0.02, "high": 0.049, "steps": [0.30], "penalties": [12.0], "series": 4, "trials": 6,
                "machines": 2, "runs": 20, "before": 20, "seed": 3}
    spread = calibrate.simulate_spread(**settings, chunk=1)
    assert spread["sds"] == pytest.approx([0.02, 0.02 * 2.45 ** (1 / 3), 0.02 * 2.45 ** (2 / 3), 0.049])
    assert spread["noisiest"] == [3] and spread["median"] == 2
    assert [(r["kind"], r["penalty"]) for r in spread["rows"]] == [("gaussian", 12.0), ("t5", 12.0)]
    for r in spread["rows"]:
        assert r["all"]["runs"] == 2 * 4 * 20 and r["noisiest"]["runs"] == 2 * 1 * 20
        for group in (r["all"], r["noisiest"]):
            assert 0.0 <= group["ci_new"] <= group["ci_failing"] and group["ci_new"] <= group["ci_new_upper"]
        assert np.mean(r["ci_new_by_series"]) == pytest.approx(r["all"]["ci_new"])
        assert r["ci_new_by_series"][3] == pytest.approx(r["noisiest"]["ci_new"])
        assert set(r["detection"]) == {"noisiest", "median"}
        found = r["detection"]["noisiest"]["0.3"]
        assert [found[f"k{k}"] for k in range(1, 6)] == sorted(found[f"k{k}"] for k in range(1, 6))
        assert found["k5"] == 1.0 and found["median_k"] <= 5
    assert calibrate.simulate_spread(**settings, chunk=2) == spread
    assert calibrate.choose_spread_penalty(spread, max_false=1e9) == 12.0
