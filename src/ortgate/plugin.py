"""The pytest plugin: options, session fixtures, variant parametrization, pytest-benchmark timing, the
run's record in the benchmark JSON, the terminal summary.

Registered through the `pytest11` entry point. The work itself lives in the library (`session.RunSession`
and its stages); this module only connects it to pytest and drives pytest-benchmark's fixture
(`benchmark_throughput`, `time_with_benchmark`), handing the timed rounds to the run's `SpeedMeter`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ortgate.build.builder import BuildStatus
from ortgate.errors import OrtgateError
from ortgate.isa import fingerprint_id, machine_fingerprint
from ortgate.measure.throughput import Speed, speed_from_round_times
from ortgate.record.result import RunResult
from ortgate.report.tables import render_terminal, write_results
from ortgate.session import RunSession
from ortgate.spec.options import OPTIONS, argparse_kwargs
from ortgate.spec.settings import Settings, read_pyproject, resolve_settings
from ortgate.spec.variants import BASELINE_ID

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey[RunSession]()
RESULT_KEY = pytest.StashKey[RunResult | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ortgate", "ortgate: accuracy and speed gates for ONNX Runtime variants")
    for option in OPTIONS:  # --ortgate-<name>; not given: None, so that [tool.ortgate] and the default apply
        group.addoption("--ortgate-" + option.name.replace("_", "-"),
                        **argparse_kwargs(option, dest=f"ortgate_{option.name}"))


def pytest_configure(config: pytest.Config) -> None:
    cli = {option.name: config.getoption(f"ortgate_{option.name}") for option in OPTIONS}
    try:
        settings = resolve_settings(cli, read_pyproject(config.rootpath), config.rootpath)
        settings.variant_set.select(settings.variants)  # unknown names are a usage error, before collection
    except OrtgateError as exc:
        raise pytest.UsageError(f"ortgate: {exc}") from None
    config.stash[SETTINGS_KEY] = settings
    config.addinivalue_line("markers", "ortgate_interleaved: a test that drives the run's round-robin cycles; it "
                            "runs before the tests that read them (speed floors)")
    config.addinivalue_line("markers", "ortgate_latency: a test that drives the run's latency or footprint pass; it "
                            "runs after the round-robin and before the tests that read it (budgets)")
    config.pluginmanager.register(NativeCompareNote(), "ortgate-native-compare-note")
    # pytest-benchmark writes --benchmark-json at the very end and fails then if the folder is missing.
    json_path = config.getoption("benchmark_json", None)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)


def _run_session(config: pytest.Config) -> RunSession:
    if SESSION_KEY not in config.stash:
        capture = config.pluginmanager.get_plugin("capturemanager")
        reporter = config.pluginmanager.get_plugin("terminalreporter")

        def log(message: str) -> None:
            if capture is not None and reporter is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(message)
            else:
                print(message, file=sys.stderr)

        def progress_scope():
            return capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()

        config.stash[SESSION_KEY] = RunSession(config.stash[SETTINGS_KEY], log=log, progress_scope=progress_scope)
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SETTINGS_KEY]
    if "ortgate_shape" in metafunc.fixturenames:
        shapes = [(b, s) for b in settings.batch_sizes for s in settings.seq_lengths]
        metafunc.parametrize("ortgate_shape", shapes, ids=[f"b{b}-s{s}" for b, s in shapes])
    if "ortgate_threads" in metafunc.fixturenames:
        counts = list(settings.threads_sweep or [None])  # None: a test that says how to ask for a sweep
        metafunc.parametrize("ortgate_threads", counts, ids=[f"t{t}" if t else "no-sweep" for t in counts])
    wanted = [name for name in ("ortgate_variant", "ortgate_candidate") if name in metafunc.fixturenames]
    if not wanted:
        return
    ids = _run_session(metafunc.config).selected_ids  # validated in pytest_configure
    repeat = metafunc.config.stash[SETTINGS_KEY].repeat
    if "ortgate_repeat" in metafunc.fixturenames and repeat > 1:
        metafunc.parametrize("ortgate_repeat", range(1, repeat + 1), ids=[f"r{i}" for i in range(1, repeat + 1)])
    for name in wanted:
        params = ids if name == "ortgate_variant" else [i for i in ids if i != BASELINE_ID]
        # Session scope groups the tests of one variant together and builds it once.
        metafunc.parametrize(name, params, ids=params, indirect=True, scope="session")


@pytest.hookimpl(trylast=True)  # after pytest's own fixture-based reordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # --ortgate-repeat: run the whole matrix once per repeat (r1 of every variant, then r2, ...) rather
    # than one variant's repeats back to back, so drift on a noisy machine spreads over all variants.
    def repeat_of(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("ortgate_repeat", 0) if callspec else 0

    items.sort(key=repeat_of)
    # The round-robin cycles, then the latency and footprint passes, are timed by their own benchmarks; tests
    # that read them (floors, budgets) come after.
    items.sort(key=lambda item: (item.get_closest_marker("ortgate_interleaved") is None,
                                 item.get_closest_marker("ortgate_latency") is None))
    # Build only what the remaining tests use (after -k and deselection), all before the first measurement.
    if SESSION_KEY in config.stash:
        used = {item.callspec.params.get(name) for item in items if hasattr(item, "callspec")
                for name in ("ortgate_variant", "ortgate_candidate")}
        session = config.stash[SESSION_KEY]
        session.planned_ids = [v for v in session.selected_ids if v in used]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Resolve the model and the data once, before the first test: a missing model directory or an unreadable
    dataset stops the run with one message (exit code 4, like any usage error), not one error per test."""
    option = session.config.option
    if (session.testsfailed and not option.continue_on_collection_errors) or option.collectonly:
        return  # pytest's own loop stops there; nothing to prepare
    if not any("ortgate" in getattr(item, "fixturenames", ()) for item in session.items):
        return  # no test uses ortgate (e.g. this project's unit tests): build no model
    try:
        _run_session(session.config).prepare()
    except OrtgateError as exc:
        raise pytest.UsageError(f"ortgate: {exc}") from None


