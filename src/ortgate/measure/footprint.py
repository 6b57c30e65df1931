"""Memory and cold-load time of each variant, each probe in a fresh process.

A variant's memory is only its own in a process that has loaded nothing else: a session created beside
others shares their allocator arenas and thread pools, and the first session of a process pays the costs
(libraries mapped, thread pool started) that later ones skip. So the parent saves the tokenized inputs
once, and every probe runs `python -m ortgate.measure.footprint <request.json>` in a new process, which
imports only numpy, psutil and onnxruntime (and ortgate.build.runtime for the very session options the suite
uses; it imports tqdm only where it draws a bar, which saved ~10 MB of the baseline) or, for the PyTorch baseline,
torch and transformers (its real cold start); notes its RSS, creates the session (timed: `load_seconds`),
runs each input once and writes what it saw to a JSON file.

Peak RSS is the kernel's high-water mark, /proc/self/status VmHWM, reset (clear_refs 5) just before the load
and again before inference, so that each phase has its own peak; a psutil sample every ~2 ms runs beside it and is
reported too (`sampled_peak_rss_mb`): it misses short spikes, and samples nothing while a call holds the GIL.
Where /proc is missing (macOS) the peak is `getrusage(RUSAGE_SELF).ru_maxrss`. Not preferred on Linux: a
child's ru_maxrss starts at the high-water mark of the process that spawned it (the kernel carries it over
exec), so a child of a 1 GiB pytest process reads at least 1 GiB whatever it loads. Megabytes are 1e6
bytes, as elsewhere in ortgate.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ortgate.errors import Once, OrtgateError
from ortgate.files import atomic_write_text
from ortgate.measure.rotation import round_order

KINDS = ("onnx", "pytorch")
MB = 1e6
SAMPLE_SECONDS = 0.002
STDERR_LINES = 8  # of a failed child's stderr, in the error: the traceback's end says what went wrong


class FootprintError(OrtgateError):
    """A footprint probe failed in its child process or timed out."""


@dataclass(frozen=True)
class Probe:
    variant: str
    kind: str  # "onnx": path is a model.onnx (or its folder); "pytorch": a Hugging Face model folder
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.kind not in KINDS:
            raise ValueError(f"probe {self.variant!r}: unknown kind {self.kind!r}; choose one of {KINDS}")


@dataclass(frozen=True)
class Footprint:
    """One probe of one variant, in a process of its own (`pid`)."""

    variant: str
    kind: str
    round: int
    pid: int
    file_mb: float  # model.onnx; for PyTorch the weights it loads (*.safetensors, else *.bin)
    rss_before_load_mb: float  # after the imports, before the model: what every variant of the kind pays
    load_rss_mb: float  # RSS right after the load, less rss_before_load_mb
    load_peak_rss_mb: float  # high-water mark while loading: a graph's protobuf and its tensors coexist here
    run_peak_rss_mb: float  # high-water mark during inference (arenas grow); since the start where not resettable
    peak_rss_mb: float  # the higher of the two (see `peak_source`)
    sampled_peak_rss_mb: float  # the highest psutil sample, for comparison
    model_rss_mb: float  # peak_rss_mb - rss_before_load_mb: what the variant itself costs at its peak
    load_seconds: float  # session creation (from_pretrained for PyTorch), cold: the process's first
    inference_seconds: float  # one pass over the inputs, model only, the first ever (arenas grow here)
    calls: int
    peak_source: str  # "VmHWM", "VmHWM since start" (reset refused), "ru_maxrss" or "sampled"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FootprintSummary:
    """A variant's footprint over rounds: the medians (each round's figures stay in its `Footprint`)."""

    variant: str
    kind: str
    rounds: int
    file_mb: float
    peak_rss_mb: float
    model_rss_mb: float
    load_rss_mb: float
    load_seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(footprints: Sequence[Footprint]) -> FootprintSummary:
    if not footprints:
        raise ValueError("need at least one footprint to summarize")
    first = footprints[0]
    if any(f.variant != first.variant for f in footprints):
        raise ValueError(f"footprints of several variants: {sorted({f.variant for f in footprints})}")

    def median(field: str) -> float:
        return statistics.median(getattr(f, field) for f in footprints)

    return FootprintSummary(first.variant, first.kind, len(footprints), median("file_mb"), median("peak_rss_mb"),
                            median("model_rss_mb"), median("load_rss_mb"), median("load_seconds"))


def measure_footprints(probes: Sequence[Probe], features: Sequence[Mapping], threads: int, rounds: int = 3,
                       timeout: float = 300, log: Callable[[str], None] | None = print,
                       on_probe: Callable[[Footprint], None] | None = None) -> dict[str, list[Footprint]]:
    """Every probe once per round, each in a fresh process, in an order that changes round by round (`round_order`).

    `features` are the tokenized inputs (dicts of int64 arrays, as `OnnxPredictor.encode` returns), run once each
    per probe, batch as given. Returns each variant's footprints in round order. A failed or timed-out child
    raises FootprintError naming the variant.
    """
    _check_probes(probes)
    if not features:
        raise ValueError("need at least one input to run")
    log = log or (lambda message: None)
    results: dict[str, list[Footprint]] = {p.variant: [] for p in probes}
    started = time.perf_counter()
    log(f"[ortgate] footprints: {len(probes)} variants x {rounds} rounds, a fresh process each, {threads} threads")
    from tqdm.auto import tqdm

    with tempfile.TemporaryDirectory(prefix="ortgate-footprint-") as tmp, \
            tqdm(total=len(probes) * rounds, desc="footprints", unit="probe", leave=False, disable=None) as bar:
        inputs = save_inputs(features, Path(tmp) / "inputs.npz")
        _read_model_files(probes)
        for r in range(rounds):
            for probe in round_order(probes, r):
                bar.set_postfix_str(probe.variant, refresh=False)
                footprint = run_probe(probe, inputs, threads, r, Path(tmp), timeout)
                results[probe.variant].append(footprint)
                bar.update(1)
                if on_probe is not None:
                    on_probe(footprint)
    log(f"[ortgate] footprints: {len(probes) * rounds} probes in {time.perf_counter() - started:.1f}s")
    return results


def _check_probes(probes: Sequence[Probe]) -> None:
    if not probes:
        raise ValueError("need at least one probe")
    names = [p.variant for p in probes]
    if len(set(names)) < len(names):
        raise ValueError(f"each variant once per round, please: {names}")


def _read_model_files(probes: Sequence[Probe]) -> None:
    """Read every model file once, so the first round's loads find them in the page cache as later rounds do:
    cold here means the process's first session, not a disk read that depends on what ran before. (MiniLM's
    91 MB graphs loaded in 0.37-0.44 s in a first round, 0.19-0.27 s after; with the file evicted from the page
    cache a load took 0.31 s against 0.21 s read through first, though not on every try.)"""
    for probe in probes:
        files = [_onnx_model(probe.path)] if probe.kind == "onnx" else _torch_weights(probe.path)
        for file in files:
            if file.is_file():
                with open(file, "rb") as handle:
                    while handle.read(1 << 24):
                        pass


def save_inputs(features: Sequence[Mapping], path: Path) -> Path:
    """The inputs as one .npz, keyed "<index>/<input name>", so each child reads the very same arrays."""
    import numpy as np

    arrays = {f"{i}/{name}": np.asarray(value) for i, feature in enumerate(features) for name, value in feature.items()}
    np.savez(path, **arrays)
    return path


def load_inputs(path: Path) -> list[dict]:
    import numpy as np

    features: dict[int, dict] = {}
    with np.load(path) as saved:
        for key in saved.files:
            index, name = key.split("/", 1)
            features.setdefault(int(index), {})[name] = saved[key]
    return [features[i] for i in sorted(features)]


def run_probe(probe: Probe, inputs: Path, threads: int, round_index: int, workdir: Path,
              timeout: float = 300) -> Footprint:
    """One probe in a fresh child process: its Footprint, or FootprintError."""
    request_path, result_path = workdir / "request.json", workdir / "result.json"
    result_path.unlink(missing_ok=True)  # a stale result must not pass for this probe's
    request = {"variant": probe.variant, "kind": probe.kind, "path": str(probe.path), "inputs": str(inputs),
               "threads": threads, "result": str(result_path), "sample_seconds": SAMPLE_SECONDS}
    request_path.write_text(json.dumps(request))
    what = f"footprint of {probe.variant} ({probe.kind}, {probe.path})"
    try:
        done = subprocess.run([sys.executable, "-m", "ortgate.measure.footprint", str(request_path)],
                              timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired as exc:
        raise FootprintError(f"{what}: the child process did not finish in {timeout:g}s; raise the timeout "
                             f"or check that the model loads in a plain onnxruntime/transformers session") from exc
    if done.returncode != 0 or not result_path.exists():
        tail = "\n".join(_stderr_tail(done.stderr)) or "(no stderr)"
        raise FootprintError(f"{what}: the child process failed (exit {done.returncode}); its stderr ends:\n{tail}")
    return Footprint(variant=probe.variant, kind=probe.kind, round=round_index, **json.loads(result_path.read_text()))


def _stderr_tail(stderr: str) -> list[str]:
    """The last lines of a child's stderr, less the lines of ^^^ that point into a traceback's source."""
    lines = [line for line in stderr.strip().splitlines() if line.strip(" ^~")]
    return lines[-STDERR_LINES:]


# ---------------------------------------------------------------------------------------------------------------
# The child, in the fresh process. numpy, onnxruntime, torch are imported in these functions, not at the module's
# top (standard library and ortgate.errors/files only): the child's baseline holds what its kind needs and no more.


class _RssSampler:
    """The highest psutil RSS seen, sampled from a thread while the model loads and runs; `take_peak` ends a phase."""

    def __init__(self, interval: float) -> None:
        import psutil

        self._process, self._interval = psutil.Process(), interval
        self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return self._process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self.rss())

    def take_peak(self) -> int:
        """The phase's highest sample (now included); the next phase starts from now."""
        now = self.rss()
        peak, self.peak = max(self.peak, now), now
        return peak

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _reset_high_water_mark() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+), so the peak covers only what follows. False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _high_water_mark(reset_done: bool) -> tuple[int | None, str]:
    """The kernel's peak RSS in bytes, and which figure it is."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM" if reset_done else "VmHWM since start"
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"
    except (ImportError, OSError):
        return None, "sampled"


def _onnx_model(path: Path) -> Path:
    return path / "model.onnx" if path.is_dir() else path


def _torch_weights(model_dir: Path) -> list[Path]:
    """The weight files from_pretrained reads: safetensors where there are any, else the pickled *.bin."""
    return list(model_dir.glob("*.safetensors")) or list(model_dir.glob("*.bin"))


def weights_bytes(model_dir: Path) -> int:
    """The size of a Hugging Face model folder's weights (0: none found)."""
    return sum(p.stat().st_size for p in _torch_weights(Path(model_dir)))


