"""Runs in and out of the store as files: backfill from what runs wrote (pytest-benchmark JSON, saved under
`.benchmarks/` by --benchmark-autosave or named by --benchmark-json, and summary.json), plain JSON of stored
runs (export, and import elsewhere), and Bencher Metric Format (BMF) JSON for `bencher run --adapter json`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.files import atomic_write_text
from ortgate.history.store import Provenance, Store
from ortgate.record.result import RecordError, RunResult, read_json
from ortgate.record.speed import speed_of

EXPORT_SCHEMA = "ortgate-history"
EXPORT_VERSION = 1


class InterchangeError(OrtgateError):
    """A file given to import or export cannot be used."""


def _runs_in_document(doc: dict, path: Path) -> Iterator[tuple[RunResult, Provenance]]:
    """The runs a JSON document holds; RecordError when it holds none this ortgate can read."""
    if doc.get("schema") == EXPORT_SCHEMA:
        if doc.get("version") != EXPORT_VERSION:
            raise RecordError(f"{path} is an ortgate history export of version {doc.get('version')}; this ortgate "
                              f"reads version {EXPORT_VERSION}")
        for i, run in enumerate(doc.get("runs") or []):
            record = RunResult.from_dict(run.get("record"), f"{path} run {i}")
            yield record, Provenance(f"import {path.name}: {run.get('source', 'export')}", run.get("commit_info"),
                                     run.get("predictions"))
        return
    if "benchmarks" in doc and "ortgate" in doc:
        record = RunResult.from_dict(doc["ortgate"], f"the ortgate section of {path}")
        yield record, Provenance(f"import {path}", doc.get("commit_info"), record.predictions)
        return
    if "schema" in doc:
        yield RunResult.from_dict(doc, str(path)), Provenance(f"import {path}")
        return
    raise RecordError(f"{path} holds no ortgate run: give summary.json files, pytest-benchmark JSON written by the "
                      "ortgate suite, or an `ortgate history export --json` file")


def _json_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if p.is_file())
    if path.is_file():
        return [path]
    raise InterchangeError(f"{path} does not exist: give run files (summary.json, pytest-benchmark JSON) or folders "
                           "of them (.benchmarks/, a results folder)")


def read_runs(paths: list[Path], log=None) -> tuple[list[tuple[RunResult, Provenance]], list[str]]:
    """The runs in these files and folders, and a line for each file skipped. A file named directly must hold
    a run; in a folder, JSON files that hold none (other tools' files) are skipped and said."""
    found, skipped = [], []
    for given in paths:
        for path in _json_files(given):
            try:
                found += list(_runs_in_document(read_json(path, "a run file"), path))
            except RecordError as exc:
                if path == given:
                    raise InterchangeError(str(exc)) from None
                skipped.append(f"{path}: {exc}")
                if log:
                    log(f"skipped {path}: {exc}")
    return found, skipped


def import_runs(store: Store, paths: list[Path], log=None) -> dict:
    """Store every run of these files, one transaction each (a bad file stores nothing of itself)."""
    runs, skipped = read_runs(paths, log)
    stored = already = 0
    for i, (record, provenance) in enumerate(runs, 1):
        result = store.append(record, provenance)
        stored, already = stored + result.created, already + (not result.created)
        if log and (i % 50 == 0 or i == len(runs)):
            log(f"{i}/{len(runs)} runs read: {stored} stored, {already} stored already")
    return {"runs": len(runs), "stored": stored, "already": already, "skipped": skipped}


def export_json(store: Store, selection, path: Path) -> int:
    """The selected runs' records as one plain JSON file (what `import` reads back)."""
    records = store.records(selection)
    doc = {"schema": EXPORT_SCHEMA, "version": EXPORT_VERSION, "store": store.shown,
           "runs": [{"run_id": i, "source": f"run {i} of {store.shown}", "record": r.to_dict()} for i, r in records]}
    atomic_write_text(path, json.dumps(doc, indent=1))
    return len(records)


def _metric(value: float | None, low: float | None = None, high: float | None = None) -> dict | None:
    if value is None:
        return None
    out = {"value": float(value)}
    if low is not None and high is not None:
        out |= {"lower_value": float(low), "upper_value": float(high)}
    return out


def bencher_metrics(record: RunResult) -> dict:
    """One run as BMF: a benchmark per variant; measures `throughput` (Bencher's built-in, samples/s end to
    end), `speed-ratio` (to the run's baseline, with the run's interval), `accuracy` (%), `p99-latency-ms` and
    `peak-rss-mb` where measured. The machine is Bencher's testbed (`bencher run --testbed`)."""
    out = {}
    for v in record.variants:
        speed = speed_of(v, record.baseline)
        low, high = speed.interval if speed is not None and speed.interval else (None, None)
        measures = {
            "throughput": _metric(v.samples_per_s),
            "speed-ratio": _metric(speed.ratio if speed else None, low, high),
            "accuracy": _metric(None if v.accuracy is None else 100 * v.accuracy),
            "p99-latency-ms": _metric(v.latency.p99_ms if v.latency else None,
                                      *(v.latency.intervals.get("p99", (None, None)) if v.latency else (None, None))),
            "peak-rss-mb": _metric(v.footprint.peak_rss_mb if v.footprint else None),
        }
        measures = {k: m for k, m in measures.items() if m is not None}
        if measures:
            out[v.variant] = measures
    return out


def export_bencher(store: Store, selection, path: Path) -> int:
    """The newest selected run as BMF JSON (Bencher takes one run per report); its run id."""
    records = store.records(replace(selection, last=1))
    if not records:
        raise InterchangeError(f"no stored run in {store.shown} matches: widen --machine/--since/--branch")
    run_id, record = records[-1]
    atomic_write_text(path, json.dumps(bencher_metrics(record), indent=1))
    return run_id