@pytest.fixture
def ortgate_repeat() -> int:
    """Which repeat of the throughput matrix this is (1 unless --ortgate-repeat N > 1 parametrizes it)."""
    return 1


@pytest.fixture(scope="session")
def ortgate(pytestconfig: pytest.Config) -> RunSession:
    """The run's `RunSession`, shared by every test: its stages `plan` (builds, predictors), `evaluator`,
    `gates` (accuracy), `meter` (speeds, request latency), `shapes` (shape and thread sweeps), `footprints`
    (memory and load), `roofline` (the CPU's limit), `floors` (speed floors), `budgets` and `structures`
    (graph checks)."""
    return _run_session(pytestconfig)


def _built_variant_id(request: pytest.FixtureRequest, session: RunSession) -> str:
    """Build the run's variants (all of them, the first time), then hand out this one, or report why not:
    a variant that could not be built fails its tests if it is known to build, else is an expected failure
    (`RunSession.build_failure` decides); one that does not apply here (an fp16 GPU graph on a CPU) is skipped."""
    variant_id = request.param
    try:
        status, reason = session.plan.status(variant_id)
        verdict = session.build_failure(variant_id) if status is BuildStatus.BUILD_FAILED else None
    except OrtgateError as exc:
        pytest.fail(f"ortgate: {exc}", pytrace=False)
    if status is BuildStatus.NOT_APPLICABLE:
        pytest.skip(f"{variant_id} not applicable: {reason}")
    if verdict is not None and verdict.expected:
        pytest.xfail(verdict.message)
    return variant_id  # a build failure that is not expected fails each test itself (pytest_runtest_call)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A test of a variant that failed to build and is no expected failure (it was known to build, or
    --ortgate-strict) fails before its body runs, with the message that says why (not a setup error)."""
    session, args = item.config.stash.get(SESSION_KEY, None), getattr(item, "funcargs", {})
    for name in ("ortgate_variant", "ortgate_candidate"):
        variant_id = args.get(name)
        if session is not None and variant_id is not None \
                and session.plan.status(variant_id)[0] is BuildStatus.BUILD_FAILED:
            pytest.fail(session.build_failure(variant_id).message, pytrace=False)


@pytest.fixture(scope="session")
def ortgate_variant(request: pytest.FixtureRequest, ortgate: RunSession) -> str:
    """Each selected variant id, the baseline included; its build is done (or found in the cache)."""
    return _built_variant_id(request, ortgate)


@pytest.fixture(scope="session")
def ortgate_candidate(request: pytest.FixtureRequest, ortgate: RunSession) -> str:
    """Each selected variant id but the baseline: the ones a gate compares with it."""
    return _built_variant_id(request, ortgate)


def time_with_benchmark(benchmark, fn: Callable[[], None], samples: int, rounds: int,
                        warmup: int) -> list[float] | None:
    """Time `fn` with pytest-benchmark's pedantic mode, one call per round; the round times (None when
    benchmarks are disabled, e.g. --benchmark-disable), with the speed they give in the saved JSON."""
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    round_seconds = list(stats.stats.data)
    benchmark.extra_info.update(speed_from_round_times(round_seconds, samples).as_dict())
    return round_seconds


def benchmark_throughput(benchmark, ortgate: RunSession, variant_id: str, mode: str, repeat: int = 1) -> Speed | None:
    """Time one variant in one mode (end-to-end or model-only) with the pytest-benchmark fixture, batch 1,
    on the run's benchmark texts; the speed is recorded in the run (and returned)."""
    s, meter = ortgate.settings, ortgate.meter
    benchmark.group = f"throughput {mode}"
    benchmark.extra_info.update({"variant": variant_id, "mode": mode, "threads": s.threads, "repeat": repeat,
                                 "batch_size": 1, "samples_per_round": len(meter.texts)})
    round_seconds = time_with_benchmark(benchmark, meter.workload(variant_id, mode), len(meter.texts),
                                        s.bench_rounds, s.warmup_rounds)
    if round_seconds is None:
        return None
    benchmark.extra_info["round_seconds"] = round_seconds
    return meter.record(variant_id, mode, round_seconds)


