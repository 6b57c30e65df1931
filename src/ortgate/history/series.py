"""What `ortgate history` shows: per variant × machine × metric, the stored runs' values in time order and the
steps detected in them (`history.changepoints`), each step named by what changed at it (commit, library)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    """A figure followed over runs. `log`: analysed as its logarithm (changes are relative: speeds, times,
    memory); else in its own unit ×`scale` (accuracy in pp). `floor`: the smallest noise sd assumed on the
    analysis scale (a figure that reproduces exactly, like accuracy, would otherwise call any wobble a step)."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    log: bool
    floor: float
    scale: float = 1.0
    min_change: float = 0.0  # smaller steps are not reported (analysis scale: log change, or pp)

    def analysed(self, value: float) -> float:
        return math.log(value) if self.log else value * self.scale

    def value_text(self, value: float) -> str:
        """A value as the history's table and dashboard show it: accuracy in %, a ratio as 2.63x, else 15.6ms."""
        if self.name == "accuracy":
            return f"{100 * value:.2f}%"
        return f"{value:.2f}x" if self.unit == "x" else f"{value:.3g}{self.unit}"

    def change_text(self, before: float, after: float) -> str:
        if self.log:
            return f"{(after / before - 1) * 100:+.1f}%"
        return f"{(after - before) * self.scale:+.2f}{self.unit}"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("ratio", "samples/s ratio to the baseline (same run, end to end)", "x", True, True, 0.005),
    Metric("accuracy", "accuracy", "pp", True, False, 0.05, scale=100.0, min_change=0.1),
    Metric("p99_ms", "p99 request latency", "ms", False, True, 0.01),
    # Peak RSS reproduces within 0.6% (README, deployment rows): a step under 2% is real but no regression
    Metric("peak_rss_mb", "peak RSS", "MB", False, True, 0.002, min_change=0.02),
)}


@dataclass(frozen=True)
class RunInfo:
    """One stored run, as the history names it."""

    run_id: int
    generated: str  # ISO 8601, UTC
    machine_id: str
    cpu: str
    commit: str | None = None
    branch: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # What was measured: the model and data fingerprints (runs of another model or data set are another series)
    # and how the history names them
    experiment: str = ""
    model: str = ""

    @property
    def label(self) -> str:
        return (self.commit or "")[:10] or self.generated[:16]


@dataclass(frozen=True)
class Point:
    run: RunInfo
    value: float
    low: float | None = None  # the run's own interval, where it gives one
    high: float | None = None
    gate: str | None = None  # the variant's accuracy gate in that run


@dataclass(frozen=True)
class Step:
    """A change point: `index` is the first point after it; before/after are the segments' means (the metric's
    own unit; geometric means for log metrics)."""

    index: int
    before: float
    after: float
    kind: str  # "regression" | "improvement"
    change: str  # "-6.1%" or "-0.40pp"
    run: RunInfo  # the first run after the step
    cause: str  # what changed between the run before and this one: commits, library versions ("" if nothing)


@dataclass(frozen=True)
class Series:
    variant: str
    machine_id: str
    metric: Metric
    points: list[Point]
    steps: list[Step] = field(default_factory=list)
    noise: float | None = None  # the sd assumed on the analysis scale (log or pp)
    parent: str | None = None
    experiment: str = ""  # RunInfo.experiment of its runs
    model: str = ""

    @property
    def newest_step(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def key(self) -> str:
        return f"{self.variant}@{self.machine_id}:{self.metric.name}" + (f" [{self.model}]" if self.model else "")
