"""Stored runs as series (per variant × machine × metric, in time order) with their detected steps, each step
named by what changed between the run before it and the run after it: the commit, the library versions."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from ortgate.files import json_digest
from ortgate.history.changepoints import MIN_SIZE, detect, estimate_noise
from ortgate.history.series import METRICS, Metric, Point, RunInfo, Series, Step
from ortgate.history.store import Selection, Store

NEAR = 2  # runs either side of a step whose library upgrades its cause names (a step is placed to ±1-2 runs)
PRIOR_RUNS = 20  # the weight, in runs, of the pooled noise in a series' own (`shrunk_noise`)
# metric -> the stored columns: value, interval low, interval high
COLUMNS = {"ratio": ("ratio", "ratio_low", "ratio_high"), "accuracy": ("accuracy", None, None),
           "p99_ms": ("p99_ms", None, None), "peak_rss_mb": ("peak_rss_mb", None, None)}


def run_info(row) -> RunInfo:
    data = row.data_fingerprint or json_digest(row.data)  # a record before schema 5: its data's description
    name = "/".join(Path(row.model).parts[-2:]) if "/" in row.model else row.model
    return RunInfo(row.id, row.generated.isoformat(), row.machine_id, row.cpu, row.git_commit, row.git_branch,
                   dict(row.versions or {}), f"{row.model_fingerprint[:12]}/{data[:12]}",
                   f"{name} ({row.model_fingerprint[:8]}) on {row.data.split(':')[0][:40]}")


def cause(before: RunInfo, after: RunInfo) -> str:
    """What changed between two runs: the commit, and each library whose version moved."""
    parts = []
    if before.commit != after.commit:
        parts.append(f"commit {(before.commit or '?')[:10]} → {(after.commit or '?')[:10]}")
    return "; ".join(parts + _versions_moved(before, after))


def _versions_moved(before: RunInfo, after: RunInfo) -> list[str]:
    return [f"{name} {before.versions.get(name) or '-'} → {after.versions.get(name) or '-'}"
            for name in sorted(set(before.versions) | set(after.versions))
            if before.versions.get(name) != after.versions.get(name)]


def cause_near(points: list[Point], index: int, window: int = NEAR) -> str:
    """What changed at a step (`cause` of the runs either side of it), and the library versions that moved within
    `window` runs of it: a step is placed to within a run or two, and an upgrade is what the reader looks for."""
    here = cause(points[index - 1].run, points[index].run)
    nearby = []
    for j in range(max(1, index - window), min(len(points), index + window + 1)):
        if j != index:
            offset = f"{abs(j - index)} run{'s' if abs(j - index) > 1 else ''} {'before' if j < index else 'after'}"
            nearby += [f"{moved} ({offset}, run {points[j].run.run_id})"
                       for moved in _versions_moved(points[j - 1].run, points[j].run)]
    return "; ".join(p for p in (here, "nearby: " + "; ".join(nearby) if nearby else "") if p)


def _mean(metric: Metric, values: list[float]) -> float:
    """A segment's level in the metric's own unit: the geometric mean for log metrics."""
    if metric.log:
        return math.exp(statistics.fmean(math.log(v) for v in values))
    return statistics.fmean(values)


def steps_of(metric: Metric, points: list[Point], indices: tuple[int, ...]) -> list[Step]:
    bounds = [0, *indices, len(points)]
    steps = []
    for k, index in enumerate(indices, 1):
        before = _mean(metric, [p.value for p in points[bounds[k - 1]:index]])
        after = _mean(metric, [p.value for p in points[index:bounds[k + 1]]])
        better = (after > before) == metric.higher_is_better
        steps.append(Step(index, before, after, "improvement" if better else "regression",
                          metric.change_text(before, after), points[index].run,
                          cause_near(points, index)))
    return steps


def shrunk_noise(own: float, n: int, pooled: float | None) -> float:
    """A series' noise sd, its own estimate shrunk toward the median of its machine's series of the same metric,
    as if that one were PRIOR_RUNS runs more: 8 runs give a noisy MAD (on the saved runs of one unchanged build
    it read 0.9% for a ratio whose sd over those runs is 3.1%, and called a -3% step), 1,000 runs their own."""
    if pooled is None:
        return own
    return math.sqrt((n * own ** 2 + PRIOR_RUNS * pooled ** 2) / (n + PRIOR_RUNS))


def analyse(variant: str, machine_id: str, metric: Metric, points: list[Point], parent: str | None,
            pooled: float | None = None, values: list[float] | None = None) -> Series:
    """One series' steps; `values`: its points on the analysis scale, where the caller has them already."""
    values = values if values is not None else [metric.analysed(p.value) for p in points]
    noise = shrunk_noise(estimate_noise(values), len(values), pooled)
    found = detect(values, noise=noise, floor=metric.floor)
    run = points[-1].run
    return Series(variant, machine_id, metric, points, large_steps(metric, points, found.indices), found.noise, parent,
                  run.experiment, run.model)