def benchmark_interleaved(benchmark, ortgate: RunSession, mode: str) -> dict[str, list[float]]:
    """Drive the run's round-robin cycles of one mode with pytest-benchmark's fixture (one round = one cycle:
    every variant and the baseline once, in turn), so the saved benchmark shows what a cycle costs; the
    per-variant times of each cycle go to the run's `SpeedMeter` (the record, `ortgate compare`)."""
    s, meter = ortgate.settings, ortgate.meter
    robin = meter.round_robin(mode)
    benchmark.group = f"round-robin {mode}"
    benchmark.extra_info.update({"mode": mode, "graphs": list(robin.workloads), "threads": s.threads,
                                 "samples_per_graph": len(meter.texts)})
    # pytest-benchmark times the first cycles (its rounds are fixed in advance); with a precision target the
    # rest run until every ratio is tight enough or the cap is reached, all in the record.
    rounds = s.cycles if s.cycle_precision is None else min(s.min_cycles, s.cycles)
    benchmark.pedantic(robin, rounds=rounds, warmup_rounds=0, iterations=1)  # a disabled benchmark runs one
    times = meter.interleaved(mode)
    benchmark.extra_info["cycles"] = robin.cycles
    return times


def benchmark_latency(benchmark, ortgate: RunSession) -> dict:
    """Run the latency pass once under pytest-benchmark's fixture (its one round is the pass's cost); each graph's
    quantiles, intervals and MLPerf estimates go to the benchmark's extra_info and the run's record."""
    benchmark.group = "request latency"
    benchmark.pedantic(ortgate.meter.latency, rounds=1, warmup_rounds=0, iterations=1)
    stats = ortgate.meter.latency()
    robin = ortgate.meter.latency_pass
    benchmark.extra_info.update({
        "timer_overhead_ns": ortgate.meter.timer.median_ns, "cycles": robin.cycles, "stopped": robin.stopped,
        "latency_ms": {vid: s.as_dict() for vid, s in stats.items()}})
    return stats


def benchmark_footprints(benchmark, ortgate: RunSession) -> dict:
    """Run the footprint probes (fresh processes) once under pytest-benchmark's fixture; per graph its figures go
    to the benchmark's extra_info and the run's record."""
    benchmark.group = "memory and load"
    benchmark.pedantic(ortgate.footprints.measure, rounds=1, warmup_rounds=0, iterations=1)
    rounds = ortgate.footprints.measure()
    benchmark.extra_info["footprints"] = {vid: [f.as_dict() for f in fs] for vid, fs in rounds.items()}
    return rounds


def benchmark_shape(benchmark, ortgate: RunSession, variant_id: str, batch: int, seq_len: int):
    """Model-only throughput of one variant at one shape (every row exactly `seq_len` tokens), with
    pytest-benchmark's fixture, grouped by shape; recorded in the run (and returned). None: benchmarks disabled."""
    meter = ortgate.shapes
    run, rounds = meter.shape_workload(variant_id, batch, seq_len)
    benchmark.group = f"shape b{batch} s{seq_len}"
    benchmark.extra_info.update({"variant": variant_id, "batch_size": batch, "seq_len": seq_len,
                                 "threads": ortgate.settings.threads, "mode": "model-only"})
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    shape = meter.record_shape(variant_id, batch, seq_len, ortgate.settings.threads, list(stats.stats.data))
    benchmark.extra_info["samples_per_s"] = shape.samples_per_s
    return shape


def benchmark_threads(benchmark, ortgate: RunSession, variant_id: str, threads: int):
    """Model-only throughput of one ONNX variant at another thread count (batch 1, the benchmark texts)."""
    meter = ortgate.shapes
    run, rounds = meter.threads_workload(variant_id, threads)
    benchmark.group = "threads b1 (benchmark texts)"
    benchmark.extra_info.update({"variant": variant_id, "threads": threads, "batch_size": 1, "mode": "model-only"})
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    speed = meter.record_threads(variant_id, threads, list(stats.stats.data))
    benchmark.extra_info["samples_per_s"] = speed.samples_per_s
    return speed


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # Saved baselines carry the CPU fingerprint, so a comparison can tell which machine made them.
    machine_info["ortgate_cpu"] = machine_fingerprint()
    machine_info["ortgate_cpu_id"] = fingerprint_id()


