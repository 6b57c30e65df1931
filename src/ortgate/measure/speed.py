"""Speed measurement of one run: throughput recorded per variant and mode (over repeats), the interleaved
round-robin measurement of every variant with the baseline (what same-run ratios, speed floors and `ortgate
compare` rest on), and the harness check against a bare InferenceSession.run loop.

pytest-benchmark's fixture (in the plugin) times each variant on its own and hands the round times here with
`record`; those are pytest-benchmark's figures. Variants timed one after another minutes apart see different
machines (noise comes and goes within a run), so ratios are taken from the round-robin cycles instead, where
every variant runs within seconds of the others. Floors and verdicts sit above.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ortgate.build.plan import BuildPlan
from ortgate.errors import Once
from ortgate.measure.latency import LatencyPass, LatencyStats, TimerOverhead, request_workload, timer_overhead
from ortgate.measure.stats import distribution, paired_ratio_interval, ratios_within
from ortgate.measure.throughput import (
    RoundRobin,
    Speed,
    bare_onnxruntime_workload,
    interleaved_round_times,
    speed_from_round_times,
    workload,
)
from ortgate.spec.variants import BASELINE_ID


@dataclass(frozen=True)
class SameRunRatio:
    """variant speed / reference speed from the run's round-robin cycles (the trimmed mean of the per-cycle
    log ratios), with a paired bootstrap interval over the cycles."""

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
    cycles: int = 24  # round-robin cycles per mode: at most this many
    cycle_precision: float | None = None  # stop a mode's cycles once every ratio is known to within this share
    min_cycles: int = 8  # ... but not before this many
    log: Callable[[str], None] = print
    interleaved_seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # mode -> id -> cycles
    _robins: dict[str, RoundRobin] = field(default_factory=dict)
    speeds: dict[tuple[str, str], list[Speed]] = field(default_factory=dict)  # one Speed per repeat
    round_seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # every round, all repeats
    ratios: dict[tuple[str, str, str], SameRunRatio] = field(default_factory=dict)  # (variant, reference, mode)
    harness_checks: list[HarnessCheck] = field(default_factory=list)
    latency_settings: dict = field(default_factory=dict)  # LatencyPass keywords (precision, calls, seconds)
    latency_pass: LatencyPass | None = None
    _latency_once: Once = field(init=False)
    latencies: dict[str, LatencyStats] = field(default_factory=dict)
    timer: TimerOverhead | None = None

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

    def interleaved_ids(self) -> list[str]:
        """What the round-robin times: the baseline, each built variant of the run with a graph of its own, and
        the built parents of those (a floor may be stated against the parent)."""
        plan, ids = self.plan, [BASELINE_ID]
        wanted = [v for v in plan.run_ids if v != BASELINE_ID]
        wanted += [p for v in wanted if (p := plan.variants.specs[v].parent) and p != BASELINE_ID]
        for vid in wanted:
            if vid not in ids and plan.is_built(vid) and plan.duplicate_of(vid) is None:
                ids.append(vid)
        return ids

    def round_robin(self, mode: str) -> RoundRobin:
        """The mode's round-robin over `interleaved_ids`, whose cycles a caller may drive (pytest-benchmark)."""
        if mode not in self._robins:
            self.plan.build_all()
            ids = self.interleaved_ids()
            until = (f"until every ratio is within ±{self.cycle_precision:.0%} (at least {self.min_cycles}, at most "
                     f"{self.cycles} cycles)" if self.cycle_precision else f"{self.cycles} cycles")
            self.log(f"[ortgate] interleaved speed ({mode}): {len(ids)} graphs in turn, {until}")
            # One pass over all the texts per graph and cycle. Shorter passes (chunks of 32 texts) were tried: the
            # switch between sessions then weighs on every pass, and ratios shrank toward 1 (int8 vs the export
            # 1.9x -> 1.7x, O99 without attention fusion no slower than O99), so passes stay whole.
            self._robins[mode] = RoundRobin({vid: self.workload(vid, mode) for vid in ids}, self.warmup_rounds)
        return self._robins[mode]

    def interleaved(self, mode: str) -> dict[str, list[float]]:
        """Every variant and the baseline timed in turn, `cycles` times (one pass over the texts each): per id,
        its seconds in each cycle. The cycles a caller drove count; the rest run here. Once per mode."""
        if mode not in self.interleaved_seconds:
            robin = self.round_robin(mode)
            with self.plan.progress_scope():
                from tqdm.auto import tqdm

                with tqdm(total=self.cycles, initial=min(robin.cycles, self.cycles), desc=f"round-robin {mode}",
                          unit="cycle", disable=robin.cycles >= self.cycles) as bar:
                    robin.run(self.cycles, on_cycle=lambda: bar.update(1), enough=lambda: self.precise(robin))
            self.interleaved_seconds[mode] = {vid: list(t) for vid, t in robin.times.items()}
            if robin.cycles < self.cycles:
                self.log(f"[ortgate] round-robin {mode}: every ratio within ±{self.cycle_precision:.0%} after "
                         f"{robin.cycles} cycles (at most {self.cycles})")
        return self.interleaved_seconds[mode]

    def precise(self, robin: RoundRobin) -> bool:
        """Whether every graph's speed ratio to its reference (the export for an ONNX graph, as `ortgate compare`
        takes it; the baseline for the export) is known to within `cycle_precision`, after at least `min_cycles`
        cycles (`stats.ratios_within`). Always False when `cycle_precision` is None (fixed cycles)."""
        if self.cycle_precision is None or robin.cycles < self.min_cycles:
            return False
        from ortgate.spec.variants import EXPORT_ID

        reference = {vid: EXPORT_ID if vid != EXPORT_ID and EXPORT_ID in robin.times else BASELINE_ID
                     for vid in robin.times if vid != BASELINE_ID}
        return ratios_within(robin.times, reference, self.cycle_precision, self.confidence)

    def measured_as(self, variant_id: str) -> str:
        """The id whose timings stand for this variant's: its byte-identical original, or itself."""
        return self.plan.duplicate_of(variant_id) or variant_id

    def same_run_ratio(self, variant_id: str, reference_id: str, mode: str = "end-to-end") -> SameRunRatio:
        """Speed ratio to the reference from the same round-robin cycles (paired by cycle)."""
        key = (variant_id, reference_id, mode)
        if key not in self.ratios:
            times = self.interleaved(mode)
            mine, theirs = times[self.measured_as(variant_id)], times[self.measured_as(reference_id)]
            ratio, low, high = paired_ratio_interval(theirs, mine, self.confidence)
            self.ratios[key] = SameRunRatio(variant_id, reference_id, ratio, (low, high), self.confidence,
                                            len(mine))
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

    def latency(self) -> dict[str, LatencyStats]:
        """Every graph's single-stream request latencies (`interleaved_ids`: the baseline, each distinct graph),
        from one adaptive pass, interleaved in blocks; once per run (a failure is kept and raised again)."""
        return self._latency_once()

    def __post_init__(self) -> None:
        self._latency_once = Once(self._latency)

    def _latency(self) -> dict[str, LatencyStats]:
        self.plan.build_all()
        ids = self.interleaved_ids()
        self.timer = timer_overhead()
        robin = LatencyPass({vid: request_workload(self.plan.predictor(vid), self.texts) for vid in ids},
                            confidence=self.confidence, **self.latency_settings)
        self.log(f"[ortgate] request latency: {len(ids)} graphs in blocks of {robin.block} calls, until every "
                 f"p99 is within ±{robin.precision:.0%} (at least {robin.min_calls} calls, at most "
                 f"{robin.max_calls} or {robin.max_seconds:g}s); timer overhead {self.timer.median_ns:.0f} ns")
        with self.plan.progress_scope():
            from tqdm.auto import tqdm

            with tqdm(desc="request latency", unit="cycle", disable=None) as bar:
                robin.run(on_cycle=lambda _: bar.update(1))
        self.latency_pass = robin
        self.latencies = {vid: robin.stats(vid) for vid in ids}
        calls = {len(t) for t in robin.times_ns.values()}
        self.log(f"[ortgate] request latency: {robin.stopped} after {robin.cycles} cycles ({max(calls)} calls a "
                 "graph)")
        return self.latencies

    def request_latency(self, variant_id: str) -> LatencyStats:
        return self.latency()[self.measured_as(variant_id)]
