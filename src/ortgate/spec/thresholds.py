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


# ---------------------------------------------------------------- budgets

# What a budget can bound (all upper bounds): the figure's name in a budget, and what it is.
BUDGET_METRICS = {
    "p50_ms": "median request latency (ms, single stream, batch 1, end to end)",
    "p90_ms": "90th-percentile request latency (ms)",
    "p99_ms": "99th-percentile request latency (ms)",
    "memory_mb": "peak RSS of a fresh process serving the variant (MB: session creation and inference)",
    "model_memory_mb": "peak RSS the variant adds to that process (MB: peak minus before loading)",
    "load_ms": "session creation in a fresh process (cold load, ms)",
    "size_mb": "model file size (MB)",
}


@dataclass(frozen=True)
class Budget:
    """Upper bounds on a variant's figures, metric -> limit (see BUDGET_METRICS)."""

    limits: tuple[tuple[str, float], ...]

    def __str__(self) -> str:
        return ", ".join(f"{metric} ≤ {limit:g}" for metric, limit in self.limits)


def _budget(pattern: str, value: object) -> Budget:
    if isinstance(value, str):  # the option's form: p99_ms:15;memory_mb:300
        pairs = [p.partition(":")[::2] for p in filter(None, (s.strip() for s in value.split(";")))]
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise ConfigError(f"budget {pattern!r}: write METRIC:LIMIT pairs (p99_ms:15;memory_mb:300) or a table "
                          f"{{ p99_ms = 15 }}, got {value!r}")
    limits = []
    for metric, limit in pairs:
        metric = str(metric).strip()
        if metric not in BUDGET_METRICS:
            raise ConfigError(f"budget {pattern!r}: unknown figure {metric!r}; known: {', '.join(BUDGET_METRICS)}")
        try:
            number = float(str(limit).strip())
        except ValueError:
            raise ConfigError(f"budget {pattern!r}: {metric} must be a number, got {limit!r}") from None
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"budget {pattern!r}: {metric} must be a finite number >= 0, got {limit!r}")
        limits.append((metric, number))
    if not limits:
        raise ConfigError(f"budget {pattern!r} sets no limit")
    return Budget(tuple(limits))


def parse_budgets(spec: str | dict | None) -> tuple[tuple[str, Budget], ...]:
    """`*int8*=p99_ms:15;memory_mb:300,onnx=size_mb:100` (the option) or the pyproject table
    {"*int8*" = { p99_ms = 15, memory_mb = 300 }} → (variant glob, budget) pairs, in order."""
    if spec is None:
        return ()
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in filter(None, (p.strip() for p in str(spec).split(","))):
            pattern, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"invalid budget {part!r}: write VARIANT_GLOB=METRIC:LIMIT[;METRIC:LIMIT], "
                                  "e.g. '*int8*=p99_ms:15;memory_mb:300'")
            items.append((pattern.strip(), value))
    return tuple((str(pattern), _budget(str(pattern), value)) for pattern, value in items)


def budget_for(budgets: tuple[tuple[str, Budget], ...], variant_id: str) -> dict[str, tuple[float, str]]:
    """metric -> (limit, the pattern that set it): for each metric, the first matching pattern that bounds it."""
    import fnmatch

    out: dict[str, tuple[float, str]] = {}
    for pattern, budget in budgets:
        if fnmatch.fnmatchcase(variant_id, pattern):
            for metric, limit in budget.limits:
                out.setdefault(metric, (limit, pattern))
    return out
