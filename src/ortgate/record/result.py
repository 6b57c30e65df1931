"""What a run produced, as typed data: `RunResult` holds one `VariantResult` per variant.

`summary.json` is `RunResult.to_dict()`; the benchmark JSON's `ortgate` section is the same record with
the evaluation labels and each variant's predictions added. The Markdown and terminal tables, `ortgate
compare`, `ortgate summary` and `ortgate report` read only this record (`read_run_record`). A record
names its schema and version; reading one of another version is refused with a message that says what
to do, instead of failing on a missing key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ortgate.errors import OrtgateError

SCHEMA = "ortgate-run"
SCHEMA_VERSION = 5  # 2: interleaved round-robin speeds (VariantResult.interleaved); 3: latency, footprint, shapes,
# threads, roofline, budgets; 4: profile, diagnosis, repair; 5: source control (commit, branch), data fingerprint
READABLE_VERSIONS = (2, 3, 4, 5)  # 3 to 5 only add fields, all optional: an older record reads as one without them
SPEED_MODE = "end-to-end"  # the reference measured pipelines, tokenization included
MODEL_ONLY = "model-only"


class RecordError(OrtgateError):
    """A file is not an ortgate run record this version can read."""


def _build(cls, data: dict, where: str):
    """`cls(**data)` with the record's nested types, refusing keys the schema does not define."""
    if not isinstance(data, dict):
        raise RecordError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecordError(f"{where} has key(s) {unknown} that schema {SCHEMA} v{SCHEMA_VERSION} does not define")
    values = dict(data)
    for name, nested in getattr(cls, "_NESTED", {}).items():
        item = values.get(name)
        if item is None:
            continue
        if name in getattr(cls, "_LISTS", ()):
            if not isinstance(item, list):
                raise RecordError(f"{where}.{name} must be a list, got {type(item).__name__}")
            values[name] = [_build(nested, x, f"{where}.{name}[{i}]") for i, x in enumerate(item)]
        elif name in getattr(cls, "_DICTS", ()):
            if not isinstance(item, dict):
                raise RecordError(f"{where}.{name} must be an object, got {type(item).__name__}")
            values[name] = {k: _build(nested, x, f"{where}.{name}.{k}") for k, x in item.items()}
        else:
            values[name] = _build(nested, item, f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise RecordError(f"{where}: {exc}") from None


def _plain(value):
    """JSON's own types: tuples become lists, so a written record equals the JSON read back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Record:
    """Fields named in `_TUPLES` hold tuples however they were given (JSON gives lists), so a record read
    back from a file equals the one written."""

    _TUPLES: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self._TUPLES:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class PairedResult(_Record):
    """The variant against the baseline on the same rows (McNemar and the accuracy difference's interval)."""

    n: int
    both_right: int
    baseline_only: int
    variant_only: int
    both_wrong: int
    differing_predictions: int
    difference: float
    interval: tuple[float, float]
    confidence: float
    mcnemar_p_exact: float
    mcnemar_p_mid: float
    _TUPLES = ("interval",)


@dataclass(frozen=True)
class SpeedCheckResult(_Record):
    """The same-run speed ratio to the reference, its interval, and the floor's verdict."""

    reference: str
    ratio: float
    interval: tuple[float, float]
    passed: bool
    floor: str | None = None
    rounds: int | None = None
    _TUPLES = ("interval",)


@dataclass(frozen=True)
class InterleavedResult(_Record):
    """One mode's round-robin measurement of this run: every variant and the baseline timed in turn, cycle
    after cycle, so noise that comes and goes hits all of them alike.

    `cycle_seconds[c]` is the variant's time for one pass over the benchmark texts in cycle c (the same c of
    every variant of the run ran within seconds of each other); `ratio` is its speed ratio to the reference:
    the trimmed mean over cycles of log(reference's time / variant's time) in the same cycle
    (`stats.cycle_log_ratio`), exponentiated, with a bootstrap interval over the cycles."""

    reference: str
    cycle_seconds: tuple[float, ...]
    ratio: float
    interval: tuple[float, float]
    confidence: float
    _TUPLES = ("cycle_seconds", "interval")


@dataclass(frozen=True)
class StructureResult(_Record):
    passed: bool
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    record: str = ""
    unchecked: tuple[str, ...] = ()  # on a CPU without a record of its own: the expectations not checked, and why
    _TUPLES = ("problems", "notes", "unchecked")


@dataclass(frozen=True)
class HarnessResult:
    variant: str
    harness_samples_per_s: float
    bare_samples_per_s: float
    ratio: float


@dataclass(frozen=True)
class LatencyResult(_Record):
    """Single-stream request latencies (ms, batch 1, end to end: tokenize + run + argmax), every call timed on its
    own in blocks interleaved with the other graphs: quantiles with bootstrap intervals (percentile method) and
    order-statistic intervals, and MLPerf SingleStream's early-stopping estimates (None: too few calls)."""

    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    intervals: dict[str, tuple[float, float]]
    confidence: float
    early_stopping_p90_ms: float | None = None
    early_stopping_p99_ms: float | None = None
    # Order-statistic intervals (distribution-free; upper None: too few calls above the quantile to bound it):
    # what a budget judges
    exact_intervals: dict[str, tuple[float, float | None]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "intervals", {k: tuple(v) for k, v in self.intervals.items()})
        if self.exact_intervals is not None:
            object.__setattr__(self, "exact_intervals", {k: tuple(v) for k, v in self.exact_intervals.items()})


@dataclass(frozen=True)
class FootprintResult(_Record):
    """Memory and cold load of the variant, each round in a fresh process (rounds in rotated order): medians, and
    each round's figures (the range is a budget's interval; the load times pair with the export's in compare)."""

    rounds: int
    file_mb: float
    peak_rss_mb: float
    model_rss_mb: float
    load_ms: float
    peak_rss_mb_rounds: tuple[float, ...]
    model_rss_mb_rounds: tuple[float, ...]
    load_ms_rounds: tuple[float, ...]
    peak_source: str = "VmHWM"  # VmHWM (reset before the load), "VmHWM since start", ru_maxrss or sampled
    _TUPLES = ("peak_rss_mb_rounds", "model_rss_mb_rounds", "load_ms_rounds")


@dataclass(frozen=True)
class ShapeResult:
    """Model-only throughput at one input shape (every row exactly seq_len tokens) and thread count."""

    batch: int
    seq_len: int  # 0: the benchmark texts, each at its own length (the thread sweep)
    threads: int
    samples_per_s: float
    calls: int  # timed calls, all rounds together


@dataclass(frozen=True)
class RooflineResult:
    """How close the variant runs to this CPU's GEMM limit: its MACs per sample (by GEMM kind, at the benchmark
    texts' token lengths), the ceiling those GEMMs allow at the measured kernel speeds, and the share of it the
    variant's model-only speed reached."""

    tokens_mean: float
    macs_per_sample: dict[str, float]
    ceiling_samples_per_s: float
    achieved_samples_per_s: float
    fraction: float


@dataclass(frozen=True)
class BudgetItemResult(_Record):
    metric: str
    limit: float
    pattern: str
    outcome: str  # "pass" | "FAIL" | "inconclusive"
    value: float | None = None
    interval: tuple[float, float] | None = None
    _TUPLES = ("interval",)


@dataclass(frozen=True)
class VariantResult(_Record):
    """One variant's results. Fields a run did not measure stay None (and out of the JSON)."""

    variant: str
    description: str = ""
    parent: str | None = None
    isa: str | None = None
    # build: "built" | "cache hit" | "build failed" | "not applicable" (None: the baseline)
    build: str | None = None
    build_error: str | None = None
    build_seconds: float | None = None
    cache_hit: bool | None = None
    same_graph_as: str | None = None  # byte-identical model.onnx: evaluation and speed are that variant's
    # gate: "pass" | "FAIL" | "inconclusive" | "baseline" | "build failed" | "not applicable"; inconclusive: the
    # rows cannot tell the accuracy or F1 drop from the tolerance (`GateResult.inconclusive`) and neither failed
    gate: str | None = None
    gate_mode: str | None = None
    accuracy: float | None = None
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    n: int | None = None
    average: str | None = None
    accuracy_delta_pp: float | None = None
    f1_delta_pp: float | None = None
    paired: PairedResult | None = None
    f1_interval: tuple[float, float] | None = None
    # What these rows can detect (paired accuracy, 80% power, the run's confidence): the smallest drop, and the
    # rows a drop of the allowed size would need (None: a tolerance of 0, which no number of rows shows)
    min_detectable_drop_pp: float | None = None
    rows_needed: int | None = None
    logit_differences: dict[str, float] | None = None
    samples_per_s: float | None = None  # end to end, the median repeat
    latency_ms: float | None = None
    speed_ratio: float | None = None  # to the baseline, from the two medians (not interleaved)
    speed_delta_pct: float | None = None
    speed_check: SpeedCheckResult | None = None
    samples_per_s_repeats: dict[str, float] | None = None
    model_only_samples_per_s: float | None = None
    model_only_speed_ratio: float | None = None
    round_seconds: dict[str, list[float]] | None = None  # mode -> every timed round, all repeats
    interleaved: dict[str, InterleavedResult] | None = None  # mode -> round-robin cycles (what compare tests)
    size_mb: float | None = None
    graph: dict | None = None  # build.graph.graph_summary
    operators_quantized: list[str] | None = None
    structure: StructureResult | None = None
    latency: LatencyResult | None = None
    footprint: FootprintResult | None = None
    shapes: list[ShapeResult] | None = None  # the shape sweep, at the run's threads
    threads: list[ShapeResult] | None = None  # the thread sweep (batch 1, the benchmark texts)
    roofline: RooflineResult | None = None
    budget: list[BudgetItemResult] | None = None
    # Why it fails (diagnose.explain): a slow variant's profile against its parent (op types' change, top nodes);
    # a failed quantized gate's diagnosis (top nodes, layers, op types by SQNR lost); the repair (--ortgate-repair)
    profile: dict | None = None
    diagnosis: dict | None = None
    repair: dict | None = None
    _NESTED = {"paired": PairedResult, "speed_check": SpeedCheckResult, "structure": StructureResult,
               "interleaved": InterleavedResult, "latency": LatencyResult, "footprint": FootprintResult,
               "shapes": ShapeResult, "threads": ShapeResult, "roofline": RooflineResult, "budget": BudgetItemResult}
    _DICTS = ("interleaved",)
    _LISTS = ("shapes", "threads", "budget")
    _TUPLES = ("f1_interval",)

    @property
    def graph_digest(self) -> str | None:
        """The model.onnx hash the variant's graph summary gives, if it gives one."""
        graph = self.graph or {}
        return graph.get("sha256") or graph.get("graph_sha256")

    @property
    def failed_to_build(self) -> bool:
        return self.build in ("build failed", "not applicable")

    def to_dict(self) -> dict:
        """Every field the run set; `variant`, `description`, `parent` and `isa` always (None included)."""
        return _plain({k: v for k, v in asdict(self).items() if v is not None or k in ("parent", "isa")})


@dataclass(frozen=True)
class ModelInfo:
    source: str
    path: str
    fingerprint: str
    model_type: str | None
    labels: list[str]


@dataclass(frozen=True)
class MeasureSettings:
    threads: int
    max_length: int
    eval_batch_size: int
    bench_samples: int
    bench_rounds: int
    warmup_rounds: int
    repeat: int
    speed_mode: str = SPEED_MODE
    cycles: int | None = None  # round-robin cycles per mode, at most (None: the run measured none)
    cycle_precision: float | None = None  # the precision target that may stop them earlier (None: fixed cycles)
    min_cycles: int | None = None


@dataclass(frozen=True)
class RunResult:
    generated: str
    machine: dict  # isa.machine_fingerprint(): CPU, its id, the ONNX Runtime build
    versions: dict[str, str]
    model: ModelInfo
    data: str
    settings: MeasureSettings
    variants: list[VariantResult]
    truncation: dict | None = None
    baseline: str = "pytorch"
    best: str | None = None
    preset: str = "default"
    user_variants: list[str] = field(default_factory=list)
    build_wall_seconds: float | None = None
    build_jobs: int = 1
    harness_checks: list[HarnessResult] = field(default_factory=list)
    timer_overhead_ns: float | None = None  # the median gap of two back-to-back perf_counter_ns reads
    latency_pass: dict | None = None  # cycles, why it stopped, calls a graph, block size
    gemm_ceilings: list[dict] | None = None  # this CPU's measured GEMM kernels (roofline)
    source_control: dict | None = None  # record.provenance.source_control(): git commit, branch, dirty
    data_fingerprint: str | None = None  # EvalData.fingerprint: sha256 of the rows evaluated and calibrated on
    # Only in the benchmark JSON (not summary.json): what `ortgate compare` pairs row by row.
    labels: list[int] | None = None
    predictions: dict[str, list[int]] | None = None
    _NESTED = {"model": ModelInfo, "settings": MeasureSettings, "variants": VariantResult,
               "harness_checks": HarnessResult}
    _LISTS = ("variants", "harness_checks")

    def variant(self, variant_id: str) -> VariantResult | None:
        return next((v for v in self.variants if v.variant == variant_id), None)

    @property
    def machine_id(self) -> str | None:
        return self.machine.get("id")

    def to_dict(self, with_predictions: bool = False) -> dict:
        """Plain JSON data. Unset variant fields are left out (a row holds what the run measured); the
        labels and predictions only `with_predictions` (the benchmark JSON; summary.json has neither)."""
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self),
               "variants": [v.to_dict() for v in self.variants]}
        if not with_predictions:
            doc.pop("labels"), doc.pop("predictions")
        return _plain(doc)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "the record") -> RunResult:
        if not isinstance(doc, dict):
            raise RecordError(f"{where} is not an ortgate run record (not a JSON object)")
        schema, version = doc.get("schema"), doc.get("schema_version")
        if schema != SCHEMA:
            raise RecordError(f"{where} is not an ortgate run record (schema {schema!r}, expected {SCHEMA!r}); "
                              "records before schema versions were introduced cannot be read: run the suite again "
                              "with this ortgate")
        if version not in READABLE_VERSIONS:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise RecordError(f"{where} has schema version {version}; this ortgate reads version {SCHEMA_VERSION}: "
                              + ("upgrade ortgate to read it" if newer else "run the suite again with this ortgate"))
        body = {k: v for k, v in doc.items() if k not in ("schema", "schema_version")}
        return _build(cls, body, where)


def read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read {path} as {what}: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path} is not {what} (not a JSON object)")
    return doc


def read_run_record(path: Path) -> RunResult:
    """The record in a summary.json, or in the `ortgate` section of a pytest-benchmark JSON file."""
    doc = read_json(path, "an ortgate summary.json or pytest-benchmark JSON file")
    if "schema" in doc:
        return RunResult.from_dict(doc, str(path))
    if "benchmarks" in doc:
        if "ortgate" not in doc:
            raise RecordError(f"{path} is a pytest-benchmark file without an ortgate record: write it with the "
                              "ortgate suite (pytest benchmarks --benchmark-json=... or --benchmark-autosave)")
        return RunResult.from_dict(doc["ortgate"], f"the ortgate section of {path}")
    raise RecordError(f"{path} is neither an ortgate summary.json nor a pytest-benchmark JSON file")
