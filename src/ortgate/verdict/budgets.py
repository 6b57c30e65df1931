"""Budgets: upper bounds on a variant's deployment figures (request latency, memory, load time, file size).

A budget fails only when the figure's whole interval lies above it: a p99 whose interval straddles the limit is
not yet shown to break it (the message says so, and that more calls would tell). A latency's interval is its
distribution-free order-statistic interval (unbounded above when too few calls lie above the quantile, so such
a budget never passes, it stays inconclusive); memory and load time come from several fresh processes, their
interval is the range over those processes; a file's size is exact. The figures are measured by their stages
on first use, so a budget test alone still measures what it checks; one the run cannot measure fails.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ortgate.spec.thresholds import BUDGET_METRICS, Budget, budget_for

# metric -> (value, (low, high)) or None when the run cannot measure it for this variant
Figure = tuple[float, tuple[float, float]]
FigureSource = Callable[[str, str], Figure | None]


@dataclass(frozen=True)
class BudgetItem:
    metric: str
    limit: float
    pattern: str  # the budget's variant glob
    value: float | None
    interval: tuple[float, float] | None

    @property
    def outcome(self) -> str:
        """FAIL: the whole interval above the limit; pass: the whole interval within it; else inconclusive.
        A figure the run could not measure fails: a budget nobody checked must not pass."""
        if self.value is None or self.interval is None:
            return "FAIL"
        if self.interval[0] > self.limit:
            return "FAIL"
        return "pass" if self.interval[1] <= self.limit else "inconclusive"

    @property
    def message(self) -> str:
        what = BUDGET_METRICS[self.metric]
        if self.value is None:
            return f"{self.metric} ≤ {self.limit:g} (budget {self.pattern!r}): not measured for this variant ({what})"
        low, high = self.interval
        verdict = {"FAIL": "over budget: the whole interval lies above the limit",
                   "pass": "within budget",
                   "inconclusive": "the interval straddles the limit: not shown over it (more calls or processes "
                                   "would tell)"}[self.outcome]
        return (f"{self.metric} = {self.value:.4g} [{low:.4g}, {high:.4g}] against the budget ≤ {self.limit:g} "
                f"({self.pattern!r}): {verdict}")


@dataclass(frozen=True)
class BudgetCheck:
    variant: str
    items: tuple[BudgetItem, ...]

    @property
    def passed(self) -> bool:
        return all(item.outcome != "FAIL" for item in self.items)

    @property
    def message(self) -> str:
        lines = [f"{self.variant}: " + ("within its budget" if self.passed else "over budget")]
        return "\n".join(lines + [f"  {i.outcome}: {i.message}" for i in self.items])


@dataclass
class BudgetChecks:
    """Each variant's budget, checked against the figures `figure(variant, metric)` gives."""

    budgets: tuple[tuple[str, Budget], ...]
    figure: FigureSource
    checks: dict[str, BudgetCheck] = field(default_factory=dict)

    def limits(self, variant_id: str) -> dict[str, tuple[float, str]]:
        return budget_for(self.budgets, variant_id)

    def check(self, variant_id: str) -> BudgetCheck | None:
        """None: no budget names this variant."""
        limits = self.limits(variant_id)
        if not limits:
            return None
        if variant_id not in self.checks:
            items = []
            for metric, (limit, pattern) in limits.items():
                figure = self.figure(variant_id, metric)
                value, interval = figure if figure is not None else (None, None)
                items.append(BudgetItem(metric, limit, pattern, value, interval))
            self.checks[variant_id] = BudgetCheck(variant_id, tuple(items))
        return self.checks[variant_id]


def run_figures(meter, footprints, model_dir: Path) -> FigureSource:
    """A run's figures for its budgets, measured on first use: `meter` (the run's `SpeedMeter`: request latency,
    judged on its order-statistic intervals), `footprints` (its `FootprintMeter`: memory and load, the range over
    fresh processes) and the file sizes (the baseline's: its weights in `model_dir`). None: not measurable."""
    from ortgate.measure.footprint import weights_bytes
    from ortgate.spec.variants import BASELINE_ID

    def figure(variant_id: str, metric: str) -> Figure | None:
        if metric in ("p50_ms", "p90_ms", "p99_ms"):
            stats = meter.request_latency(variant_id)
            low, high = stats.exact_intervals[metric.removesuffix("_ms")]
            return getattr(stats, metric), (low, float("inf") if high is None else high)
        if metric == "size_mb":
            size = (meter.plan.built(variant_id).size_bytes if variant_id != BASELINE_ID
                    else weights_bytes(model_dir)) / 1e6
            return (size, (size, size)) if size > 0 else None
        rounds = footprints.rounds(variant_id)
        values = {"memory_mb": [f.peak_rss_mb for f in rounds], "model_memory_mb": [f.model_rss_mb for f in rounds],
                  "load_ms": [f.load_seconds * 1e3 for f in rounds]}[metric]
        return statistics.median(values), (min(values), max(values))

    return figure

