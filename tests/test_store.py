"""The history store on real databases: SQLite always, and PostgreSQL where .ci/run started a server
($ORTGATE_TEST_POSTGRES_URL: an admin URL; each test gets a database of its own). Concurrent writers lose
nothing, a run is stored whole or not at all, and a store that fails says what failed and how to retry."""

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from ortgate.history import schema
from ortgate.history import store as store_module
from ortgate.history.interchange import bencher_metrics, export_json, import_runs, read_runs
from ortgate.history.store import Provenance, Selection, Store, StoreError, predictions_digest, run_key, store_url
from ortgate.record.result import FootprintResult, InterleavedResult, LatencyResult, VariantResult
from records import benchmark_json, make_run

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
POSTGRES = os.environ.get("ORTGATE_TEST_POSTGRES_URL")


def _postgres_database():
    """A fresh database on the test server (dropped afterwards); skips without a server unless CI requires one."""
    if not POSTGRES:
        if os.environ.get("ORTGATE_REQUIRE_POSTGRES"):
            pytest.fail("ORTGATE_REQUIRE_POSTGRES is set but ORTGATE_TEST_POSTGRES_URL is not: start the server "
                        "with .ci/postgres start DIR")
        pytest.skip("no PostgreSQL server: set ORTGATE_TEST_POSTGRES_URL (.ci/postgres start DIR prints it)")
    name = f"ortgate_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(store_url(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = store_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    return url, admin, name


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "store" / "history.db")
        return
    url, admin, name = _postgres_database()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _interleaved(ratio: float) -> dict:
    return {"end-to-end": InterleavedResult("pytorch", (1.0, 1.1), ratio, (ratio * 0.95, ratio * 1.05), 0.95)}


def run_of(i: int, *, cpu: str = "epyc", ratio: float = 4.0, accuracy: float = 0.9, commit: str | None = None):
    latency = LatencyResult(400, 5.0, 6.0, 8.0 + i % 3, 9.0, 5.5, {"p99": (7.5, 9.5)}, 0.95)
    footprint = FootprintResult(3, 20.0, 180.0, 60.0, 90.0, (180.0,) * 3, (60.0,) * 3, (90.0,) * 3)
    variants = [VariantResult("pytorch", gate="baseline", accuracy=0.9, samples_per_s=50.0, speed_ratio=1.0),
                VariantResult("int8", parent="onnx", isa="avx512", build="built", gate="pass", accuracy=accuracy,
                              samples_per_s=50.0 * ratio, interleaved=_interleaved(ratio), latency=latency,
                              footprint=footprint, graph={"sha256": f"g{i}"})]
    run = make_run(variants, cpu=cpu, predictions={"pytorch": [0, 1, 1], "int8": [0, 1, i % 2]}, labels=[0, 1, 1])
    generated = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=i)
    return replace(run, generated=generated.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   source_control={"commit": commit or f"{i:040x}", "branch": "main", "dirty": False})


def test_a_run_is_stored_whole_and_read_back(target):
    run = run_of(1)
    with Store(target) as store:
        assert store.schema_version() == schema.SCHEMA_VERSION
        first = store.append(run, Provenance("pytest"))
        again = store.append(run, Provenance("pytest"))
        assert first.created and not again.created and again.run_id == first.run_id
        assert store.count() == (1, 2)
        [(run_id, back)] = store.records()
        assert run_id == first.run_id and back.to_dict() == run.to_dict()
        [row] = store.run_rows()
        assert (row.git_commit, row.git_branch, row.machine_id, row.cpu) == (f"{1:040x}", "main", "epyc", "epyc")
        rows = {r.variant: r for r in store.variant_rows([run_id])}
        int8 = rows["int8"]
        assert (int8.ratio, int8.ratio_low, int8.ratio_source) == (4.0, 4.0 * 0.95, "interleaved")
        assert (int8.p99_ms, int8.peak_rss_mb, int8.gate, int8.graph_digest) == (9.0, 180.0, "pass", "g1")
        assert int8.predictions_digest == predictions_digest([0, 1, 1]) and rows["pytorch"].ratio == 1.0


def test_selection_by_machine_time_branch_and_last(target):
    with Store(target) as store:
        for i in range(6):
            store.append(run_of(i, cpu="epyc" if i % 2 else "xeon"), Provenance("t"))
        assert len(store.run_ids(Selection(machine=("XEO",)))) == 3  # part of the CPU name, any case
        assert len(store.run_ids(Selection(machine=("xeon", "epyc")))) == 6
        since = store_module._utc("2026-11-01T03:00:00+0000")
        assert store.run_ids(Selection(since=since)) == store.run_ids()[3:]
        assert store.run_ids(Selection(last=2)) == store.run_ids()[-2:]
        assert store.run_ids(Selection(branch="release")) == []


