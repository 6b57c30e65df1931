"""What the user allows, as typed values: accuracy tolerances (absolute or relative, per variant) and speed
floors (a minimum ratio to the baseline or the parent, per variant). Parsed from settings; pure, no I/O.

A tolerance is written `1.0pp` or `1.0` (absolute, in percentage points of accuracy) or `2%` (relative to
the baseline's value). A table of them is written `1.0pp,static-int8=3pp,O99-*=0.5%`: entries with `=`
apply to matching variant ids (glob patterns, first match wins), the bare entry is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ortgate.errors import ConfigError
from ortgate.spec.variants import first_match

DEFAULT_TOLERANCE = "1.0pp"
GATE_MODES = ("point", "noninferiority")
# What an inconclusive gate does: warn (passes, with a pytest warning), fail, or pass silently.
INCONCLUSIVE_POLICIES = ("warn", "fail", "pass")


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
        return first_match(self.per_variant, variant_id, self.default)


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
    return first_match(floors, variant_id)
