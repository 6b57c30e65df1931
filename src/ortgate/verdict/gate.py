"""Accuracy gate arithmetic: tolerances (absolute or relative, per variant) and the verdict.

Pure functions, no I/O. A tolerance is written `1.0pp` or `1.0` (absolute, in percentage points of
accuracy) or `2%` (relative to the baseline's value). A table of them is written
`1.0pp,static-int8=3pp,O99-*=0.5%`: entries with `=` apply to matching variant ids (glob patterns,
first match wins), the bare entry is the default.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from ortgate.errors import ConfigError

DEFAULT_TOLERANCE = "1.0pp"
GATE_MODES = ("point", "noninferiority")


@dataclass(frozen=True)
class Tolerance:
    value: float
    relative: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value < 0:
            raise ConfigError(f"tolerance must be a finite number >= 0, got {self.value!r}")

    def allowed_drop(self, baseline: float) -> float:
        """The largest allowed drop, as a fraction (0.01 = one percentage point)."""
        return self.value / 100 * (baseline if self.relative else 1.0)

    def __str__(self) -> str:
        return f"{self.value:g}% of baseline" if self.relative else f"{self.value:g}pp"


def parse_tolerance(text: str | float | int) -> Tolerance:
    """Parse `1.0`, `1.0pp` (absolute percentage points) or `2%` (relative to the baseline)."""
    if isinstance(text, bool):
        raise ConfigError(f"tolerance must be a number such as 1.0pp or 2%, got {text!r}")
    if isinstance(text, int | float):
        return Tolerance(float(text))
    raw = str(text).strip()
    relative = raw.endswith("%")
    number = raw[:-1] if relative else raw.removesuffix("pp")
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(
            f"invalid tolerance {raw!r}: write a non-negative number of percentage points (1.0 or 1.0pp) "
            "or a percentage of the baseline (2%)"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"invalid tolerance {raw!r}: it must be a finite number >= 0")
    return Tolerance(value, relative)


@dataclass(frozen=True)
class ToleranceTable:
    default: Tolerance = field(default_factory=lambda: parse_tolerance(DEFAULT_TOLERANCE))
    per_variant: tuple[tuple[str, Tolerance], ...] = ()

    def for_variant(self, variant_id: str) -> Tolerance:
        for pattern, tolerance in self.per_variant:
            if fnmatch.fnmatchcase(variant_id, pattern):
                return tolerance
        return self.default


def parse_tolerance_table(spec: str | float | int | dict | None) -> ToleranceTable:
    """Parse the option string (`1pp,static-int8=3pp`) or the pyproject form ({default=..., id=...})."""
    if spec is None:
        return ToleranceTable()
    if isinstance(spec, dict):
        items = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, str):
        items = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            items.append((key.strip(), value.strip()) if sep else ("default", key.strip()))
    else:
        items = [("default", spec)]
    default = parse_tolerance(DEFAULT_TOLERANCE)
    per_variant = []
    for key, value in items:
        if key == "default":
            default = parse_tolerance(value)
        else:
            per_variant.append((key, parse_tolerance(value)))
    return ToleranceTable(default, tuple(per_variant))


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



# ---------------------------------------------------------------- speed floors

SPEED_REFERENCES = ("baseline", "parent")


@dataclass(frozen=True)
class SpeedFloor:
    """A variant must be at least `ratio` times as fast as its reference (the baseline or its parent)."""

    ratio: float
    reference: str = "baseline"

    def __post_init__(self) -> None:
        if not math.isfinite(self.ratio) or self.ratio <= 0:
            raise ConfigError(f"a speed floor must be a ratio > 0, got {self.ratio!r}")
        if self.reference not in SPEED_REFERENCES:
            raise ConfigError(f"a speed floor's reference is 'baseline' or 'parent', got {self.reference!r}")

    def __str__(self) -> str:
        return f"{self.ratio:g}x its {self.reference}"


def parse_speed_floors(spec: str | dict | None) -> tuple[tuple[str, SpeedFloor], ...]:
    """`*int8*=1.2:parent,O99=1.5` (or the pyproject table {"*int8*" = "1.2:parent"}) → (glob, floor) pairs."""
    if spec is None:
        return ()
    items = list(spec.items()) if isinstance(spec, dict) else [
        part.split("=", 1) if "=" in part else (part, None) for part in (p.strip() for p in spec.split(",")) if part]
    floors = []
    for pattern, value in items:
        if value is None:
            raise ConfigError(f"invalid speed floor {pattern!r}: write VARIANT_GLOB=RATIO[:baseline|parent]")
        ratio, _, reference = str(value).strip().removesuffix("x").partition(":")
        reference = reference.removesuffix("x")
        try:
            number = float(ratio.removesuffix("x"))
        except ValueError:
            raise ConfigError(f"invalid speed floor {pattern}={value!r}: the ratio must be a number") from None
        floors.append((str(pattern).strip(), SpeedFloor(number, reference or "baseline")))
    return tuple(floors)


def speed_floor_for(floors: tuple[tuple[str, SpeedFloor], ...], variant_id: str) -> SpeedFloor | None:
    for pattern, floor in floors:
        if fnmatch.fnmatchcase(variant_id, pattern):
            return floor
    return None


@dataclass(frozen=True)
class SpeedCheck:
    variant_id: str
    reference_id: str
    ratio: float
    interval: tuple[float, float]
    confidence: float
    rounds: int
    floor: SpeedFloor | None

    @property
    def passed(self) -> bool:
        """A floor fails only when the whole interval lies below it: noise alone never fails it."""
        return self.floor is None or self.interval[1] >= self.floor.ratio

    @property
    def message(self) -> str:
        low, high = self.interval
        floor = f"floor {self.floor}" if self.floor else "no floor set"
        verdict = "" if self.passed else ": the whole interval lies below the floor"
        return (f"{self.variant_id} is {self.ratio:.2f}x as fast as {self.reference_id} "
                f"({self.confidence:.0%} interval {low:.2f}–{high:.2f}x over {self.rounds} interleaved rounds); "
                f"{floor}{verdict}")