WRITER = """
import sys
sys.path[:0] = [{src!r}, {tests!r}]
from test_store import run_of
from ortgate.history.store import Provenance, Store
writer, runs = int(sys.argv[1]), int(sys.argv[2])
with Store({target!r}) as store:
    for i in range(runs):
        store.append(run_of(1000 * writer + i), Provenance(f"writer {{writer}}"))
        store.append(run_of(999999), Provenance(f"writer {{writer}}"))  # every writer stores this one run too
"""


def test_concurrent_writers_lose_nothing(target, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(src=str(SRC), tests=str(TESTS), target=target))
    Store(target).open().close()  # the schema exists; the writers race on rows (the migration race: below)
    writers = [subprocess.Popen([sys.executable, str(script), str(w), "10"], stderr=subprocess.PIPE, text=True)
               for w in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in writers]
    assert [p.returncode for p in writers] == [0] * 4, errors
    with Store(target) as store:
        assert store.count() == (41, 82)  # 4 × 10 runs, and the shared run once
        assert sorted(r.git_commit for r in store.run_rows()) == sorted(
            [f"{1000 * w + i:040x}" for w in range(4) for i in range(10)] + [f"{999999:040x}"])


def test_concurrent_first_writers_create_the_schema_once(target, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(src=str(SRC), tests=str(TESTS), target=target))
    writers = [subprocess.Popen([sys.executable, str(script), str(w), "2"], stderr=subprocess.PIPE, text=True)
               for w in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in writers]
    assert [p.returncode for p in writers] == [0] * 3, errors
    with Store(target) as store:
        assert store.count() == (7, 14) and store.schema_version() == schema.SCHEMA_VERSION


KILLED = """
import os, signal, sys
sys.path[:0] = [{src!r}, {tests!r}]
from test_store import run_of
from ortgate.history.store import Provenance, Store

def insert_then_die(self, conn, rows):
    Store_insert(self, conn, rows)
    os.kill(os.getpid(), signal.SIGKILL)  # the run row and its variant rows are written, not committed

Store_insert, Store._insert_variants = Store._insert_variants, insert_then_die
Store({target!r}).open().append(run_of(7), Provenance("killed"))
"""


def test_a_writer_killed_mid_write_leaves_no_partial_run(target, tmp_path):
    with Store(target) as store:
        store.append(run_of(1), Provenance("before"))
    script = tmp_path / "killed.py"
    script.write_text(KILLED.format(src=str(SRC), tests=str(TESTS), target=target))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    with Store(target) as store:
        assert store.count() == (1, 2)  # only the run stored before
        assert store.append(run_of(7), Provenance("retry")).created  # and the store takes the run afterwards
        assert store.count() == (2, 4)


def test_readers_do_not_wait_for_a_writer_mid_run(tmp_path):
    import threading

    target = str(tmp_path / "history.db")
    with Store(target) as store:
        store.append(run_of(1), Provenance("t"))
    writer = Store(target).open()
    conn = writer.engine.connect()
    conn.begin()  # BEGIN IMMEDIATE: the write lock, held mid-run
    conn.execute(schema.runs.insert().values(**store_module._run_values(run_of(2), Provenance("w"))))
    seen = []
    reader = threading.Thread(target=lambda: seen.append(Store(target).open().count()))
    reader.start()
    reader.join()  # a reader that waited would fail after SQLite's busy timeout, not hang
    conn.rollback(), conn.close(), writer.close()
    assert seen == [(1, 2)]  # the last commit, read at once


def test_an_error_mid_write_rolls_the_run_back(target, monkeypatch):
    def fail(self, conn, rows):
        conn.execute(schema.variant_results.insert(), rows[:1])
        raise RuntimeError("disk gone")

    monkeypatch.setattr(Store, "_insert_variants", fail)
    with Store(target) as store, pytest.raises(RuntimeError, match="disk gone"):
        store.append(run_of(1), Provenance("t"))
    monkeypatch.undo()
    with Store(target) as store:
        assert store.count() == (0, 0)


def _set_version(target: str, version: int) -> None:
    engine = create_engine(store_url(target))
    with engine.begin() as conn:
        conn.execute(schema.meta.update().values(value=str(version)))
    engine.dispose()


