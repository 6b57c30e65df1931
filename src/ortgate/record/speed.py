"""A variant's speed ratio to its run's baseline, from the best measurement the record holds: what the
cross-machine report and the history follow."""

from __future__ import annotations

from dataclasses import dataclass

from ortgate.record.result import SPEED_MODE, VariantResult


@dataclass(frozen=True)
class Speed:
    """One run's speed ratio of a variant to that run's baseline, and the interval the run gives it."""

    ratio: float
    interval: tuple[float, float] | None
    source: str  # "interleaved" | "speed check" | "two medians" (no interval) | "baseline" (exactly 1)


def speed_of(row: VariantResult, baseline: str) -> Speed | None:
    """The round-robin ratio and interval when the record has them, else the same-run speed check's when it
    is to the baseline, else the ratio of the two medians without an interval."""
    if row.variant == baseline:
        timed = row.samples_per_s is not None or row.speed_ratio is not None or row.interleaved
        return Speed(1.0, (1.0, 1.0), "baseline") if timed else None
    interleaved = (row.interleaved or {}).get(SPEED_MODE)
    if interleaved is not None and interleaved.reference == baseline:
        return Speed(interleaved.ratio, tuple(interleaved.interval), "interleaved")
    check = row.speed_check
    if check is not None and check.reference == baseline:
        return Speed(check.ratio, tuple(check.interval), "speed check")
    return Speed(row.speed_ratio, None, "two medians") if row.speed_ratio is not None else None
