"""Steps (mean shifts) in a run history: one series per variant × machine × metric, one value per run in time order,
on the metric's analysis scale (`Metric.analysed`: log for speeds, times and memory, pp for accuracy).

The search is penalized least squares (the l2 cost: squared deviations from each segment's mean, plus a penalty
per step), solved exactly by ruptures' C implementation (`KernelCPD` with the linear kernel: the same cost and
optimum as `Pelt(model="l2", jump=1)`, which is pure Python and takes 2-4 s for one flat series of 1,000
points - and its default jump=5 only puts steps at multiples of 5; this takes ~1-2 ms). The series is first
divided by its noise sd, so one penalty serves every metric and machine, and runs that stand out alone (fewer
than MIN_SIZE in a row) are pulled in to CLIP sd of their neighbours' median, so that one bad run cannot buy
itself a segment (the l2 cost of a lone 9-sd outlier, 81/3 in a segment of 3, is more than two penalties).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Calibrated with `python benchmarks/calibrate_steps.py --seed 1 --trials 300 --out benchmarks/calibration-steps-
# 2026-11-27` (240 s; steps.md there) on the procedure `ortgate history` runs: 19 ratio series per machine, noise
# pooled over them (`analysis.shrunk_noise`), the detector run after each new run, noise as measured here (sd of
# the log same-run ratio between runs: 2.4-4.9%, median 3.1%), Gaussian and Student-t (df=5). The rule: the
# smallest penalty whose new false steps in that CI procedure stay at most 1 per 100 runs (95% upper bound) for
# every noise kind, on all series and on the noisiest quarter when the 19 series' noise spreads over 2.0-4.9%.
# That is 12: noisiest quarter 0.52 / 0.79 per 100 runs (Gaussian / t; bounds 0.60 / 0.90), all series 0.22 /
# 0.43; at 10 the noisiest quarter reaches 0.90 / 1.28 (bounds 1.01 / 1.42): the pooled noise reads a noisy
# series' noise low while its history is short. With equal noise, 10 would pass (0.35 / 0.71).
# What 12 leaves for detection, within 3 / 4 / 5 runs after a step, at 3.1% noise (Gaussian; t): a 5% step
# 22/35/45%; 34/49/62%, an 8% step 69/87/93%; 83/94/96%, a 10% step 91/97/98%; 95/98/99%; at 4.9%: 5% 14%; 23%
# and 10% 72%; 86% within 5. Why a 5% step is a coin toss at 5 runs: at 3.1% noise it is 1.6 sd, so 5 runs after
# it (50 before) it stands 1.6·sqrt(5·50/55) = 3.4 standard errors out, and a penalty of 12 asks sqrt(12) = 3.5.
# Not × log(n): at a constant penalty false steps per 100 runs already fall with n (single series: N=100 0.05,
# N=1000 0.00), and log(n) favours alarms in short histories, where CI alarms come from.
PENALTY = 12.0  # the cost of one more step on the standardized scale (noise sd = 1), in sd²
# 3, not 2: at the same penalty and detection, min_size 2 doubles the CI false alarms (failing 1.63 / 1.89).
MIN_SIZE = 3  # the shortest segment: a step needs this many runs on each side
# Lone runs clipped to 3 sd: detection unchanged, t noise's false steps halved (pen 12, t: CI failing 0.91
# instead of 1.80, flat N=1000 0.06 instead of 0.21), and a lone -25% run is no step.
CLIP = 3.0  # sd: how far a run may stand from the median of the 2·MIN_SIZE - 1 runs around it

# The Gaussian consistency factor of the MAD (1 / Phi^-1(3/4)).
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Detection:
    """The steps found in one series. `indices`: for each step, the index of the first point after it.
    `noise`: the sd the series was divided by (analysis scale); `penalty`: what ruptures was given
    (standardized scale; 0.0 when no search was run)."""

    indices: tuple[int, ...]
    noise: float
    penalty: float


def estimate_noise(y) -> float:
    """A robust sd of the run-to-run noise of `y` (analysis scale), from its first differences.

    Why differences: a step moves the level once, so of the n - 1 differences only one per step is large, while
    the sd of the values themselves would count every step as noise (and hide the steps it is meant to scale).
    Why the MAD: it ignores those few large differences (and a single outlier run, which spoils two) where an sd
    would not. A difference of two independent runs has sd sqrt(2)·sd, hence the division. Measured: unbiased
    for Gaussian noise; ~11% low for Student-t (df=5) noise of the same sd (the MAD does not see the tails); its
    own spread is ~29% at 20 points, ~18% at 50, ~4% at 1,000 - short histories are where false steps come from.
    `detect` uses this same estimate and the calibration simulates it. Fewer than 3 points: 0.0."""
    values = np.asarray(y, dtype=float)
    if values.size < 3:
        return 0.0
    d = np.diff(values)
    return float(MAD_TO_SD * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))


def running_median(z: np.ndarray, width: int) -> np.ndarray:
    """For each point, the median of the `width` points centred on it; near the ends, of the first or last
    `width` points. Why not windows cut short at the ends: there a lone outlier would be one of only half as many
    points, and the newest run, the one CI asks about, is always at an end."""
    n = z.size
    if n <= width:
        return np.full(n, np.median(z))
    medians = np.median(sliding_window_view(z, width), axis=1)  # of z[i:i + width], i = 0 .. n - width
    return medians[np.clip(np.arange(n) - width // 2, 0, n - width)]


def clip_lone_runs(z: np.ndarray, clip: float, min_size: int) -> np.ndarray:
    """`z` (standardized) with each point pulled to within `clip` of the median of the 2·min_size - 1 points
    around it. Why this window: fewer than min_size deviating runs in a row never make its median, so they are
    clipped; min_size or more do, so a real step (min_size runs after it) keeps its full size. A step of more
    than 2·clip sd seen by fewer than min_size runs is shrunk until it has min_size - they are too few for a step
    anyway."""
    median = running_median(z, 2 * min_size - 1)
    return median + np.clip(z - median, -clip, clip)


def detect(y, *, noise: float | None = None, floor: float = 0.0, penalty: float = PENALTY,
           min_size: int = MIN_SIZE, clip: float | None = CLIP, log_n: bool = False) -> Detection:
    """Steps in `y` (one value per run, time order, analysis scale).

    The series is divided by its noise sd (`noise`, else `estimate_noise(y)`, at least `floor`) so that the
    penalty, calibrated once on standardized series, means the same false-step rate for every metric and noise
    level; lone runs are clipped (`clip_lone_runs`; `clip=None`: not); then the penalized l2 segmentation with
    segments of at least `min_size` points is solved exactly. `log_n`: the penalty is `penalty`·log(n) (measured
    and not chosen: see PENALTY). No steps when the sd is 0 (a series that reproduces exactly and has no floor:
    nothing to measure a change against) or when there are fewer than 2·min_size points (no step can have
    min_size on both sides). A value that is not finite (the log of a 0) is an error, not a step."""
    values = np.asarray(y, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("detect: the series has values that are not finite")
    sd = max(estimate_noise(values) if noise is None else float(noise), float(floor))
    n = values.size
    if n < 2 * min_size or not sd > 0:
        return Detection((), sd, 0.0)
    pen = penalty * math.log(n) if log_n else float(penalty)
    z = (values - np.median(values)) / sd
    if clip is not None:
        z = clip_lone_runs(z, clip, min_size)
    return Detection(segment_ends(z, pen, min_size)[:-1], sd, pen)


@cache
def _ekcpd():
    """ruptures' compiled kernel change-point module, loaded on its own: `import ruptures` imports every cost
    it offers and with them scipy.stats (0.8-1.3 s here), half of `ortgate history`'s 2 s on 1,000 runs; the
    routine itself needs only numpy. None where ruptures is laid out otherwise (then the package is imported)."""
    spec = importlib.util.find_spec("ruptures")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "detection" / "_detection"
    found = [folder / f"ekcpd{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
             if (folder / f"ekcpd{suffix}").is_file()]
    if not found:
        return None
    name = "ruptures.detection._detection.ekcpd"
    loader = importlib.machinery.ExtensionFileLoader(name, str(found[0]))
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, found[0], loader=loader))
    loader.exec_module(module)
    return module if hasattr(module, "ekcpd_pelt_L2") else None


def segment_ends(z: np.ndarray, penalty: float, min_size: int) -> tuple[int, ...]:
    """The end of every segment (the last is len(z)) of the exact penalized l2 segmentation: what
    `ruptures.KernelCPD(kernel="linear", min_size).fit(z).predict(pen=penalty)` returns, through its C routine."""
    module = _ekcpd()
    if module is None:
        import ruptures

        return tuple(int(i) for i in ruptures.KernelCPD(kernel="linear", min_size=min_size).fit(z).predict(pen=penalty))
    path = module.ekcpd_pelt_L2(np.ascontiguousarray(z, dtype=np.float64).reshape(-1, 1), float(penalty), min_size)
    ends, end = [], len(z)
    while end > 0:  # KernelCPD.predict's walk back through the path
        ends.append(int(end))
        end = path[end]
    return tuple(ends[::-1])
