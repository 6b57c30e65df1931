"""Budgets: upper bounds on a variant's deployment figures (request latency, memory, load time, file size).

A budget fails only when the figure's whole interval lies above it: a p99 whose bootstrap interval straddles
the limit is not yet shown to break it (the message says so, and that more calls would tell). Memory and load
time come from several fresh processes: their interval is the range over those processes. A file's size is
exact. The figures are measured by their stages on first use, so a budget test alone still measures what it
checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
        return "\n".join(lines + [f"  {'FAIL' if i.outcome == 'FAIL' else i.outcome}: {i.message}"
                                  for i in self.items])


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
