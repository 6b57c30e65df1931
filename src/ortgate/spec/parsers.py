"""The value parsers of the settings table (`options.OPTIONS`).

Each parser takes a raw value (a command-line string, a TOML value from `[tool.ortgate]`, or the table's
default) and the setting's name, returns the setting's typed value, and raises ConfigError naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ortgate.errors import ConfigError
from ortgate.isa import usable_cores
from ortgate.spec.thresholds import SpeedFloor, ToleranceTable, parse_speed_floors, parse_tolerance_table

Parser = Callable[[object, str], object]


def text(value: object, name: str) -> str | None:
    return None if value is None else str(value)


def text_list(value: object, name: str) -> tuple[str, ...] | None:
    """A list, or comma-separated items (`title,content`), or both (an option given twice)."""
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    out = tuple(p.strip() for item in items for p in str(item).split(",") if p.strip())
    if not out:
        raise ConfigError(f"ortgate setting {name!r} is empty")
    return out


def at_least(minimum: int) -> Parser:
    """An integer >= minimum, or None (not set)."""

    def parse(value: object, name: str) -> int | None:
        if value is None:
            return None
        try:
            number = int(str(value))
        except ValueError:
            raise ConfigError(f"ortgate setting {name!r} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"ortgate setting {name!r} must be >= {minimum}, got {number}")
        return number

    return parse


def one_of(choices: tuple[str, ...]) -> Parser:
    def parse(value: object, name: str) -> str:
        if value not in choices:
            raise ConfigError(f"ortgate setting {name!r} must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def fraction(upper_closed: bool = False) -> Parser:
    """A number in (0, 1), or (0, 1] when `upper_closed`."""

    def parse(value: object, name: str) -> float:
        try:
            number = float(str(value))
        except ValueError:
            raise ConfigError(f"ortgate setting {name!r} must be a number between 0 and 1, got {value!r}") from None
        if not (0 < number <= 1 if upper_closed else 0 < number < 1):
            raise ConfigError(f"ortgate setting {name!r} must be between 0 and 1 (e.g. 0.95), got {number}")
        return number

    return parse


def boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"ortgate setting {name!r} must be true or false, got {value!r}")


DEFAULT_STORE = ".ortgate/history.db"  # the store setting given bare (true): this SQLite file under the project root
STORE_SCHEMES = ("sqlite", "postgresql")  # the databases a store URL may name


def store_target(value: object, name: str) -> str | None:
    """The history store: true (the default SQLite file), false or unset (none), a sqlite:/// or
    postgresql:// URL, or the path of a SQLite file."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_STORE
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"ortgate setting {name!r} must be true, a database URL or a file path, got {value!r}")
    target = value.strip()
    if "://" in target and target.split("://")[0].split("+")[0] not in STORE_SCHEMES:
        raise ConfigError(f"ortgate setting {name!r} must be a sqlite:///PATH or postgresql://USER@HOST/DB URL "
                          f"(or a file path), got {target.split('://')[0]}://...")
    if "://" not in target and Path(target).expanduser().is_dir():  # `--ortgate-store benchmarks` took the tests
        raise ConfigError(f"ortgate setting {name!r} got the folder {target!r} as its store: give the store as "
                          f"--ortgate-store=URL, or put a bare --ortgate-store after the test paths")
    return target


def path(value: object, name: str) -> Path | None:
    return None if value is None else Path(str(value)).expanduser()


def cache_dir_or_default(value: object, name: str = "cache_dir") -> Path:
    """The cache folder: the value given, else $ORTGATE_CACHE_DIR, else ~/.cache/ortgate."""
    return Path(str(value or os.environ.get("ORTGATE_CACHE_DIR") or "~/.cache/ortgate")).expanduser()


def threads_or_cores(value: object, name: str) -> int:
    """A thread count >= 1, else every core this process may use (affinity, cgroup quota)."""
    return at_least(1)(value, name) or usable_cores()


def _naming_the_setting(parse: Callable[[object], object], value: object, name: str):
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError(f"ortgate setting {name!r}: {exc}") from None


def tolerance_table(value: object, name: str) -> ToleranceTable:
    return _naming_the_setting(parse_tolerance_table, value, name)


def speed_floors(value: object, name: str) -> tuple[tuple[str, SpeedFloor], ...]:
    return _naming_the_setting(parse_speed_floors, value, name)


def parse_label_map(spec: str | Mapping[str, str] | None) -> dict[str, str] | None:
    """`positive=POSITIVE,negative=NEGATIVE` or `1=POSITIVE,-1=NEGATIVE` → {dataset value: model label}."""
    if spec is None or isinstance(spec, Mapping):
        return None if spec is None else {str(k): str(v) for k, v in spec.items()}
    mapping = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                f"invalid --ortgate-label-map entry {part!r}: write DATASET_VALUE=MODEL_LABEL, "
                "e.g. positive=POSITIVE,negative=NEGATIVE"
            )
        mapping[key.strip()] = value.strip()
    if not mapping:
        raise ConfigError("--ortgate-label-map is empty: write DATASET_VALUE=MODEL_LABEL pairs")
    return mapping


def label_map(value: object, name: str) -> dict[str, str] | None:
    return _naming_the_setting(parse_label_map, value, name)


def budgets(value: object, name: str):
    from ortgate.spec.thresholds import parse_budgets

    return _naming_the_setting(parse_budgets, value, name)


def positive_number(value: object, name: str) -> float:
    """A finite number > 0."""
    try:
        number = float(str(value))
    except ValueError:
        raise ConfigError(f"ortgate setting {name!r} must be a number, got {value!r}") from None
    if not (number > 0 and number != float("inf")):
        raise ConfigError(f"ortgate setting {name!r} must be a finite number > 0, got {value!r}")
    return number


def int_list(minimum: int) -> Parser:
    """Integers >= minimum as a sorted tuple without repeats, or None (not set): comma-separated on the
    command line (`1,8,32`), a list in [tool.ortgate] (`[1, 8, 32]`), or both (an option given twice)."""

    def parse(value: object, name: str) -> tuple[int, ...] | None:
        if value is None:
            return None
        items = value if isinstance(value, list | tuple) else [value]
        parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"ortgate setting {name!r} is empty; give integers, e.g. 1,8,32")
        return tuple(sorted({_int_at_least(part, minimum, name) for part in parts}))

    return parse


def _int_at_least(part: str, minimum: int, name: str) -> int:
    try:
        number = int(part)
    except ValueError:
        raise ConfigError(f"ortgate setting {name!r} must list integers (e.g. 1,8,32), got {part!r}") from None
    if number < minimum:
        raise ConfigError(f"ortgate setting {name!r}: every value must be >= {minimum}, got {number}")
    return number


def fraction_or_off(value: object, name: str) -> float | None:
    """A number in (0, 1), or "off" / false (None: the setting does nothing)."""
    if value is None or value is False or str(value).strip().lower() in ("off", "none", "false"):
        return None
    return fraction()(value, name)

