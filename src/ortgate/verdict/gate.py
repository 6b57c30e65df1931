"""Verdicts of one run on its own measurements: an accuracy or F1 gate against the baseline, and a speed
ratio against its floor. Pure arithmetic on measured values; the thresholds come from `spec.thresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortgate.errors import ConfigError
from ortgate.measure.speed import SameRunRatio
from ortgate.spec.thresholds import GATE_MODES, SpeedFloor, Tolerance


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
        return (
            f"{self.metric} of {self.variant_id} is {self.value:.4f} vs {self.baseline:.4f} for baseline "
            f"{self.baseline_id}: {change}{judged}, {verdict} the tolerance of "
            f"{self.tolerance} (allowed drop {self.tolerance.allowed_drop(self.baseline) * 100:.2f}pp); "
            f"{self.differing} of {self.total} predictions differ from the baseline's{evidence}"
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