def test_a_newer_schema_is_refused_and_nothing_is_written(target):
    with Store(target) as store:
        store.append(run_of(1), Provenance("t"))
    _set_version(target, schema.SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=rf"schema version {schema.SCHEMA_VERSION + 1}, newer .*upgrade ortgate"):
        Store(target).open()
    _set_version(target, schema.SCHEMA_VERSION)
    with Store(target) as store:
        assert store.count() == (1, 2)


def test_a_failed_migration_leaves_the_store_at_its_version(target, monkeypatch):
    with Store(target) as store:
        store.append(run_of(1), Provenance("t"))

    def half_then_fail(conn):
        conn.execute(text("CREATE TABLE ortgate_half (id INTEGER)"))
        raise RuntimeError("migration 2 failed")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, schema.SCHEMA_VERSION + 1, half_then_fail)
    with pytest.raises(RuntimeError, match="migration 2 failed"):
        Store(target).open()
    monkeypatch.undo()
    with Store(target) as store:
        assert store.schema_version() == schema.SCHEMA_VERSION and store.count() == (1, 2)
        assert "ortgate_half" not in inspect(store.engine).get_table_names()


def test_tables_of_something_else_are_not_taken_for_a_store(tmp_path):
    path = tmp_path / "other.db"
    engine = create_engine(store_url(str(path)))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE ortgate_runs (id INTEGER)"))
    engine.dispose()
    with pytest.raises(StoreError, match="no schema version: it was not made by ortgate"):
        Store(str(path)).open()


def test_a_store_that_cannot_be_opened_says_what_failed(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot be opened .*Not a directory"):
        Store(str(tmp_path / "file" / "sub" / "history.db")).open()
    with pytest.raises(StoreError, match="neither SQLite nor PostgreSQL"):
        Store("mysql://ci@db/runs")


def test_postgres_faults_name_the_failure_and_hide_the_password():
    url, admin, name = _postgres_database()
    try:
        wrong = store_url(url).set(password="wrong-password")
        with pytest.raises(StoreError, match="refused the login") as refused:
            Store(wrong.render_as_string(hide_password=False), connect_timeout=5).open()
        assert "wrong-password" not in str(refused.value) and "***" in str(refused.value)
        closed = store_url(url).set(port=1)
        with pytest.raises(StoreError, match="cannot be reached .*check that the server runs"):
            Store(closed.render_as_string(hide_password=False), connect_timeout=5).open()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_import_backfills_files_once_and_export_round_trips(target, tmp_path):
    saved = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    saved.mkdir(parents=True)
    for i in range(3):
        doc = benchmark_json(run_of(i)) | {"commit_info": {"id": "c" * 40, "branch": "main", "dirty": False}}
        (saved / f"000{i}_run.json").write_text(json.dumps(doc))
    (saved / "other-tool.json").write_text(json.dumps({"benchmarks": []}))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(run_of(2).to_dict()))  # run 2 again, as its summary.json
    with Store(target) as store:
        done = import_runs(store, [tmp_path / ".benchmarks", summary])
        assert (done["runs"], done["stored"], done["already"], len(done["skipped"])) == (4, 3, 1, 1)
        assert import_runs(store, [tmp_path / ".benchmarks"])["stored"] == 0
        out = tmp_path / "export.json"
        assert export_json(store, Selection(), out) == 3
        runs, _ = read_runs([out])
        assert sorted(run_key(r) for r, _ in runs) == sorted(run_key(run_of(i)) for i in range(3))
        digests = {r.predictions_digest for r in store.variant_rows(store.run_ids()) if r.variant == "int8"}
        assert digests == {predictions_digest([0, 1, 0]), predictions_digest([0, 1, 1])}
    with pytest.raises(Exception, match="holds no ortgate run"):
        read_runs([saved / "other-tool.json"])


def test_bencher_metric_format(tmp_path):
    doc = bencher_metrics(run_of(1))
    assert set(doc) == {"pytorch", "int8"}
    int8 = doc["int8"]
    assert int8["speed-ratio"] == {"value": 4.0, "lower_value": 4.0 * 0.95, "upper_value": 4.0 * 1.05}
    assert int8["throughput"] == {"value": 200.0} and int8["accuracy"]["value"] == pytest.approx(90.0)
    assert int8["p99-latency-ms"] == {"value": 9.0, "lower_value": 7.5, "upper_value": 9.5}
    # BMF's schema: benchmark -> measure -> {value, lower_value?, upper_value?}, numbers only
    for measures in doc.values():
        for metric in measures.values():
            assert set(metric) <= {"value", "lower_value", "upper_value"} and "value" in metric
            assert all(isinstance(v, float) for v in metric.values())
