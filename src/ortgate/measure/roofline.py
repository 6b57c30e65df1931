"""GEMM rooflines: how fast a variant could run if its matrix products ran at this CPU's measured GEMM speed.

Three parts, in the order data flows: `ortgate.measure.macs.count_macs` reads a graph and counts one sample's
multiply-accumulates per GEMM kind and shape; `measure_ceilings` (here) times each kind and shape with a tiny
ONNX model and caches the best figure seen per CPU fingerprint; `roofline` / `ceiling_for_lengths` divide the
one by the other.
Built on them: the quantization preset the measured kernels point to (`suggest_preset_measured`), and the run's
roofline stage (`RooflineMeter`).

Units: MACs and MAC/s throughout the API. GOP/s and GFLOP/s, where text shows them, are 2 × MAC/s / 1e9 (a MAC
is a multiply and an add), the convention of ONNX Runtime's and the issue's figures.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ortgate.errors import Once
from ortgate.files import atomic_write_text
from ortgate.measure.macs import GEMM_KINDS, MacCount, count_macs

S8_WEIGHT_PRESETS = ("avx512_vnni", "avx512", "arm64")  # Optimum's presets with QInt8 weights; avx2 has QUInt8


def gops(macs_per_s: float) -> float:
    """GOP/s (or GFLOP/s) from MAC/s."""
    return 2 * macs_per_s / 1e9


# ---------------------------------------------------------------- measuring

@dataclass(frozen=True)
class GemmCeiling:
    """The measured speed of one GEMM kind and shape: MAC/s from the best of `repeats` timed blocks."""

    kind: str
    m: int
    k: int
    n: int
    threads: int
    macs_per_s: float
    seconds_per_call: float
    calls: int  # GEMM calls per timed block

    @property
    def gops(self) -> float:
        return gops(self.macs_per_s)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> GemmCeiling:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


_NODES_PER_RUN = 8  # GEMMs per session.run: one Python call (≈5–10 µs here) would be a third of a 20 µs GEMM


def _gemm_model(kind: str, m: int, k: int, n: int, nodes: int = _NODES_PER_RUN) -> bytes:
    """`nodes` copies of one GEMM, sharing one input and one weight, with their outputs apart (the session
    runs unoptimized, so that common-subexpression elimination does not merge them). The weight stays warm
    in cache: a ceiling, not the speed of a model streaming all its weights."""
    rng = np.random.default_rng(0)
    if kind == "fp32":
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])]
        inits = [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")]
        gemm, operands, out_type = "MatMul", ["x", "w"], TensorProto.FLOAT
    elif kind in ("u8s8", "u8u8"):
        signed = kind == "u8s8"
        w = rng.integers(-127, 128, (k, n), dtype=np.int8) if signed else rng.integers(0, 256, (k, n), np.uint8)
        inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])]
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
                 numpy_helper.from_array(np.array(0 if signed else 128, w.dtype), "w_zero")]
        gemm, operands, out_type = "MatMulInteger", ["x", "w", "x_zero", "w_zero"], TensorProto.INT32
    else:
        raise ValueError(f"unknown GEMM kind {kind!r}; choose one of {GEMM_KINDS}")
    gemms = [helper.make_node(gemm, operands, [f"y{i}"]) for i in range(nodes)]
    outputs = [helper.make_tensor_value_info(f"y{i}", out_type, [m, n]) for i in range(nodes)]
    graph = helper.make_graph(gemms, f"{kind}_gemm", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def _gemm_runner(kind: str, m: int, k: int, n: int, threads: int) -> Callable[[], None]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keeps the copies apart
    options.log_severity_level = 3
    session = ort.InferenceSession(_gemm_model(kind, m, k, n), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k), dtype=np.float32) if kind == "fp32" else rng.integers(0, 256, (m, k), np.uint8)
    binding = session.io_binding()  # bound, preallocated outputs: no allocation or copy in the timed loop
    binding.bind_cpu_input("x", x)
    out_dtype = np.float32 if kind == "fp32" else np.int32
    for output in session.get_outputs():
        binding.bind_ortvalue_output(output.name, ort.OrtValue.ortvalue_from_numpy(np.empty((m, n), out_dtype)))
    return lambda: session.run_with_iobinding(binding)


def measure_gemm(kind: str, m: int, k: int, n: int, threads: int, min_seconds: float = 0.2,
                 repeats: int = 5) -> GemmCeiling:
    """Time [m, k] × [k, n] GEMMs of `kind` on the CPU provider (see `measure_gemms`)."""
    return measure_gemms([(kind, m, k, n)], threads, min_seconds, repeats)[0]


def measure_gemms(shapes: Sequence[tuple[str, int, int, int]], threads: int, min_seconds: float = 0.2,
                  repeats: int = 5) -> list[GemmCeiling]:
    """Time each (kind, m, k, n) in `repeats` blocks of at least `min_seconds`, the shapes taking turns block by
    block, and keep each shape's best block. Noise (other processes, a VM slowed for minutes) only ever slows
    a block down, so the fastest is the closest to what the kernel can do, and a ceiling should be that; taking
    turns spreads every shape's blocks over the whole measurement, so one slow spell cannot own a shape."""
    runners = [_gemm_runner(kind, m, k, n, threads) for kind, m, k, n in shapes]
    runs = [_runs_lasting(run, min_seconds) for run in runners]
    best = [math.inf] * len(shapes)
    for _ in range(max(1, repeats)):
        for i, run in enumerate(runners):
            started = time.perf_counter()
            for _ in range(runs[i]):
                run()
            best[i] = min(best[i], (time.perf_counter() - started) / runs[i])
    ceilings = []
    for (kind, m, k, n), seconds, count in zip(shapes, best, runs, strict=True):
        per_call = seconds / _NODES_PER_RUN
        ceilings.append(GemmCeiling(kind, m, k, n, threads, m * k * n / per_call, per_call, count * _NODES_PER_RUN))
    return ceilings