def large_steps(metric: Metric, points: list[Point], indices: tuple[int, ...]) -> list[Step]:
    """The steps at least `metric.min_change` in size; dropping the smallest merges its two segments, so the
    others are measured again, until every step left is large enough."""
    kept = list(indices)
    while True:
        steps = steps_of(metric, points, tuple(kept))
        sizes = [abs(metric.analysed(s.after) - metric.analysed(s.before)) for s in steps]
        if not sizes or min(sizes) >= metric.min_change:
            return steps
        kept.pop(sizes.index(min(sizes)))


def analyse_all(raw: list[tuple[str, str, Metric, list[Point], str | None]]) -> list[Series]:
    """Each series analysed with its noise pooled over its machine's series of the same metric and experiment."""
    analysed = [[metric.analysed(p.value) for p in points] for _, _, metric, points, _ in raw]

    def pool(machine_id: str, metric: Metric, points: list[Point]) -> tuple[str, str, str]:
        return machine_id, points[0].run.experiment, metric.name

    own: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (_, machine_id, metric, points, _), values in zip(raw, analysed, strict=True):
        if len(points) >= 2 * MIN_SIZE:
            own[pool(machine_id, metric, points)].append(estimate_noise(values))
    pooled = {key: statistics.median(noises) for key, noises in own.items()}
    return [analyse(v, m, metric, points, parent, pooled.get(pool(m, metric, points)), values)
            for (v, m, metric, points, parent), values in zip(raw, analysed, strict=True)]


def _usable(metric: Metric, value) -> bool:
    return value is not None and math.isfinite(value) and (not metric.log or value > 0)


def load_series(store: Store, selection: Selection | None = None, metrics: tuple[str, ...] = tuple(METRICS),
                log=None) -> list[Series]:
    """Every series of the selected runs (per variant, machine and experiment: model and data), steps detected; the
    baseline's ratio (1 by definition) is left out."""
    selection = selection or Selection()
    runs = store.run_rows(selection)
    infos = {row.id: run_info(row) for row in runs}
    baselines = {row.id: row.baseline for row in runs}
    order = {row.id: i for i, row in enumerate(runs)}
    groups: dict[tuple[str, str, str], list] = defaultdict(list)
    wanted = ("run_id", "variant", "parent", "gate", *{c for name in metrics for c in COLUMNS[name] if c})
    at = {name: i for i, name in enumerate(wanted)}  # rows as tuples: getattr on a Row is slow
    for row in store.variant_rows(list(infos), selection.variants, wanted):
        row = tuple(row)
        info = infos[row[at["run_id"]]]
        groups[(row[at["variant"]], info.machine_id, info.experiment)].append(row)
    raw = []
    for (variant, machine_id, _), rows in sorted(groups.items()):
        rows.sort(key=lambda r: order[r[at["run_id"]]])
        parent = next((r[at["parent"]] for r in reversed(rows) if r[at["parent"]]), None)
        for name in metrics:
            metric, (value, low, high) = METRICS[name], COLUMNS[name]
            if name == "ratio" and all(baselines[r[at["run_id"]]] == variant for r in rows):
                continue
            v, lo, hi, gate, run = at[value], at.get(low), at.get(high), at["gate"], at["run_id"]
            points = [Point(infos[r[run]], r[v], None if lo is None else r[lo], None if hi is None else r[hi], r[gate])
                      for r in rows if _usable(metric, r[v])]
            if points:
                raw.append((variant, machine_id, metric, points, parent))
    series = analyse_all(raw)
    if log:
        log(f"{len(series)} series from {len(runs)} runs, {sum(len(s.steps) for s in series)} steps")
    return series


def failing(series: list[Series], recent: int | None = None) -> list[Series]:
    """The series whose newest step is a regression (within the newest `recent` runs of the series, if given):
    what fails CI."""
    out = []
    for s in series:
        step = s.newest_step
        if step is not None and step.kind == "regression" and (recent is None or step.index >= len(s.points) - recent):
            out.append(s)
    return out