def _onnx_loader(path: Path, threads: int):
    """(load, run, file bytes): onnxruntime only. The imports happen here, before the baseline RSS."""
    import onnxruntime as ort

    from ortgate.build.runtime import session_options

    model = _onnx_model(path)

    def load():
        return ort.InferenceSession(str(model), session_options(threads), providers=["CPUExecutionProvider"])

    def run(session, features: list[dict]) -> None:
        names = [i.name for i in session.get_inputs()]
        missing = [n for n in names if n not in features[0]]
        if missing:
            raise KeyError(f"the graph takes input(s) {missing} that the saved inputs lack ({sorted(features[0])})")
        for feature in features:
            session.run(None, {n: feature[n] for n in names})

    return load, run, model.stat().st_size if model.exists() else 0


def _torch_loader(path: Path, threads: int):
    """(load, run, file bytes) for a Hugging Face model folder: torch and transformers, nothing else of ortgate's."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from ortgate.sources.inputs import forward_inputs

    torch.set_num_threads(threads)

    def load():
        return AutoModelForSequenceClassification.from_pretrained(path).eval()

    def run(model, features: list[dict]) -> None:
        names = forward_inputs(model.forward, list(features[0]))
        with torch.inference_mode():
            for feature in features:
                model(**{n: torch.from_numpy(feature[n]) for n in names})

    return load, run, sum(f.stat().st_size for f in _torch_weights(path))


def _phase_peak(sampler: _RssSampler, reset: bool) -> tuple[int, int, str]:
    """(peak, sampled peak, source) of the phase now ending, in bytes; the kernel's mark restarts for the next."""
    kernel, source = _high_water_mark(reset)
    sampled = sampler.take_peak()
    if reset:
        _reset_high_water_mark()
    return max(kernel or 0, sampled), sampled, source if kernel else "sampled"