def _runs_lasting(run: Callable[[], None], min_seconds: float) -> int:
    run()  # the first run spins up the thread pool
    started = time.perf_counter()
    run()
    return max(1, math.ceil(min_seconds / max(time.perf_counter() - started, 1e-9)))


@dataclass(frozen=True)
class Ceilings(Mapping):
    """One machine's measured GEMM ceilings, by (kind, m, k, n)."""

    entries: Mapping[tuple[str, int, int, int], GemmCeiling]
    fingerprint_id: str = ""
    threads: int = 0

    def __getitem__(self, key: tuple[str, int, int, int]) -> GemmCeiling:
        return self.entries[key]

    def __iter__(self) -> Iterator[tuple[str, int, int, int]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def by_kind(self) -> dict[str, float]:
        """The best MAC/s measured per kind."""
        best: dict[str, float] = {}
        for c in self.entries.values():
            best[c.kind] = max(best.get(c.kind, 0.0), c.macs_per_s)
        return best

    def as_dict(self) -> dict:
        return {"fingerprint_id": self.fingerprint_id, "threads": self.threads,
                "ceilings": [c.as_dict() for c in self.entries.values()]}


def _cache_key(ort_version: str, threads: int, kind: str, m: int, k: int, n: int) -> str:
    return f"onnxruntime-{ort_version}/threads-{threads}/{kind}/{m}x{k}x{n}"


def _read_cache(path: Path, log: Callable[[str], None]) -> dict:
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log(f"GEMM ceiling cache {path} is unreadable ({exc}); measuring again")
        return {}


def measure_ceilings(shapes: Iterable[tuple[str, int, int, int]], threads: int, cache_dir: Path | str,
                     log: Callable[[str], None] = print, min_seconds: float = 0.2, repeats: int = 5,
                     refresh: bool = False) -> Ceilings:
    """The ceiling of each (kind, m, k, n), measured once per CPU fingerprint, onnxruntime version and thread
    count, and cached in `cache_dir/roofline/gemm-<fingerprint id>.json`. `refresh` measures them again and
    keeps the faster of the new and the cached figure: noise only ever slows a GEMM, so the best seen on this
    machine is the closest to what its kernel can do (a figure measured while the machine was slowed does not
    stay).

    The lock is held while measuring: two processes timing GEMMs at once would slow each other, and each
    would cache a figure for a machine half as fast."""
    import onnxruntime
    from filelock import FileLock

    from ortgate.isa import cpu_fingerprint, fingerprint_id

    fid, version = fingerprint_id(), onnxruntime.__version__
    path = Path(cache_dir).expanduser() / "roofline" / f"gemm-{fid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    wanted = list(dict.fromkeys(tuple(s) for s in shapes))
    with FileLock(str(path.with_name(path.name + ".lock"))):
        stored = _read_cache(path, log)
        missing = [s for s in wanted if refresh or _cache_key(version, threads, *s) not in stored]
        if missing:
            log(f"measuring {len(missing)} GEMM ceiling(s) at {threads} threads (the best figure seen is cached): "
                + ", ".join(f"{kind} {m}x{k}x{n}" for kind, m, k, n in missing))
            when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for ceiling in measure_gemms(missing, threads, min_seconds, repeats):
                key = _cache_key(version, threads, ceiling.kind, ceiling.m, ceiling.k, ceiling.n)
                if key not in stored or ceiling.macs_per_s > stored[key]["macs_per_s"]:
                    stored[key] = {**ceiling.as_dict(), "measured_at": when}
            record = {"fingerprint_id": fid, "cpu": cpu_fingerprint(), "entries": stored}
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))
    entries = {s: GemmCeiling.from_dict(stored[_cache_key(version, threads, *s)]) for s in wanted}
    return Ceilings(entries, fid, threads)


