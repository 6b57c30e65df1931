"""Speed measurement of one run: throughput recorded per variant and mode (over repeats), same-run speed
ratios timed in interleaved rounds, and the harness check against a bare InferenceSession.run loop.

Timing is the caller's to drive: pytest-benchmark's fixture (in the plugin) times a workload and hands the
round times here with `record`; the interleaved measurements run here. Floors and verdicts sit above.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ortgate.build.plan import BuildPlan
from ortgate.measure.stats import distribution, speed_ratio_interval
from ortgate.measure.throughput import (
    Speed,
    bare_onnxruntime_workload,
    interleaved_round_times,
    speed_from_round_times,
    workload,
)


@dataclass(frozen=True)
class SameRunRatio:
    """variant speed / reference speed from interleaved rounds, with a bootstrap interval."""

    variant_id: str
    reference_id: str
    ratio: float
    interval: tuple[float, float]
    confidence: float
    rounds: int


@dataclass(frozen=True)
class HarnessCheck:
    variant_id: str
    harness_seconds: tuple[float, ...]  # per round, aligned: round i of each ran back to back
    bare_seconds: tuple[float, ...]
    samples_per_round: int

    @property
    def harness(self) -> Speed:
        return speed_from_round_times(self.harness_seconds, self.samples_per_round)

    @property
    def bare(self) -> Speed:
        return speed_from_round_times(self.bare_seconds, self.samples_per_round)

    @property
    def ratio(self) -> float:
        """Harness speed / bare speed: the median of each round's pair ratio, which cancels drift between rounds."""
        return statistics.median(b / h for h, b in zip(self.harness_seconds, self.bare_seconds, strict=True))

    @property
    def message(self) -> str:
        return (f"{self.variant_id} model-only: harness {self.harness.samples_per_s:.1f} samples/s vs bare "
                f"InferenceSession.run loop {self.bare.samples_per_s:.1f} samples/s (ratio {self.ratio:.3f}, "
                f"median of the paired ratios of {self.harness.rounds} interleaved rounds)")


@dataclass
class SpeedMeter:
    plan: BuildPlan
    texts: Sequence[str]  # the fixed benchmark sample: the same texts for every variant and run
    rounds: int = 5
    warmup_rounds: int = 1
    confidence: float = 0.95
    speeds: dict[tuple[str, str], list[Speed]] = field(default_factory=dict)  # one Speed per repeat
    round_seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # every round, all repeats
    ratios: dict[tuple[str, str, str], SameRunRatio] = field(default_factory=dict)  # (variant, reference, mode)
    harness_checks: list[HarnessCheck] = field(default_factory=list)

    def workload(self, variant_id: str, mode: str) -> Callable[[], None]:
        return workload(self.plan.predictor(variant_id), self.texts, mode)

    def record(self, variant_id: str, mode: str, round_seconds: Sequence[float]) -> Speed:
        """One repeat's timed rounds of the variant (batch 1, one text per call, `len(texts)` per round)."""
        speed = speed_from_round_times(list(round_seconds), len(self.texts))
        self.speeds.setdefault((variant_id, mode), []).append(speed)
        self.round_seconds.setdefault((variant_id, mode), []).extend(round_seconds)
        return speed

    def speed(self, variant_id: str, mode: str) -> Speed | None:
        """The variant's speed over all repeats: the median repeat's samples/s and latency."""
        runs = self.speeds.get((variant_id, mode))
        if not runs:
            return None
        ordered = sorted(runs, key=lambda r: r.samples_per_s)
        middle = ordered[(len(ordered) - 1) // 2]
        return Speed(middle.samples_per_s, statistics.fmean(r.mean_samples_per_s for r in runs), middle.latency_ms,
                     sum(r.rounds for r in runs), middle.samples_per_round)

    def distribution(self, variant_id: str, mode: str) -> dict | None:
        runs = self.speeds.get((variant_id, mode))
        return distribution([r.samples_per_s for r in runs]) if runs else None

    def same_run_ratio(self, variant_id: str, reference_id: str, mode: str = "end-to-end") -> SameRunRatio:
        """Speed ratio to the reference, timed in interleaved rounds in this run under the same threads."""
        key = (variant_id, reference_id, mode)
        if key not in self.ratios:
            mine, theirs = self.workload(variant_id, mode), self.workload(reference_id, mode)
            mine_t, theirs_t = interleaved_round_times(mine, theirs, 2 * self.rounds, self.warmup_rounds)
            ratio, low, high = speed_ratio_interval(theirs_t, mine_t, self.confidence)
            self.ratios[key] = SameRunRatio(variant_id, reference_id, ratio, (low, high), self.confidence,
                                            len(mine_t))
        return self.ratios[key]

    def bare_onnxruntime(self, variant_id: str) -> Callable[[], None]:
        predictor = self.plan.predictor(variant_id)
        features = [predictor.encode([text]) for text in self.texts]
        return bare_onnxruntime_workload(predictor.session, features)

    def harness_overhead(self, variant_id: str, rounds: int = 20) -> HarnessCheck:
        """Model-only harness vs a bare InferenceSession.run loop, interleaved round by round."""
        harness = self.workload(variant_id, "model-only")
        bare = self.bare_onnxruntime(variant_id)
        harness_times, bare_times = interleaved_round_times(harness, bare, rounds, self.warmup_rounds,
                                                            min_round_seconds=0.3)
        check = HarnessCheck(variant_id, tuple(harness_times), tuple(bare_times), len(self.texts))
        self.harness_checks.append(check)
        return check
