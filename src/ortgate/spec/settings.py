"""Settings of a run: command-line options over `[tool.ortgate]` in pyproject.toml over defaults.

Every knob, its default and its help is declared once, in `options.OPTIONS`; `Settings` is generated from
that table (one field per option, plus the resolved variant matrix).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import field, make_dataclass
from functools import partial
from pathlib import Path

from ortgate.errors import ConfigError
from ortgate.spec.matrix import read_matrix_file, resolve_matrix
from ortgate.spec.options import OPTIONS, OPTIONS_BY_NAME, parse_option
from ortgate.spec.variants import DEFAULT_VARIANTS, VariantSet

Settings = make_dataclass(
    "Settings",
    [(o.attr, o.type, field(default_factory=partial(parse_option, o, o.default))) for o in OPTIONS]
    + [("variant_set", VariantSet, field(default=DEFAULT_VARIANTS)),  # the preset plus the user matrix
       ("user_variant_ids", tuple[str, ...], field(default=()))],
    frozen=True,
    namespace={"__module__": __name__, "__doc__": "A run's typed settings: one field per option of "
               "`options.OPTIONS` (defaults: the table's, parsed), plus the resolved variant matrix."},
)


def read_pyproject(rootdir: Path) -> dict:
    path = Path(rootdir) / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("ortgate", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = sorted(option.name for option in OPTIONS)
    unknown = sorted(set(table) - set(known))
    if "int8_max_size_fraction" in unknown:
        raise ConfigError(f"[tool.ortgate] int8_max_size_fraction in {path} is gone: a file-size rule misjudges models "
                          "whose embeddings dominate their weights; its replacement is int8_min_weight_share (the int8 "
                          "share of the weights the quantizer was asked to quantize, default "
                          f"{OPTIONS_BY_NAME['int8_min_weight_share'].default})")
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in [tool.ortgate] of {path}; known: {known}")
    return table


# An `ortgate` subcommand's description: where the options it does not get come from.
FROM_PYPROJECT = "Options not given come from [tool.ortgate] in ./pyproject.toml, else the defaults shown."


def settings_from_args(args: object, rootdir: Path) -> Settings:
    """The settings of an `ortgate` subcommand: its parsed options (those it takes; None where not given) over
    `[tool.ortgate]` in rootdir's pyproject.toml over the defaults."""
    cli = {option.name: getattr(args, option.name, None) for option in OPTIONS}
    return resolve_settings(cli, read_pyproject(rootdir), rootdir)


def resolve_settings(cli: Mapping[str, object], pyproject: Mapping[str, object], rootdir: Path) -> Settings:
    """Merge (command line wins), validate, and type every setting."""
    pyproject = dict(pyproject)
    user_tables: list[tuple[str, Mapping]] = []
    if isinstance(pyproject.get("variants"), Mapping):  # [tool.ortgate.variants.<id>]: a user matrix
        user_tables.append(("tool.ortgate.variants", pyproject.pop("variants")))
    values = {}
    for option in OPTIONS:
        raw = cli.get(option.name)
        raw = pyproject.get(option.name, option.default) if raw is None else raw
        values[option.attr] = parse_option(option, raw, Path(rootdir))
    if values["latency_min_calls"] > values["latency_max_calls"]:
        raise ConfigError(f"ortgate setting 'latency_min_calls' ({values['latency_min_calls']}) is more than "
                          f"'latency_max_calls' ({values['latency_max_calls']}): the latency pass could never stop on "
                          "its precision; lower the one or raise the other")
    if values["matrix"] is not None:
        user_tables.append(("variants", read_matrix_file(values["matrix"])))
    variant_set, user_ids = resolve_matrix(values["preset"], user_tables)
    return Settings(**values, variant_set=variant_set, user_variant_ids=user_ids)
