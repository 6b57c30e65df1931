"""Settings of a run: command-line options over `[tool.ortgate]` in pyproject.toml over defaults.

Every knob and its default is in `DEFAULTS` below; `OPTION_HELP` documents it once, for both the
command line (`--ortgate-<name>`, with `_` written `-`) and pyproject.toml (`name = ...`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ortgate.errors import ConfigError
from ortgate.sources.data import parse_label_map
from ortgate.spec.matrix import PRESET_NAMES, read_matrix_file, resolve_matrix
from ortgate.spec.variants import DEFAULT_VARIANTS, VariantSet
from ortgate.verdict.gate import GATE_MODES, SpeedFloor, ToleranceTable, parse_speed_floors, parse_tolerance_table

DEFAULTS: dict[str, object] = {
    "model": None,  # None: the default MiniLM sentiment model, built on first use
    "dataset": None,  # None: VADER Amazon review snippets, first 3,000 rows
    "split": None,
    "text_column": None,  # "text"; two columns (title, content) are combined
    "label_column": None,  # "label"
    "label_map": None,  # default: the model's id2label (ids or names)
    "max_length": None,  # None: the model's own limit (tokenizer model_max_length, position table)
    "limit": None,
    "variants": None,  # None: every variant of the preset (+ user matrix); in pyproject, a table defines a matrix
    "preset": "default",
    "matrix": None,  # a TOML file with [variants.<id>] entries
    "strict": False,
    "build_jobs": 1,
    "structure_dir": "ortgate-structure",
    "update_structure": False,
    "int8_min_weight_share": 0.99,
    "tolerance": "1.0pp",
    "gate_mode": "point",
    "confidence": 0.95,
    "speed_floor": None,
    "threads": None,  # None: all logical cores
    "cache_dir": None,  # None: $ORTGATE_CACHE_DIR or ~/.cache/ortgate
    "results_dir": "ortgate-results",
    "eval_batch_size": 1,
    "bench_samples": 128,
    "bench_rounds": 5,
    "warmup_rounds": 1,
    "repeat": 1,
    "cross_machine": False,
}

OPTION_HELP: dict[str, str] = {
    "model": "model directory, Hugging Face hub id, or a built-in model: builtin:minilm (the default), "
    "builtin:distilbert, builtin:distilbert-bert-tokenizer",
    "dataset": "csv/tsv/jsonl/parquet file, datasets.save_to_disk folder, or hub dataset name "
    "(default: VADER Amazon snippets)",
    "split": "split and optional slice, e.g. test[:3000] (hub and save_to_disk folders; files: a slice)",
    "text_column": "text column; give twice or comma-separated (title,content) to combine two",
    "label_column": "label column (default: label)",
    "label_map": "dataset value = model label pairs, e.g. positive=POSITIVE,negative=NEGATIVE",
    "max_length": "tokenizer truncation length (default: the model's own limit; the summary reports how many "
    "rows it truncates)",
    "limit": "evaluate at most this many rows (default: all; 3,000 for the default data)",
    "variants": "comma-separated variant ids or globs to run (default: all of the preset and user matrix); the "
    "baseline always runs",
    "preset": "variant matrix: default (9 variants), quick (5, for CI), reference (the reference workflow's 20), "
    "full (the cartesian product of the axes, 129)",
    "matrix": "TOML file of user variants ([variants.<id>] with parent and optimize = {...} or quantize = {...}), "
    "added to the preset; pyproject's [tool.ortgate.variants.<id>] works the same way",
    "strict": "a variant that cannot be built fails its tests (default: they are reported as expected failures)",
    "build_jobs": "build independent variants in this many worker processes (default 1)",
    "structure_dir": "where the expected graph structure of each model's variants is recorded "
    "(default: ortgate-structure/; commit it like a benchmark baseline)",
    "update_structure": "record the graph structure of this run's variants as the expected one",
    "int8_min_weight_share": "structural rule: of the fp32 weight matrices read by the operators an int8 variant "
    "asked to quantize (those ONNX Runtime's quantizer handles in its mode), at least this share is quantized "
    "(default 0.99)",
    "tolerance": "allowed accuracy/F1 drop: 1.0pp (absolute points), 2%% (relative), per variant "
    "with id=value, e.g. 1pp,static-int8=3pp (default 1.0pp)",
    "gate_mode": "point: the estimated drop must be within tolerance (default); noninferiority: the upper "
    "confidence bound of the drop must be",
    "confidence": "confidence level of intervals: accuracy/F1 differences, speed ratios (default 0.95)",
    "speed_floor": "minimum speed ratios, e.g. '*int8*=1.2:parent,O99=1.5' (reference: baseline or parent); "
    "a floor fails only when the whole confidence interval lies below it",
    "threads": "intra-op threads for ONNX Runtime and torch (default: all cores)",
    "cache_dir": "cache of built models and variants (default: $ORTGATE_CACHE_DIR or ~/.cache/ortgate)",
    "results_dir": "where summary.json and summary.md are written (default: ortgate-results)",
    "eval_batch_size": "rows per inference call when evaluating accuracy (default 1, as deployed)",
    "bench_samples": "texts per benchmark round (default 128)",
    "bench_rounds": "benchmark rounds per variant (default 5)",
    "warmup_rounds": "untimed warm-up rounds before each benchmark (default 1)",
    "repeat": "measure every variant's throughput N times, the whole matrix per repeat (default 1)",
    "cross_machine": "allow --benchmark-compare against a run saved on a CPU with another fingerprint",
}
FLAGS = ("cross_machine", "strict", "update_structure")  # on/off options: --ortgate-cross-machine

_POSITIVE_INTS = ("max_length", "limit", "threads", "eval_batch_size", "bench_samples", "bench_rounds", "repeat",
                  "build_jobs")


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    dataset: str | None = None
    split: str | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    label_map: dict[str, str] | None = None
    max_length: int | None = None
    limit: int | None = None
    variants: tuple[str, ...] | None = None
    preset: str = "default"
    variant_set: VariantSet = DEFAULT_VARIANTS
    user_variant_ids: tuple[str, ...] = ()
    strict: bool = False
    build_jobs: int = 1
    structure_dir: Path = Path("ortgate-structure")
    update_structure: bool = False
    int8_min_weight_share: float = 0.99
    tolerance: ToleranceTable = field(default_factory=ToleranceTable)
    gate_mode: str = "point"
    confidence: float = 0.95
    speed_floors: tuple[tuple[str, SpeedFloor], ...] = ()
    threads: int = 1
    cache_dir: Path = Path("~/.cache/ortgate")
    results_dir: Path = Path("ortgate-results")
    eval_batch_size: int = 1
    bench_samples: int = 128
    bench_rounds: int = 5
    warmup_rounds: int = 1
    repeat: int = 1
    cross_machine: bool = False


def _as_list(value: object, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    out = tuple(p.strip() for item in items for p in str(item).split(",") if p.strip())
    if not out:
        raise ConfigError(f"ortgate setting {name!r} is empty")
    return out


def _as_int(value: object, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"ortgate setting {name!r} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"ortgate setting {name!r} must be >= {minimum}, got {number}")
    return number


def _as_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"ortgate setting {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _as_fraction(value: object, name: str, upper_closed: bool = False) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ConfigError(f"ortgate setting {name!r} must be a number between 0 and 1, got {value!r}") from None
    if not (0 < number <= 1 if upper_closed else 0 < number < 1):
        raise ConfigError(f"ortgate setting {name!r} must be between 0 and 1 (e.g. 0.95), got {number}")
    return number


def _as_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"ortgate setting {name!r} must be true or false, got {value!r}")


def read_pyproject(rootdir: Path) -> dict:
    path = Path(rootdir) / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text()).get("tool", {}).get("ortgate", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(table) - set(DEFAULTS))
    if "int8_max_size_fraction" in unknown:
        raise ConfigError(f"[tool.ortgate] int8_max_size_fraction in {path} is gone: a file-size rule misjudges models "
                          "whose embeddings dominate their weights; its replacement is int8_min_weight_share (the int8 "
                          "share of the weights the quantizer was asked to quantize, default 0.99)")
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in [tool.ortgate] of {path}; known: {sorted(DEFAULTS)}")
    return table


def resolve_settings(cli: Mapping[str, object], pyproject: Mapping[str, object], rootdir: Path) -> Settings:
    """Merge (command line wins), validate, and type every setting."""
    pyproject = dict(pyproject)
    user_tables: list[tuple[str, Mapping]] = []
    if isinstance(pyproject.get("variants"), Mapping):  # [tool.ortgate.variants.<id>]: a user matrix
        user_tables.append(("tool.ortgate.variants", pyproject.pop("variants")))
    raw = {name: cli.get(name) if cli.get(name) is not None else pyproject.get(name, default)
           for name, default in DEFAULTS.items()}
    if raw["matrix"] is not None:
        matrix_path = Path(str(raw["matrix"])).expanduser()
        matrix_path = matrix_path if matrix_path.is_absolute() else Path(rootdir) / matrix_path
        user_tables.append(("variants", read_matrix_file(matrix_path)))
    preset = _as_choice(raw["preset"], "preset", PRESET_NAMES)
    variant_set, user_ids = resolve_matrix(preset, user_tables)
    structure_dir = Path(str(raw["structure_dir"])).expanduser()
    ints = {name: _as_int(raw[name], name, 1) for name in _POSITIVE_INTS}
    warmup = _as_int(raw["warmup_rounds"], "warmup_rounds", 0)
    cache_dir = raw["cache_dir"] or os.environ.get("ORTGATE_CACHE_DIR") or "~/.cache/ortgate"
    results_dir = Path(str(raw["results_dir"])).expanduser()
    return Settings(
        model=str(raw["model"]) if raw["model"] is not None else None,
        dataset=str(raw["dataset"]) if raw["dataset"] is not None else None,
        split=raw["split"],
        text_columns=_as_list(raw["text_column"], "text_column"),
        label_column=raw["label_column"],
        label_map=parse_label_map(raw["label_map"]),
        max_length=ints["max_length"],
        limit=ints["limit"],
        variants=_as_list(raw["variants"], "variants"),
        preset=preset,
        variant_set=variant_set,
        user_variant_ids=user_ids,
        strict=_as_bool(raw["strict"], "strict"),
        build_jobs=ints["build_jobs"],
        structure_dir=structure_dir if structure_dir.is_absolute() else Path(rootdir) / structure_dir,
        update_structure=_as_bool(raw["update_structure"], "update_structure"),
        int8_min_weight_share=_as_fraction(raw["int8_min_weight_share"], "int8_min_weight_share", upper_closed=True),
        tolerance=parse_tolerance_table(raw["tolerance"]),
        gate_mode=_as_choice(raw["gate_mode"], "gate_mode", GATE_MODES),
        confidence=_as_fraction(raw["confidence"], "confidence"),
        speed_floors=parse_speed_floors(raw["speed_floor"]),
        threads=ints["threads"] or os.cpu_count() or 1,
        cache_dir=Path(str(cache_dir)).expanduser(),
        results_dir=results_dir if results_dir.is_absolute() else Path(rootdir) / results_dir,
        eval_batch_size=ints["eval_batch_size"],
        bench_samples=ints["bench_samples"],
        bench_rounds=ints["bench_rounds"],
        warmup_rounds=warmup,
        repeat=ints["repeat"],
        cross_machine=_as_bool(raw["cross_machine"], "cross_machine"),
    )
