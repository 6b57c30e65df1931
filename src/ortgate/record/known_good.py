"""The variants a saved run built: evidence, for `verdict.known_good`, that they are known to build."""

from __future__ import annotations

from pathlib import Path

from ortgate.record.result import read_run_record
from ortgate.verdict.known_good import KnownGood

BUILT = ("built", "cache hit")


def known_good_from_run_record(path: Path) -> KnownGood:
    """The variants that built (or came from the cache) in the run recorded in `path`: a summary.json or a
    pytest-benchmark JSON written by the suite. Raises RecordError if it is not a run record this version reads."""
    record = read_run_record(Path(path))
    where = f"built in the run recorded in {path} ({record.generated}, model {record.model.source})"
    return KnownGood({row.variant: (where,) for row in record.variants if row.build in BUILT},
                     (f"the run recorded in {path}",))