def probe_in_this_process(request: Mapping) -> dict:
    """The child's measurement; call it only in a fresh process (the module's __main__ does)."""
    loader = _onnx_loader if request["kind"] == "onnx" else _torch_loader
    load, run, file_bytes = loader(Path(request["path"]), int(request["threads"]))
    features = load_inputs(Path(request["inputs"]))
    gc.collect()
    sampler = _RssSampler(float(request.get("sample_seconds", SAMPLE_SECONDS)))
    before = sampler.rss()
    reset = _reset_high_water_mark()
    with sampler:
        started = time.perf_counter()
        model = load()
        load_seconds = time.perf_counter() - started
        after_load = sampler.rss()
        load_peak, load_sampled, source = _phase_peak(sampler, reset)
        started = time.perf_counter()
        run(model, features)
        inference_seconds = time.perf_counter() - started
        run_peak, run_sampled, _ = _phase_peak(sampler, reset)
    peak = max(load_peak, run_peak)
    return {"pid": os.getpid(), "file_mb": file_bytes / MB, "rss_before_load_mb": before / MB,
            "load_rss_mb": (after_load - before) / MB, "load_peak_rss_mb": load_peak / MB,
            "run_peak_rss_mb": run_peak / MB, "peak_rss_mb": peak / MB,
            "sampled_peak_rss_mb": max(load_sampled, run_sampled) / MB, "model_rss_mb": (peak - before) / MB,
            "load_seconds": load_seconds, "inference_seconds": inference_seconds, "calls": len(features),
            "peak_source": source}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ortgate.measure.footprint REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    atomic_write_text(request["result"], json.dumps(probe_in_this_process(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


class FootprintMeter:
    """The run's footprint stage: every graph the round-robin times (`SpeedMeter.interleaved_ids`: the baseline
    and each distinct graph) probed in fresh processes, `rounds` rounds in rotated order, on the run's benchmark
    texts tokenized once (batch 1); once per run, on first use."""

    def __init__(self, meter, model_path: Path, threads: int, rounds: int, log: Callable[[str], None] = print,
                 progress_scope: Callable = None) -> None:
        self.meter, self.model_path, self.threads, self.rounds_wanted = meter, Path(model_path), threads, rounds
        self.log, self.progress_scope = log, progress_scope
        self._once = Once(self._measure)

    @property
    def results(self) -> dict[str, list[Footprint]]:
        """What `measure` found ({} before it ran)."""
        return self._once.result or {}

    def measure(self) -> dict[str, list[Footprint]]:
        """Once per run; a failure is raised again to every later caller, no probe is run again."""
        return self._once()

    def _measure(self) -> dict[str, list[Footprint]]:
        import contextlib

        import numpy as np

        from ortgate.spec.variants import BASELINE_ID

        plan = self.meter.plan
        plan.build_all()
        ids = self.meter.interleaved_ids()
        probes = [Probe(vid, "pytorch", self.model_path) if vid == BASELINE_ID
                  else Probe(vid, "onnx", plan.built(vid).onnx_path) for vid in ids]
        # Every input any graph takes, as its own predictor encodes it (graphs of one model may differ: one may
        # have dropped token_type_ids); each child feeds its session the names it declares.
        by_inputs = {tuple(getattr(plan.predictor(v), "input_names", ())): v for v in ids if v != BASELINE_ID}
        encoders = list(by_inputs.values()) or [BASELINE_ID]
        features = [{k: np.asarray(v) for vid in encoders for k, v in plan.predictor(vid).encode([t]).items()}
                    for t in self.meter.texts]
        scope = self.progress_scope() if self.progress_scope else contextlib.nullcontext()
        with scope:
            return measure_footprints(probes, features, self.threads, self.rounds_wanted, log=self.log)

    def rounds(self, variant_id: str) -> list[Footprint]:
        return self.measure()[self.meter.measured_as(variant_id)]

    def summary(self, variant_id: str) -> FootprintSummary:
        return summarize(self.rounds(variant_id))