def ceiling_shapes(macs: MacCount) -> list[tuple[str, int, int, int]]:
    """The shapes to measure for a variant: its weight GEMMs' own, plus, for an attention kind that no
    weight GEMM has (u8u8 attention beside u8s8 weights), the weight GEMMs' shapes in that kind."""
    shapes = [(g.kind, g.m, g.k, g.n) for g in macs.gemms]
    weight_kinds = {g.kind for g in macs.gemms}
    for kind in dict.fromkeys(g.kind for g in macs.attention if g.kind not in weight_kinds):
        shapes += [(kind, g.m, g.k, g.n) for g in macs.gemms]
    return list(dict.fromkeys(shapes))


# ---------------------------------------------------------------- rooflines

@dataclass(frozen=True)
class Roofline:
    """The GEMM-bound ceiling of a variant over `samples` texts: the time its GEMMs would take at the measured
    speeds, per sample, by kind. Everything else a model does (layer norms, softmax, quantizing activations,
    the session's own overhead) is left out, so measured speed stays below this."""

    samples: int
    mean_tokens: float
    macs_per_sample: float
    seconds_per_sample_by_kind: dict[str, float]

    @property
    def seconds_per_sample(self) -> float:
        return sum(self.seconds_per_sample_by_kind.values())

    @property
    def ceiling_samples_per_s(self) -> float:
        return 1 / self.seconds_per_sample if self.seconds_per_sample > 0 else math.inf

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds_per_sample": self.seconds_per_sample,
                "ceiling_samples_per_s": self.ceiling_samples_per_s}


def nearest_ceiling(ceilings: Mapping | Iterable[GemmCeiling], kind: str, m: int, k: int, n: int) -> GemmCeiling:
    """The ceiling measured for `kind` at the shape nearest (m, k, n): the least summed |log ratio| of the dims.
    Attention products ([tokens, head size] × [head size, tokens]) are smaller than any weight GEMM, so they
    get a weight GEMM's speed: optimistic, as a ceiling may be, and a percent or two of the MACs at ~20 tokens."""
    values = list(ceilings.values()) if isinstance(ceilings, Mapping) else list(ceilings)
    candidates = [c for c in values if c.kind == kind]
    if not candidates:
        raise KeyError(f"no {kind} GEMM ceiling measured; measure the shapes ceiling_shapes() lists")
    return min(candidates, key=lambda c: sum(abs(math.log(x / y)) for x, y in ((c.m, m), (c.k, k), (c.n, n))))


def roofline(macs: MacCount, ceilings: Mapping | Iterable[GemmCeiling]) -> Roofline:
    """One sample's GEMM-bound ceiling: Σ over its GEMMs of MACs / MAC/s at that kind's nearest measured shape."""
    values = list(ceilings.values()) if isinstance(ceilings, Mapping) else list(ceilings)
    seconds: dict[str, float] = defaultdict(float)
    for g in (*macs.gemms, *macs.attention):
        seconds[g.kind] += g.macs / nearest_ceiling(values, g.kind, g.m, g.k, g.n).macs_per_s
    return Roofline(1, float(macs.seq_len), float(macs.total), dict(seconds))


