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

    @property
    def drop(self) -> float:
        return self.baseline - self.value

    @property
    def passed(self) -> bool:
        # A tiny epsilon so that a drop of exactly the tolerance passes despite float rounding.
        return self.drop <= self.tolerance.allowed_drop(self.baseline) + 1e-12

    @property
    def message(self) -> str:
        verdict = "within" if self.passed else "OUTSIDE"
        change = f"a drop of {self.drop * 100:.2f}pp" if self.drop >= 0 else f"a gain of {-self.drop * 100:.2f}pp"
        return (
            f"{self.metric} of {self.variant_id} is {self.value:.4f} vs {self.baseline:.4f} for baseline "
            f"{self.baseline_id}: {change}, {verdict} the tolerance of "
            f"{self.tolerance} (allowed drop {self.tolerance.allowed_drop(self.baseline) * 100:.2f}pp); "
            f"{self.differing} of {self.total} predictions differ from the baseline's"
        )

