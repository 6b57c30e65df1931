"""Step detection in run histories (`ortgate.history.changepoints`) on seeded synthetic series (log scale)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ortgate.history.changepoints import MIN_SIZE, Detection, detect, estimate_noise


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