def pytest_benchmark_compare_machine_info(config: pytest.Config, benchmarksession, machine_info: dict,
                                          compared_benchmark: dict) -> None:
    """Refuse to compare with a run saved on another CPU, unless asked to (--ortgate-cross-machine)."""
    saved = compared_benchmark.get("machine_info", {})
    saved_id, current_id = saved.get("ortgate_cpu_id"), machine_info.get("ortgate_cpu_id")
    if saved_id is None or saved_id == current_id or config.stash[SETTINGS_KEY].cross_machine:
        return
    cpu = saved.get("ortgate_cpu", {})
    raise pytest.UsageError(
        f"ortgate: the saved benchmark run was measured on another CPU ({cpu.get('model_name')}, flags "
        f"{', '.join(cpu.get('flags', [])) or 'none'}; fingerprint {saved_id}) than this one "
        f"({machine_info['ortgate_cpu'].get('model_name')}, fingerprint {current_id}): its speeds are not "
        "a baseline for this machine. Compare with a run from this machine, or pass --ortgate-cross-machine "
        "to compare anyway."
    )


def _final_result(config: pytest.Config) -> RunResult | None:
    """The run's record, assembled once when the tests are done (None: no results), so the benchmark JSON
    and summary.json hold the same record."""
    if RESULT_KEY not in config.stash:
        session = config.stash.get(SESSION_KEY, None)
        if session is not None and session.has_results:
            session.explain()  # profiles of slow variants, diagnoses of failed gates, repairs: before the record
        config.stash[RESULT_KEY] = session.result() if session is not None and session.has_results else None
    return config.stash[RESULT_KEY]


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """Saved benchmark runs carry the run's record with labels and predictions, so `ortgate compare` can
    gate accuracy across runs as well as speed."""
    result = _final_result(config)
    if result is not None:
        output_json["ortgate"] = result.to_dict(with_predictions=True)


NATIVE_COMPARE_NOTE = (
    "ortgate: --benchmark-compare-fail compares this process's raw times with a saved run's. On a shared machine "
    "the same build moves 15-30% between runs (README, Comparing runs), so a native threshold tells only a "
    "slowdown larger than that, and a pass or a failure below it may be the machine. For verdicts that cancel the "
    "machine, save runs with --benchmark-json and use `ortgate compare --old RUN... --new RUN...` (ratios to a "
    "reference timed in the same round-robin cycles, runs as the unit).")


class NativeCompareNote:
    """Says what a native threshold can tell, before pytest-benchmark's own summary: that one raises on a
    regression, and summaries after it would not run."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config) -> None:
        if config.getoption("benchmark_compare_fail", None):
            terminalreporter.write_line(NATIVE_COMPARE_NOTE, yellow=True)


def write_repairs(repairs: dict, results_dir: Path) -> None:
    """Each repair's table, Pareto plot and entry under <results_dir>/repair/<variant>/."""
    from ortgate.report.repair import write_repair

    for vid, repair in repairs.items():
        if not isinstance(repair, str):
            write_repair(repair, results_dir / "repair" / vid)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    try:
        result = _final_result(config)
        if result is None:
            return
        results_dir = config.stash[SETTINGS_KEY].results_dir
        json_path, md_path = write_results(result, results_dir)
        session = config.stash[SESSION_KEY]
        write_repairs(session.explanations.repairs if session.has_results else {}, results_dir)
    except (OrtgateError, OSError) as exc:
        terminalreporter.write_line(f"ortgate: could not write the summary: {exc}")
        return
    terminalreporter.section("ortgate summary")
    terminalreporter.write(render_terminal(result))
    terminalreporter.write_line(f"results: {json_path}  {md_path}")
    store_result(result, config, json_path, terminalreporter)


def store_result(result: RunResult, config: pytest.Config, json_path: Path, terminalreporter) -> None:
    """Append the run to the history store (--ortgate-store). A store that fails stops nothing but this step:
    the files are written already, and the message says how to store them later."""
    target = config.stash[SETTINGS_KEY].store
    if not target:
        return
    from ortgate.history.store import Provenance, StoreError, shown_target, store_run

    try:
        stored, shown = store_run(target, config.rootpath, result, Provenance("pytest"))
    except StoreError as exc:
        terminalreporter.write_line(
            f"ortgate: the run was not stored: {exc}. Its files are written; store it later with: ortgate history "
            f"import {json_path} --store {shown_target(target, config.rootpath)}", yellow=True)
        return
    said = "stored as" if stored.created else "already stored as"
    terminalreporter.write_line(f"history: {said} run {stored.run_id} in {shown}")
