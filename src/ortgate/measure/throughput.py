"""Throughput workloads and their numbers: end to end (tokenize + run + argmax) or model only.

The callables do nothing but the work: the texts are chosen and (for model-only) tokenized before
timing, and the loop body is the predictor call itself, so the harness adds no measurable overhead.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ortgate.build.runtime import Predictor
from ortgate.measure.rotation import round_order

MODES = ("end-to-end", "model-only")


def workload(predictor: Predictor, texts: Sequence[str], mode: str) -> Callable[[], None]:
    if mode == "end-to-end":
        def run() -> None:
            for text in texts:
                predictor.run(predictor.encode([text])).argmax(-1)
    elif mode == "model-only":
        features = [predictor.encode([text]) for text in texts]

        def run() -> None:
            for feature in features:
                predictor.run(feature)
    else:
        raise ValueError(f"unknown throughput mode {mode!r}; choose one of {MODES}")
    return run


def bare_onnxruntime_workload(session, features: Sequence[dict]) -> Callable[[], None]:
    """The yardstick: a plain InferenceSession.run loop over the same inputs, with nothing of ortgate's
    in between. It runs the predictor's own session: a second session would bring a second spinning
    intra-op thread pool, and on 2 cores the two pools' contention (seen here: ±9% between otherwise
    identical loops) would swamp the few microseconds a call that the harness could add."""

    def run() -> None:
        for feature in features:
            session.run(None, feature)

    return run


@dataclass(frozen=True)
class Speed:
    samples_per_s: float  # from the median round: robust to a round slowed by a noisy neighbour
    mean_samples_per_s: float
    latency_ms: float  # median round time per sample
    rounds: int
    samples_per_round: int

    def as_dict(self) -> dict:
        return asdict(self)


def speed_from_round_times(round_seconds: Sequence[float], samples_per_round: int) -> Speed:
    if not round_seconds or samples_per_round < 1:
        raise ValueError("need at least one round of at least one sample")
    median = statistics.median(round_seconds)
    mean = statistics.fmean(round_seconds)
    return Speed(samples_per_round / median, samples_per_round / mean, median / samples_per_round * 1e3,
                 len(round_seconds), samples_per_round)


def interleaved_round_times(a: Callable[[], None], b: Callable[[], None], rounds: int, warmup: int = 1,
                            min_round_seconds: float = 0.2) -> tuple[list[float], list[float]]:
    """Alternate a and b round by round (ABBA order), so machine drift hits both alike.

    Each round calls its function enough times to last `min_round_seconds`, so that timer resolution
    and the cost of waking a thread pool do not dominate a small workload; times are per call.
    """
    for _ in range(max(warmup, 1)):
        started = time.perf_counter()
        a()
        b()
        pair = time.perf_counter() - started
    calls = max(1, math.ceil(min_round_seconds / max(pair / 2, 1e-9)))
    times_a, times_b = [], []
    for i in range(rounds):
        for fn, times in ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a)):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - started) / calls)
    return times_a, times_b


class RoundRobin:
    """Every workload timed once per cycle, in turn, in `rotation.round_order` (pairs of cycles, the second
    reversed, each pair rotated by one more), so each takes every position equally often, and noise that comes
    and goes hits all of them within seconds of each other. `times[name][c]` is cycle c's seconds. The first
    cycle warms every workload up (untimed) first. A caller may drive the cycles (pytest-benchmark's pedantic
    mode) or `run` them."""

    def __init__(self, workloads: dict[str, Callable[[], None]], warmup: int = 1) -> None:
        self.workloads, self.warmup = dict(workloads), warmup
        self.times: dict[str, list[float]] = {name: [] for name in workloads}
        self._warm = False

    @property
    def cycles(self) -> int:
        return min((len(t) for t in self.times.values()), default=0)

    def __call__(self) -> None:
        names = list(self.workloads)
        if not self._warm:
            for _ in range(self.warmup):
                for name in names:
                    self.workloads[name]()
            self._warm = True
        for name in round_order(names, self.cycles):
            started = time.perf_counter()
            self.workloads[name]()
            self.times[name].append(time.perf_counter() - started)

    def run(self, cycles: int, on_cycle: Callable[[], None] | None = None,
            enough: Callable[[], bool] | None = None) -> dict[str, list[float]]:
        """Run cycles until there are `cycles` of them, or until `enough()` says so (checked after each); the
        times."""
        while self.cycles < cycles and not (enough is not None and enough()):
            self()
            if on_cycle is not None:
                on_cycle()
        return self.times
