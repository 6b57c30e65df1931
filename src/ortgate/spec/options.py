"""Every ortgate setting, declared once: `OPTIONS` below is the one table of knobs and their defaults.

Each entry is at once a pytest option (`--ortgate-<name>`, `_` written `-`), a key of `[tool.ortgate]` in
pyproject.toml (`name = ...`), a field of `settings.Settings`, and, where the `ortgate` command takes it
(`add_cli_options`), a flag of a subcommand (`--<name>`). Help texts name no default: `Option.help_text`
adds the table's. The command line wins over `[tool.ortgate]`, which wins over the default.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ortgate.spec import parsers as p
from ortgate.spec.matrix import PRESET_NAMES
from ortgate.spec.thresholds import (
    DEFAULT_TOLERANCE,
    GATE_MODES,
    INCONCLUSIVE_POLICIES,
    SpeedFloor,
    ToleranceTable,
)


@dataclass(frozen=True)
class Option:
    """One setting. `default` is raw, as it would be written in [tool.ortgate]; None means not set."""

    name: str
    parser: p.Parser  # (raw value, name) -> the typed value; raises ConfigError naming the setting
    default: object
    help: str  # what the setting does, without its default
    # flag: on/off, given bare; multi: may be given repeatedly; optional: given bare (True) or with a value
    kind: Literal["value", "flag", "multi", "optional"] = "value"
    type: object = object  # the type of the Settings field
    attr: str = ""  # the Settings field, where it is not `name`
    default_text: str | None = None  # how help shows the default, where str(default) does not say it
    under_root: bool = False  # a relative path is relative to the project root (pytest's rootdir)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr", self.attr or self.name)


OPTIONS: tuple[Option, ...] = (
    # What to evaluate
    Option("model", p.text, None, "model directory, Hugging Face hub id, or a built-in model (builtin:minilm, "
           "builtin:distilbert, builtin:distilbert-bert-tokenizer)", type=str | None,
           default_text="builtin:minilm, the built-in MiniLM sentiment model"),
    Option("dataset", p.text, None, "csv/tsv/jsonl/parquet file, datasets.save_to_disk folder, or hub dataset name; "
           "rows the evaluation does not use calibrate static quantization", type=str | None,
           default_text="the VADER Amazon review snippets"),
    Option("split", p.text, None, "split and optional slice, e.g. test[:3000] (hub and save_to_disk folders; "
           "files: a slice)", type=str | None, default_text="test; all rows of a file"),
    Option("text_column", p.text_list, None, "text column; give twice or comma-separated (title,content) to "
           "combine two", kind="multi", type=tuple[str, ...] | None, attr="text_columns", default_text="text"),
    Option("label_column", p.text, None, "label column", type=str | None, default_text="label"),
    Option("label_map", p.label_map, None, "dataset value = model label pairs, e.g. positive=POSITIVE,"
           "negative=NEGATIVE", type=dict[str, str] | None, default_text="the model's id2label (ids or names)"),
    Option("max_length", p.at_least(1), None, "tokenizer truncation length (the summary reports how many rows "
           "it truncates)", type=int | None, default_text="the model's own limit"),
    Option("limit", p.at_least(1), None, "evaluate at most this many rows", type=int | None,
           default_text="all; 3,000 for the default data"),
    # Which variants
    Option("variants", p.text_list, None, "comma-separated variant ids or globs to run; the baseline always runs",
           kind="multi", type=tuple[str, ...] | None, default_text="all of the preset and user matrix"),
    Option("preset", p.one_of(PRESET_NAMES), "default", "variant matrix: default (9 variants), quick (5, for CI), "
           "reference (the reference workflow's 20), full (the cartesian product of the axes, 129)", type=str),
    Option("matrix", p.path, None, "TOML file of user variants ([variants.<id>] with parent and optimize = {...} or "
           "quantize = {...}), added to the preset; pyproject's [tool.ortgate.variants.<id>] works the same way",
           type=Path | None, default_text="none", under_root=True),
    Option("strict", p.boolean, False, "every variant that cannot be built fails its tests, even one never seen "
           "to build", kind="flag", type=bool, default_text="off: a variant known to build (recorded in the "
           "expected structure, or built in the --ortgate-known-good run) that fails to build fails its tests; "
           "one never seen to build is an expected failure"),
    Option("known_good", p.path, None, "a saved run (summary.json or pytest-benchmark JSON written by the suite) "
           "whose built variants are known to build: one of them that now fails to build fails its tests",
           type=Path | None, default_text="none: only the expected structure says what built before",
           under_root=True),
    Option("build_jobs", p.at_least(1), 1, "build independent variants in this many worker processes", type=int),
    # Gates
    Option("structure_dir", p.path, "ortgate-structure", "where the expected graph structure of each model's "
           "variants is recorded (commit it like a benchmark baseline)", type=Path, under_root=True),
    Option("update_structure", p.boolean, False, "record the graph structure of this run's variants as the "
           "expected one", kind="flag", type=bool),
    Option("int8_min_weight_share", p.fraction(upper_closed=True), 0.99, "structural rule: of the fp32 weight "
           "matrices read by the operators an int8 variant asked to quantize (those ONNX Runtime's quantizer "
           "handles in its mode), at least this share is quantized", type=float),
    Option("tolerance", p.tolerance_table, DEFAULT_TOLERANCE, "allowed accuracy/F1 drop: 1.0pp (absolute points), "
           "2% (relative), per variant with id=value, e.g. 1pp,static-int8=3pp", type=ToleranceTable),
    Option("gate_mode", p.one_of(GATE_MODES), "point", "point: the estimated drop must be within tolerance; "
           "noninferiority: the upper confidence bound of the drop must be", type=str),
    Option("inconclusive", p.one_of(INCONCLUSIVE_POLICIES), "warn", "what a gate does when its rows cannot tell "
           "the drop from the tolerance (its confidence interval holds both no drop and more than the allowed "
           "drop): warn (passes with a pytest warning), fail, or pass", type=str),
    Option("confidence", p.fraction(), 0.95, "confidence level of intervals: accuracy/F1 differences, speed ratios",
           type=float),
    Option("speed_floor", p.speed_floors, None, "minimum speed ratios, e.g. '*int8*=1.2:parent,O99=1.5' "
           "(reference: baseline or parent); a floor fails only when the whole confidence interval lies below it",
           type=tuple[tuple[str, SpeedFloor], ...], attr="speed_floors", default_text="none"),
    # How to measure, and where things go
    Option("threads", p.threads_or_cores, None, "intra-op threads for ONNX Runtime and torch", type=int,
           default_text="the usable cores: CPU affinity, capped by a cgroup CPU quota"),
    Option("cache_dir", p.cache_dir_or_default, None, "cache of built models and variants", type=Path,
           default_text="$ORTGATE_CACHE_DIR, else ~/.cache/ortgate"),
    Option("results_dir", p.path, "ortgate-results", "where summary.json and summary.md are written", type=Path,
           under_root=True),
    Option("eval_batch_size", p.at_least(1), 1, "rows per inference call when evaluating accuracy", type=int,
           default_text="1, as deployed"),
    Option("bench_samples", p.at_least(1), 128, "texts per benchmark round", type=int),
    Option("bench_rounds", p.at_least(1), 5, "benchmark rounds per variant", type=int),
    Option("warmup_rounds", p.at_least(0), 1, "untimed warm-up rounds before each benchmark", type=int),
    Option("cycles", p.at_least(1), 24, "round-robin cycles per mode, at most: every variant and the baseline "
           "timed in turn, one pass over the benchmark texts each; speed ratios, speed floors and `ortgate compare` "
           "rest on them", type=int),
    Option("cycle_precision", p.fraction_or_off, 0.02, "stop a mode's round-robin once every graph's speed ratio "
           "to its reference is known to within this share (half-width of its t interval at the run's "
           "confidence), after --ortgate-min-cycles; 'off': always run --ortgate-cycles", type=float | None),
    Option("min_cycles", p.at_least(3), 8, "round-robin cycles per mode before the precision target may stop it",
           type=int),
    Option("latency_precision", p.fraction(), 0.05, "request latency: stop timing once every graph's p99 is known "
           "to within this share (the relative half-width of its order-statistic interval at the run's confidence)",
           type=float),
    Option("latency_min_calls", p.at_least(10), 400, "request latency: timed calls a graph before it may stop",
           type=int),
    Option("latency_max_calls", p.at_least(10), 4000, "request latency: at most this many timed calls a graph",
           type=int),
    Option("latency_max_seconds", p.positive_number, 90, "request latency: at most this long for the whole pass "
           "(all graphs); the intervals then say how precise the figures are", type=float),
    Option("footprint_rounds", p.at_least(1), 3, "memory and load time: fresh processes a graph (rotated order)",
           type=int),
    Option("batch_sizes", p.int_list(1), "1,8", "shape sweep: batch sizes (model-only throughput per batch size "
           "and sequence length)", type=tuple[int, ...]),
    Option("seq_lengths", p.int_list(3), "16,64,128", "shape sweep: sequence lengths in tokens, special tokens "
           "included (real texts concatenated or truncated to exactly that many; longer than the model allows: "
           "skipped with a note)", type=tuple[int, ...]),
    Option("threads_sweep", p.int_list(1), None, "thread counts to time each ONNX graph at (batch 1, the benchmark "
           "texts, model only), e.g. 1,2,4,8", type=tuple[int, ...] | None, default_text="none"),
    Option("budgets", p.budgets, None, "upper bounds per variant glob, e.g. '*int8*=p99_ms:15;memory_mb:300' "
           "(figures: p50_ms, p90_ms, p99_ms, memory_mb, model_memory_mb, load_ms, size_mb); a budget fails only "
           "when the figure's whole interval lies above it", type=tuple, default_text="none"),
    Option("repeat", p.at_least(1), 1, "measure every variant's throughput N times, the whole matrix per repeat",
           type=int),
    Option("cross_machine", p.boolean, False, "compare with a run saved on a CPU with another fingerprint "
           "(pytest --benchmark-compare, ortgate compare)", kind="flag", type=bool),
    Option("repair", p.boolean, False, "after the tests, repair each quantized variant whose accuracy gate failed "
           "(as `ortgate repair` does): candidates, Pareto plot and the entry of the fastest that passes in the "
           "summary and under <results_dir>/repair/<variant>/", kind="flag", type=bool),
    # History
    Option("store", p.store_target, None, "append the run's record to the history store: given bare (or true), "
           f"the SQLite file {p.DEFAULT_STORE} under the project root; or a sqlite:///PATH or "
           "postgresql://USER@HOST/DB URL, or a file path. A store that fails stops only the store step "
           "(`ortgate history import` the files later)", kind="optional", type=str | None, default_text="off"),
)
OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def parse_option(option: Option, raw: object, root: Path | None = None) -> object:
    """The typed value of a raw one; with `root`, a relative path of an `under_root` option lies under it."""
    value = option.parser(raw, option.name)
    if option.under_root and root is not None and value is not None:
        value = Path(root) / value  # an absolute path stays as it is
    return value


def help_text(option: Option) -> str:
    """`help (default: X)`, % escaped for argparse (pytest's option parser is argparse too)."""
    shown = option.default_text or ("off" if option.kind == "flag" else option.default)
    return f"{option.help} (default: {shown})".replace("%", "%%")


def argparse_kwargs(option: Option, dest: str) -> dict:
    """add_argument's (and pytest addoption's) keywords: the value stays raw (a string, True for a flag, a list
    for a multi option) and is None when not given, so that [tool.ortgate] and then the default apply;
    `parse_option` (or `settings.resolve_settings`) types it."""
    action = {"flag": "store_const", "multi": "append", "value": "store", "optional": "store"}[option.kind]
    kwargs: dict = {"action": action, "dest": dest, "default": None, "help": help_text(option)}
    if option.kind in ("flag", "optional"):
        kwargs["const"] = True
    if option.kind == "optional":
        kwargs["nargs"] = "?"
    return kwargs


def add_cli_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add the table's options `names` to an `ortgate` subcommand as `--<name>` (dest: the name), with the
    table's help and default."""
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), **argparse_kwargs(OPTIONS_BY_NAME[name], name))
