"""Verdicts of one run on its own measurements: an accuracy or F1 gate against the baseline, and a speed
ratio against its floor. Pure arithmetic on measured values; the thresholds come from `spec.thresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortgate.errors import ConfigError
from ortgate.measure.speed import SameRunRatio
from ortgate.measure.stats import DETECTION_POWER
from ortgate.spec.thresholds import GATE_MODES, INCONCLUSIVE_POLICIES, SpeedFloor, Tolerance


class InconclusiveGate(UserWarning):
    """A gate whose rows cannot tell the drop from the tolerance, let pass under `inconclusive = "warn"`."""


@dataclass(frozen=True)
class GateResult:
    metric: str
    variant_id: str
    baseline_id: str
    baseline: float
    value: float
    tolerance: Tolerance
    differing: int
    total: int
    mode: str = "point"  # or "noninferiority"
    # Confidence interval of (variant − baseline) for the metric, and its level.
    interval: tuple[float, float] | None = None
    confidence: float = 0.95
    mcnemar_p: float | None = None  # exact McNemar on the discordant rows (accuracy)
    mcnemar_mid_p: float | None = None
    # What these rows can detect (accuracy, paired; `stats.minimum_detectable_drop`, `stats.rows_needed`): the
    # smallest drop at 80% power, and the rows that would detect a drop of the allowed size (None: allowed 0).
    min_detectable_drop: float | None = None
    rows_needed: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise ConfigError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {self.mode!r}")
        if self.mode == "noninferiority" and self.interval is None:
            raise ValueError("a non-inferiority gate needs a confidence interval")

    @property
    def drop(self) -> float:
        return self.baseline - self.value

    @property
    def drop_upper_bound(self) -> float | None:
        """The largest drop the confidence interval allows."""
        return -self.interval[0] if self.interval else None

    @property
    def passed(self) -> bool:
        # point: the estimated drop; noninferiority: the interval's worst case, must be within tolerance.
        # A tiny epsilon so that a drop of exactly the tolerance passes despite float rounding.
        judged = self.drop if self.mode == "point" else self.drop_upper_bound
        return judged <= self.tolerance.allowed_drop(self.baseline) + 1e-12

    @property
    def drop_interval(self) -> tuple[float, float] | None:
        """The confidence interval of the drop (baseline − variant)."""
        return (-self.interval[1], -self.interval[0]) if self.interval else None

    @property
    def inconclusive(self) -> bool:
        """These rows cannot tell the drop from the tolerance: the confidence interval of the drop holds both no
        drop (0) and more than the allowed drop. They show neither that the drop is within the tolerance, nor
        that it is beyond, nor even that there is one: whichever way the mode's verdict went, other rows could
        reverse it. Never so for a clear pass (the whole interval within the allowed drop: both modes pass) or a
        clear fail (the whole interval beyond it: both fail), nor for a drop told from none (the interval
        excludes 0): the mode judges its size as before. Without an interval, never."""
        if self.interval is None:
            return False
        low, high = self.drop_interval
        return low <= 0 and high > self.tolerance.allowed_drop(self.baseline) + 1e-12

    @property
    def outcome(self) -> str:
        """"inconclusive", else the mode's verdict: "pass" or "FAIL"."""
        return "inconclusive" if self.inconclusive else "pass" if self.passed else "FAIL"

    def action(self, policy: str) -> str:
        """What the gate test does: "pass", "fail", or, for an inconclusive gate, what `policy` (the
        `inconclusive` setting: warn, fail or pass) says."""
        if policy not in INCONCLUSIVE_POLICIES:
            raise ConfigError(f"inconclusive must be one of {', '.join(INCONCLUSIVE_POLICIES)}, got {policy!r}")
        if self.inconclusive:
            return policy
        return "pass" if self.passed else "fail"

    def _power_text(self) -> str:
        if self.min_detectable_drop is None:
            return ""
        allowed = self.tolerance.allowed_drop(self.baseline) * 100
        needed = (f"{self.rows_needed:,} rows would detect one of {allowed:.2f}pp" if self.rows_needed is not None
                  else "no number of rows detects a drop of 0")
        return (f"; these {self.total:,} rows detect an accuracy drop of {self.min_detectable_drop * 100:.2f}pp or "
                f"more ({DETECTION_POWER:.0%} power at {self.confidence:.0%} confidence), {needed}")

    @property
    def message(self) -> str:
        verdict = "within" if self.passed else "OUTSIDE"
        change = f"a drop of {self.drop * 100:.2f}pp" if self.drop >= 0 else f"a gain of {-self.drop * 100:.2f}pp"
        judged = "" if self.mode == "point" else (
            f" (non-inferiority: the drop may be up to {self.drop_upper_bound * 100:.2f}pp at "
            f"{self.confidence:.0%} confidence)")
        evidence = ""
        if self.interval is not None:
            low, high = (x * 100 for x in self.interval)
            evidence += f"; {self.confidence:.0%} interval of the difference [{low:+.2f}, {high:+.2f}]pp"
        if self.mcnemar_p is not None:
            evidence += f"; McNemar exact p={self.mcnemar_p:.3g} (mid-p {self.mcnemar_mid_p:.3g})"
        head = ""
        if self.inconclusive:
            low, high = (x * 100 for x in self.drop_interval)
            head = "INCONCLUSIVE: "
            evidence += (f"; the drop's {self.confidence:.0%} interval [{low:+.2f}, {high:+.2f}]pp holds both no drop "
                         "and more than the allowed drop: these rows cannot tell the drop from the tolerance")
        return (
            f"{head}{self.metric} of {self.variant_id} is {self.value:.4f} vs {self.baseline:.4f} for baseline "
            f"{self.baseline_id}: {change}{judged}, {verdict} the tolerance of "
            f"{self.tolerance} (allowed drop {self.tolerance.allowed_drop(self.baseline) * 100:.2f}pp); "
            f"{self.differing} of {self.total} predictions differ from the baseline's{evidence}{self._power_text()}"
        )


@dataclass(frozen=True)
class SpeedCheck:
    """A same-run speed ratio (measured) against the variant's floor (None: no floor, always passes)."""

    measured: SameRunRatio
    floor: SpeedFloor | None

    @property
    def passed(self) -> bool:
        """A floor fails only when the whole interval lies below it: noise alone never fails it."""
        return self.floor is None or self.measured.interval[1] >= self.floor.ratio

    @property
    def message(self) -> str:
        m = self.measured
        low, high = m.interval
        floor = f"floor {self.floor}" if self.floor else "no floor set"
        verdict = "" if self.passed else ": the whole interval lies below the floor"
        return (f"{m.variant_id} is {m.ratio:.2f}x as fast as {m.reference_id} "
                f"({m.confidence:.0%} interval {low:.2f}–{high:.2f}x over {m.rounds} interleaved rounds); "
                f"{floor}{verdict}")