def ceiling_for_lengths(onnx_path: Path | str, lengths: Sequence[int],
                        ceilings: Mapping | Iterable[GemmCeiling]) -> Roofline:
    """The ceiling over texts of these token lengths: total samples / Σ each text's ceiling seconds."""
    if not lengths:
        raise ValueError("need at least one text length")
    values = list(ceilings.values()) if isinstance(ceilings, Mapping) else list(ceilings)
    seconds: dict[str, float] = defaultdict(float)
    macs = 0.0
    for length, texts in Counter(lengths).items():
        count = count_macs(onnx_path, length)
        one = roofline(count, values)
        for kind, s in one.seconds_per_sample_by_kind.items():
            seconds[kind] += s * texts
        macs += count.total * texts
    samples = len(lengths)
    return Roofline(samples, sum(lengths) / samples, macs / samples, {k: s / samples for k, s in seconds.items()})


def variant_roofline(onnx_path: Path | str, lengths: Sequence[int], threads: int, cache_dir: Path | str,
                     log: Callable[[str], None] = print, **measure: float) -> Roofline:
    """count → measure (cached) → divide, for one graph: ceilings are measured at the median length's M and
    serve every length (a shorter text's smaller GEMMs run slower, so its ceiling is an optimistic one)."""
    median = sorted(lengths)[len(lengths) // 2]
    shapes = ceiling_shapes(count_macs(onnx_path, median))
    return ceiling_for_lengths(onnx_path, lengths, measure_ceilings(shapes, threads, cache_dir, log, **measure))


def achieved_fraction(measured_samples_per_s: float, ceiling: Roofline | float) -> float:
    """Measured speed as a fraction of the GEMM-bound ceiling (1.0: every cycle went to GEMMs at full speed)."""
    limit = ceiling.ceiling_samples_per_s if isinstance(ceiling, Roofline) else float(ceiling)
    return measured_samples_per_s / limit


# ---------------------------------------------------------------- presets

def measured_preset_figures(threads: int, cache_dir: Path | str, k: int = 384, n: int = 1536, m: int = 32,
                            log: Callable[[str], None] = print, **measure: float) -> dict[str, float]:
    """MAC/s of each GEMM kind at one representative shape (default: the default model's FFN-in GEMM, 32
    tokens): the cached figure, or measured where there is none (`refresh`: again, keeping the best)."""
    ceilings = measure_ceilings([(kind, m, k, n) for kind in GEMM_KINDS], threads, cache_dir, log, **measure)
    return {kind: ceilings[(kind, m, k, n)].macs_per_s for kind in GEMM_KINDS}


def suggest_preset_measured(ceilings_by_kind: Mapping[str, float], fingerprint: dict,
                            margin: float = 1.2) -> tuple[str, str]:
    """The quantization preset the measured kernels point to (figures in MAC/s), and why.

    Flags alone mislead: a CPU with VNNI may run u8 × u8 at fp32 speed (seen on a Xeon) or at half its u8 × s8
    speed (seen on an EPYC). s8 weights win when they measure `margin` times as fast as u8 weights; u8 weights
    (avx2's preset) win when at least as fast; in between, the flags decide."""
    from ortgate.isa import suggest_preset

    preset, reason = suggest_preset(fingerprint)
    s8, u8 = ceilings_by_kind.get("u8s8"), ceilings_by_kind.get("u8u8")
    if not s8 or not u8:
        return preset, f"{reason} (from CPU flags only: no measured u8s8 and u8u8 GEMM figures)"
    figures = f"measured u8s8 {gops(s8):.0f} GOP/s, u8u8 {gops(u8):.0f} GOP/s"
    if ceilings_by_kind.get("fp32"):
        figures += f", fp32 {gops(ceilings_by_kind['fp32']):.0f} GFLOP/s"
    if s8 >= margin * u8:
        why = f"s8 weights run {s8 / u8:.1f}x as fast as u8 weights ({figures})"
        if preset in S8_WEIGHT_PRESETS:
            return preset, f"{reason}; {why}"
        return "arm64", (f"{why}; the flags pointed to {preset}, so the generic u8 × s8 preset, which assumes "
                         "no AVX-512")
    if u8 >= s8:
        flags = "" if preset == "avx2" else f"; the flags pointed to {preset}"
        return "avx2", f"u8 weights run as fast as s8 weights or faster ({figures}): avx2's preset uses u8{flags}"
    return preset, f"{reason}; s8 weights only {s8 / u8:.2f}x as fast as u8 weights ({figures}): the flags decide"


# ---------------------------------------------------------------- the run's stage

@dataclass(frozen=True)
class Limit:
    """One graph of the run against this CPU's limit."""

    variant: str
    roofline: Roofline
    macs_by_kind: dict[str, float]  # mean over the benchmark texts, per sample
    achieved_samples_per_s: float  # model only, from the round-robin cycles (median cycle)

    @property
    def fraction(self) -> float:
        return achieved_fraction(self.achieved_samples_per_s, self.roofline)

    def as_record(self) -> dict:
        """The fields of `record.result.RooflineResult`."""
        return {"tokens_mean": self.roofline.mean_tokens, "macs_per_sample": dict(self.macs_by_kind),
                "ceiling_samples_per_s": self.roofline.ceiling_samples_per_s,
                "achieved_samples_per_s": self.achieved_samples_per_s, "fraction": self.fraction}


class RooflineMeter:
    """The run's roofline stage: every distinct ONNX graph of the run (`SpeedMeter.interleaved_ids`), its MACs at
    the benchmark texts' token lengths, this CPU's GEMM ceilings at those shapes (measured again each run, the
    best figure seen on this machine kept in the cache), and the share of the ceiling its model-only
    round-robin speed reached; once per run."""

    def __init__(self, meter, cache_dir: Path, threads: int, log: Callable[[str], None] = print,
                 progress_scope: Callable | None = None) -> None:
        self.meter, self.cache_dir, self.threads, self.log = meter, Path(cache_dir), threads, log
        self.progress_scope = progress_scope
        self._once = Once(self._measure)
        self.ceilings: Mapping[tuple[str, int, int, int], GemmCeiling] = {}

    def token_lengths(self, variant_id: str) -> list[int]:
        """Tokens per benchmark text, from the graph's own inputs (every 2-D input is [1, tokens])."""
        predictor = self.meter.plan.predictor(variant_id)
        return [int(next(v for v in predictor.encode([text]).values() if v.ndim == 2).shape[-1])
                for text in self.meter.texts]

    @property
    def results(self) -> dict[str, Limit]:
        """What `measure` found ({} before it ran)."""
        return self._once.result or {}

    def measure(self) -> dict[str, Limit]:
        """Once per run; a failure is raised again to every later caller, not retried."""
        return self._once()

    def _measure(self) -> dict[str, Limit]:
        import statistics

        from ortgate.spec.variants import BASELINE_ID

        plan = self.meter.plan
        plan.build_all()
        ids = [vid for vid in self.meter.interleaved_ids() if vid != BASELINE_ID]
        if not ids:
            return {}
        results = {}
        lengths = self.token_lengths(ids[0])  # one tokenizer for every graph of the model
        median = sorted(lengths)[len(lengths) // 2]
        paths = {vid: plan.built(vid).onnx_path for vid in ids}
        shapes = list(dict.fromkeys(s for vid in ids for s in ceiling_shapes(count_macs(paths[vid], median))))
        cycles = self.meter.interleaved("model-only")  # the round-robin, if no test has run it yet
        # Measured again every run (~1 s a shape), keeping the best figure seen on this machine: one slow spell
        # when a shape was first measured would otherwise understate its ceiling for good.
        self.ceilings = measure_ceilings(shapes, self.threads, self.cache_dir, self.log, refresh=True)
        for vid in ids:
            counts = [count_macs(paths[vid], n).by_kind for n in lengths]
            kinds = sorted({k for c in counts for k in c})
            macs = {k: sum(c.get(k, 0) for c in counts) / len(counts) for k in kinds}
            achieved = len(self.meter.texts) / statistics.median(cycles[vid])
            results[vid] = Limit(vid, ceiling_for_lengths(paths[vid], lengths, self.ceilings), macs, achieved)
        return results
