"""The history store: run records in SQLite (one file, the default) or PostgreSQL (a team's or a fleet's),
through SQLAlchemy.

Every write is one transaction: a run is stored whole or not at all (an exception, a lost connection or a
killed process mid-write leaves no partial run). On SQLite a writer takes the write lock when its
transaction begins (BEGIN IMMEDIATE) and waits for others; on PostgreSQL rows from concurrent writers
interleave freely. A store that cannot be reached, refuses the login or has a newer schema raises
`StoreError`, whose message says what failed and how to retry; the run's files are never its concern.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, func, insert, inspect, or_, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from ortgate.errors import OrtgateError
from ortgate.files import json_digest
from ortgate.history.schema import META_KEY, MIGRATIONS, SCHEMA_VERSION, meta, runs, variant_results
from ortgate.record.result import RunResult
from ortgate.record.speed import speed_of
from ortgate.spec.parsers import STORE_SCHEMES

_PG_MIGRATION_LOCK = 0x6F727467  # pg_advisory_xact_lock key: "ortg"
_LOGIN = re.compile(r"password authentication failed|no password supplied|role .* does not exist|"
                    r"authentication failed|pg_hba.conf", re.I)
_UNREACHABLE = re.compile(r"connection refused|could not connect|timeout expired|could not translate host|"
                          r"no such host|network is unreachable|database .* does not exist", re.I)
_FILE = re.compile(r"not a directory|permission denied|read-only file system|unable to open database|disk i/o", re.I)


class StoreError(OrtgateError):
    """The store step failed; nothing of the run was written to the store."""


def store_url(target: str, root: Path | None = None) -> URL:
    """The SQLAlchemy URL of a store setting: a URL (sqlite:///..., postgresql://user@host/db), or a path
    (relative: under `root`) of a SQLite file. PostgreSQL goes through psycopg 3."""
    if "://" not in target:
        path = Path(target).expanduser()
        path = path if path.is_absolute() or root is None else Path(root) / path
        return URL.create("sqlite", database=str(path))
    try:
        url = make_url(target)
    except ArgumentError as exc:
        raise StoreError(f"the store {target!r} is not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend not in STORE_SCHEMES:
        raise StoreError(f"the store {url.render_as_string(hide_password=True)!r} is neither SQLite nor "
                         "PostgreSQL: give a sqlite:///PATH or postgresql://USER@HOST/DB URL, or a file path")
    if backend == "postgresql" and url.get_driver_name() != "psycopg":
        url = url.set(drivername="postgresql+psycopg")
    return url


def run_key(record: RunResult) -> str:
    """The run's identity: a hash of its summary record (predictions and labels left out)."""
    return json_digest(record.to_dict())


def predictions_digest(predictions: list[int] | None) -> str | None:
    return None if predictions is None else json_digest(list(predictions))


def _utc(stamp: str) -> datetime:
    """A record's `generated` (ISO 8601, e.g. 2026-11-27T01:49:01+0000) as naive UTC."""
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z") if re.search(r"[+-]\d{4}$", stamp) else \
        datetime.fromisoformat(stamp)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Provenance:
    """Where a stored run came from, where the record itself does not say: how it was stored, pytest-
    benchmark's commit_info (id, branch, dirty) of a saved benchmark file, its predictions."""

    source: str
    commit_info: dict | None = None
    predictions: dict[str, list[int]] | None = None


@dataclass(frozen=True)
class StoredRun:
    run_id: int
    created: bool  # False: the same run was stored already


@dataclass(frozen=True)
class Selection:
    """Which stored runs: machines (each a fingerprint id prefix or a part of the CPU's name), models (each a
    fingerprint prefix or a part of the model's name), runs since a time,
    a branch, variants, the newest `last` runs."""

    machine: tuple[str, ...] | None = None
    model: tuple[str, ...] | None = None
    since: datetime | None = None
    branch: str | None = None
    variants: tuple[str, ...] | None = None
    last: int | None = None


def _run_values(record: RunResult, provenance: Provenance) -> dict:
    git = record.source_control or {}
    info = provenance.commit_info or {}
    return {
        "run_key": run_key(record), "generated": _utc(record.generated),
        "stored_at": datetime.now(UTC).replace(tzinfo=None),
        "machine_id": record.machine_id or "unknown", "cpu": str(record.machine.get("model_name") or "unknown"),
        "machine": record.machine, "git_commit": git.get("commit") or info.get("id"),
        "git_branch": git.get("branch") or info.get("branch"),
        "git_dirty": git.get("dirty") if git else info.get("dirty"),
        "versions": record.versions, "model_fingerprint": record.model.fingerprint, "model": record.model.source,
        "data": record.data, "data_fingerprint": record.data_fingerprint, "preset": record.preset,
        "baseline": record.baseline, "source": provenance.source,
        "record": record.to_dict(),
    }


def _variant_values(record: RunResult, provenance: Provenance, run_id: int) -> list[dict]:
    rows = []
    predictions = provenance.predictions or record.predictions or {}
    for v in record.variants:
        speed = speed_of(v, record.baseline)
        interval = speed.interval if speed is not None and speed.interval else (None, None)
        rows.append({
            "run_id": run_id, "variant": v.variant, "parent": v.parent, "isa": v.isa, "build": v.build,
            "gate": v.gate, "accuracy": v.accuracy, "f1": v.f1, "accuracy_delta_pp": v.accuracy_delta_pp,
            "predictions_digest": predictions_digest(predictions.get(v.variant)),
            "samples_per_s": v.samples_per_s, "ratio": speed.ratio if speed else None,
            "ratio_low": interval[0], "ratio_high": interval[1], "ratio_source": speed.source if speed else None,
            "p99_ms": v.latency.p99_ms if v.latency else None,
            "peak_rss_mb": v.footprint.peak_rss_mb if v.footprint else None, "size_mb": v.size_mb,
            "graph_digest": v.graph_digest,
        })
    return rows


class Store:
    """One store. `open()` connects and brings the schema to this ortgate's version (or refuses a newer one)."""

    def __init__(self, target: str, root: Path | None = None, *, connect_timeout: int = 10):
        self.target = target
        self.url = store_url(target, root)
        self.shown = self.url.render_as_string(hide_password=True)
        self.engine = self._engine(connect_timeout)

    def _engine(self, connect_timeout: int) -> Engine:
        if self.url.get_backend_name() == "sqlite":
            engine = create_engine(self.url, connect_args={"timeout": 120})

            @event.listens_for(engine, "connect")
            def _connect(dbapi_connection, _record):
                dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
                dbapi_connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
                dbapi_connection.execute("PRAGMA foreign_keys=ON")

            @event.listens_for(engine, "begin")
            def _begin(conn):
                # A writer takes the write lock now, not at its first write (two writers that both read first
                # would deadlock on the upgrade); a reader takes none (WAL: it reads the last commit)
                conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("reading") else "BEGIN IMMEDIATE")

            return engine
        return create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": connect_timeout})

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        """Database errors as one StoreError naming what failed and what to do."""
        try:
            yield
        except StoreError:
            raise
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if _LOGIN.search(detail):
                what = "refused the login"
                todo = "check the user and password in the URL (or ~/.pgpass / $PGPASSWORD)"
            elif _FILE.search(detail):
                what, todo = "cannot be opened", "check that its folder can be created and written"
            elif _UNREACHABLE.search(detail):
                what = "cannot be reached"
                todo = "check that the server runs and the host, port and database in the URL"
            else:
                what, todo = "failed", "check the store"
            raise StoreError(f"the store {self.shown} {what} ({doing}): {detail}; {todo}") from None

    def _reading(self) -> Connection:
        return self.engine.connect().execution_options(reading=True)

    def open(self) -> Store:
        with self._failing("opening it"):
            if self.url.get_backend_name() == "sqlite":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            with self._reading() as conn:
                current = self._version(conn) == SCHEMA_VERSION
            if not current:  # a new store, an older one to migrate, or a newer one to refuse: under the write lock
                with self.engine.begin() as conn:
                    self._migrate(conn)
        return self

    def _version(self, conn: Connection) -> int:
        names = set(inspect(conn).get_table_names())
        if "ortgate_meta" not in names:
            if names & {"ortgate_runs", "ortgate_variant_results"}:
                raise StoreError(f"the store {self.shown} has ortgate tables but no schema version: it was not "
                                 "made by ortgate; point --ortgate-store at another database")
            return 0
        value = conn.execute(select(meta.c.value).where(meta.c.key == META_KEY)).scalar()
        return int(value or 0)

    def _migrate(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        version = self._version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store {self.shown} has schema version {version}, newer than this ortgate's "
                             f"({SCHEMA_VERSION}): upgrade ortgate to write to it or read it")
        if version == 0:
            meta.create(conn, checkfirst=True)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target](conn)
        if version < SCHEMA_VERSION:
            conn.execute(meta.delete().where(meta.c.key == META_KEY))
            conn.execute(insert(meta).values(key=META_KEY, value=str(SCHEMA_VERSION)))

    def schema_version(self) -> int:
        with self._failing("reading its version"), self._reading() as conn:
            return self._version(conn)

    def append(self, record: RunResult, provenance: Provenance) -> StoredRun:
        """Store a run in one transaction; a run stored already (same record) is not stored twice."""
        key = run_key(record)
        with self._failing("storing a run"):
            try:
                with self.engine.begin() as conn:
                    found = conn.execute(select(runs.c.id).where(runs.c.run_key == key)).scalar()
                    if found is not None:
                        return StoredRun(found, False)
                    values = _run_values(record, provenance)
                    run_id = conn.execute(insert(runs).values(**values)).inserted_primary_key[0]
                    self._insert_variants(conn, _variant_values(record, provenance, run_id))
                    return StoredRun(run_id, True)
            except IntegrityError:  # a concurrent writer stored the same run first (PostgreSQL)
                with self._reading() as conn:
                    return StoredRun(conn.execute(select(runs.c.id).where(runs.c.run_key == key)).scalar_one(), False)

    def _insert_variants(self, conn: Connection, rows: list[dict]) -> None:
        if rows:
            conn.execute(insert(variant_results), rows)

    def _where(self, query, selection: Selection):
        if selection.machine:
            query = query.where(or_(*(or_(runs.c.machine_id.startswith(m), func.lower(runs.c.cpu).contains(m.lower()))
                                      for m in selection.machine)))
        if selection.model:
            query = query.where(or_(*(or_(runs.c.model_fingerprint.startswith(m),
                                          func.lower(runs.c.model).contains(m.lower())) for m in selection.model)))
        if selection.since is not None:
            query = query.where(runs.c.generated >= selection.since)
        if selection.branch:
            query = query.where(runs.c.git_branch == selection.branch)
        return query

    def run_ids(self, selection: Selection | None = None) -> list[int]:
        """The selected runs' ids, oldest first (the newest `last` of them, where given)."""
        selection = selection or Selection()
        query = self._where(select(runs.c.id), selection).order_by(runs.c.generated.desc(), runs.c.id.desc())
        if selection.last:
            query = query.limit(selection.last)
        with self._failing("reading runs"), self._reading() as conn:
            return [r for (r,) in conn.execute(query)][::-1]

    def run_rows(self, selection: Selection | None = None):
        """The selected runs without their records (time, machine, commit, versions, model, data), oldest first."""
        columns = [runs.c.id, runs.c.generated, runs.c.machine_id, runs.c.cpu, runs.c.git_commit, runs.c.git_branch,
                   runs.c.versions, runs.c.baseline, runs.c.model_fingerprint, runs.c.model, runs.c.data,
                   runs.c.data_fingerprint]
        ids = self.run_ids(selection)
        with self._failing("reading runs"), self._reading() as conn:
            rows = conn.execute(select(*columns).where(runs.c.id.in_(ids))).all() if ids else []
        order = {run_id: i for i, run_id in enumerate(ids)}
        return sorted(rows, key=lambda r: order[r.id])

    def variant_rows(self, run_ids: list[int], variants: tuple[str, ...] | None = None,
                     columns: tuple[str, ...] | None = None):
        """The stored figures of these runs' variants (only `columns`, where given: rows come faster)."""
        if not run_ids:
            return []
        chosen = [variant_results.c[name] for name in columns] if columns else [variant_results]
        query = select(*chosen).where(variant_results.c.run_id.in_(run_ids))
        if variants:
            query = query.where(variant_results.c.variant.in_(variants))
        with self._failing("reading results"), self._reading() as conn:
            return conn.execute(query).all()

    def records(self, selection: Selection | None = None) -> list[tuple[int, RunResult]]:
        """The selected runs' records, oldest first (what `ortgate report --store` reads)."""
        ids = self.run_ids(selection)
        with self._failing("reading records"), self._reading() as conn:
            found = dict(conn.execute(select(runs.c.id, runs.c.record).where(runs.c.id.in_(ids))).all()) if ids else {}
        return [(i, RunResult.from_dict(found[i], f"stored run {i} in {self.shown}")) for i in ids]

    def count(self) -> tuple[int, int]:
        """(runs, variant rows) stored."""
        with self._failing("counting runs"), self._reading() as conn:
            return (conn.execute(select(func.count()).select_from(runs)).scalar_one(),
                    conn.execute(select(func.count()).select_from(variant_results)).scalar_one())


def shown_target(target: str, root: Path | None = None) -> str:
    """The store as messages show it: its URL without the password."""
    try:
        return store_url(target, root).render_as_string(hide_password=True)
    except StoreError:
        return target


def store_run(target: str, root: Path | None, record: RunResult, provenance: Provenance) -> tuple[StoredRun, str]:
    """Append one run (what the pytest plugin does after a run); (the stored run, the store as shown)."""
    with Store(target, root) as store:
        return store.append(record, provenance), store.shown
