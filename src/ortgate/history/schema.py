"""The history store's tables (SQLAlchemy Core, the same on SQLite and PostgreSQL) and their versions.

`ortgate_meta` holds the schema version. Each version's migration runs in the transaction that records the
version (SQLite and PostgreSQL both roll DDL back), so a failed migration leaves the store at its old
version, whole; on PostgreSQL an advisory lock makes concurrent first writers migrate one at a time.

A run is one row of `ortgate_runs` (with its whole record as JSON, so `ortgate report --store` can rebuild
it) and one row per variant in `ortgate_variant_results`, whose columns are the figures the history
follows: reading a series never parses the records.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 1
META_KEY = "schema_version"

metadata = MetaData()

meta = Table(
    "ortgate_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

runs = Table(
    "ortgate_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # sha256 of the canonical summary record: the same run stored twice (its summary.json and its benchmark
    # JSON, or an import run again) is one row
    Column("run_key", String(64), nullable=False, unique=True),
    Column("generated", DateTime, nullable=False),  # when the run ended, UTC
    Column("stored_at", DateTime, nullable=False),
    Column("machine_id", String(64), nullable=False),
    Column("cpu", String(256), nullable=False),
    Column("machine", JSON, nullable=False),
    Column("git_commit", String(64)),
    Column("git_branch", String(256)),
    Column("git_dirty", Boolean),
    Column("versions", JSON, nullable=False),
    Column("model_fingerprint", String(128), nullable=False),
    Column("model", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("data_fingerprint", String(64)),  # None: a record from before schema 5
    Column("preset", String(128), nullable=False),
    Column("baseline", String(256), nullable=False),
    Column("source", Text, nullable=False),  # "pytest", "import <path>", ...
    Column("record", JSON, nullable=False),  # RunResult.to_dict(): what report --store reads back
)
Index("ix_ortgate_runs_machine_generated", runs.c.machine_id, runs.c.generated)

variant_results = Table(
    "ortgate_variant_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("ortgate_runs.id", ondelete="CASCADE"), nullable=False),
    Column("variant", String(256), nullable=False),
    Column("parent", String(256)),
    Column("isa", String(64)),
    Column("build", String(64)),
    Column("gate", String(64)),
    Column("accuracy", Float),
    Column("f1", Float),
    Column("accuracy_delta_pp", Float),
    Column("predictions_digest", String(64)),  # sha256 of the predictions, where the file held them
    Column("samples_per_s", Float),
    Column("ratio", Float),  # samples/s ratio to the run's baseline (record.speed.speed_of)
    Column("ratio_low", Float),
    Column("ratio_high", Float),
    Column("ratio_source", String(32)),
    Column("p99_ms", Float),
    Column("peak_rss_mb", Float),
    Column("size_mb", Float),
    Column("graph_digest", String(128)),
    UniqueConstraint("run_id", "variant", name="uq_ortgate_variant_per_run"),
)
Index("ix_ortgate_variant_results_variant", variant_results.c.variant, variant_results.c.run_id)


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[runs, variant_results])


# version -> the migration that takes the store from version - 1 to it. A new version appends one; a
# migration changes tables only through `conn` (one transaction with the version bump).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _create_v1}
