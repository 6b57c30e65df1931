"""Calibrate the step detector of run histories (`ortgate.history.changepoints`) on synthetic series.

    python benchmarks/calibrate_steps.py --noise 0.031 0.049 --trials 300 --seed 1 --out ortgate-steps

Three tables, all written to steps.md and steps.json: pipeline, spread, single-series.

The pipeline table (first; what the README quotes): the procedure `ortgate history` and CI run
(`ortgate.history.analysis.analyse_all`). A machine has --series (19) ratio series, all with the same noise sd (log
scale); each series is divided by its own noise estimate shrunk toward the median of the machine's own estimates
(`shrunk_noise`, as if that median were PRIOR_RUNS runs more), with the ratio metric's floor (0.005), and searched
at each penalty of --penalties (MIN_SIZE and CLIP as shipped); `machine_noise` below does what `analyse_all` does
(tests/test_changepoints.py checks that it gives the same noise and steps).

- detection: one series of the machine gets a step of each size in --steps (either direction) after --before flat
  runs, the others stay flat; after each new run (every series gets a point) the machine's noise is estimated
  again and the stepped series searched; detected after k runs as in the single-series table below.
  --pipeline-trials machines per setting.
- false steps of flat machines of N=100 runs (--false-machines machines, each --series series): steps in each
  series' analysis after the last run (final), and the CI procedure after each run t = 6..N: "CI failing", the
  series' newest step is within the newest 5 runs; "CI new", a step within the newest 5 runs that the analysis
  after run t - 1 did not have within ±2. Per 100 runs of a series (events / (machines · series · N) · 100).
- the rule: the smallest penalty whose CI-new rate, at its one-sided 95% upper bound, is at most --max-false per
  100 runs for both noise kinds at every noise level (false steps only; detection is reported, not used). The
  bound counts the events as Poisson or, where larger, by their spread between machines (a machine's series share
  its pooled noise).

The same unit-sd series serve every noise level, step size and penalty (common random numbers), so while the
floor stays below the noise the false-step figures repeat across noise levels, and a step of the same size in sd
(5% at 3.1% and 8% at 4.9%: 1.57 sd) is found alike. --jobs worker processes (2) run the settings; each draws its
own seeded series, so the figures do not depend on --jobs. Defaults take about 1-2.5 min (pipeline), 1-1.5 min
(spread) and 1.5 min (single-series) on 2 cores; --spread none and --no-single leave those tables out.

The spread table (second): the pipeline table's procedure, but the noise sd differs between a machine's series, as
measured (per-variant sd of the log same-run ratio over 8 saved runs: 2.4, 2.6, 2.9, 3.1, 3.1, 3.2, 4.2, 4.9%).
The pooled noise is then wrong for most series: a series noisier than the machine's median is divided by less
than its sd (shrunk toward the median: the 4.9% series by 16% at 20 runs, 9% at 50) and has more false steps than the
pipeline table's. The --series sds are spaced evenly on the log scale from LOW to HIGH (--spread, 0.020 0.049):
the median series then has sqrt(LOW·HIGH), 3.13% (the measured median, 3.1%) and the noisiest the measured
largest, 4.9%. Chosen over the measured values' quantiles interpolated to 19 series (2.4-4.9%, the same median):
its noisiest quarter is noisier (4.0-4.9% against 3.6-4.9%), so its figures err toward more false steps; the
quiet end (2.0% against 2.4%) only lowers the all-series figures a little. Reported per penalty and noise kind:
- false steps (final, CI failing, CI new and its 95% bound, as in the pipeline table) of all series and of the
  noisiest quarter (round(--series / 4): 5 of 19, 4.0-4.9%), --spread-machines (80) flat machines per kind (the
  pipeline table's unit-sd series, and more of them), and CI new of each series in steps.json;
- detection as in the pipeline table, the step on the noisiest series or on the median-noise one,
  --spread-trials (600) machines per cell;
- the pipeline table's rule applied to it, over all series and over the noisiest quarter (reported; the pipeline
  table's choice does not use it).

The single-series table (third; how PENALTY, MIN_SIZE and CLIP were first chosen): each series divided by its
own noise estimate alone.

For each setting of the detector (penalty, with or without × log(n), MIN_SIZE, clipping of lone runs) and each
noise (sd of the log same-run ratio; Gaussian, and Student-t with df=5 scaled to the same sd):

- detection: a flat series of --before runs, then a 5% step (log(1.05), either direction). As CI does it, the
  detector runs on the whole series after each new run; the step counts as detected after k runs (k = 1..5
  post-step runs seen) if the detection on y[:s+k] has an index within ±2 of s. Rates are cumulative (found at
  or before k); median k counts an undetected step as > 5.
- false steps of a flat series, N=100 and N=1000 runs: steps found per 100 runs.
- the CI procedure on a flat series of 100 runs: after each run, is there a step in the last 5 runs (CI would
  fail): failing runs per 100 runs, and new false steps per 100 runs (a step in the last 5 runs that the
  previous run's detection did not have within ±2).

The detector divides each series by its own estimated sd, so the false-step figures do not depend on the noise
level (simulated once per noise kind, at sd 1; the ratio metric's floor, 0.005, is below every noise given).
All series come from seeded numpy Generators and are the same for every setting (common random numbers).
The setting chosen: the one with the best mean detection within 5 runs among those with at most --max-false
false steps per 100 runs (flat N=100, N=1000 and new in the CI procedure) for both noise kinds, at the one-sided
95% upper bound of each simulated rate (the false-step limit first, then detection; never tuned on detection).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ortgate.history.analysis import PRIOR_RUNS, shrunk_noise
from ortgate.history.changepoints import CLIP, MIN_SIZE, detect, estimate_noise
from ortgate.history.series import METRICS

STEP = math.log(1.05)
WINDOW = 5  # CI looks for steps in the last this many runs, and allows this many runs to detect one
TOLERANCE = 2  # a detection within ±this many runs of the true step counts
KINDS = ("gaussian", "t5")
RATIO = METRICS["ratio"]  # the metric of the pipeline table: log scale, floor 0.005, min_change 0 (no step dropped)


@dataclass(frozen=True)
class Setting:
    penalty: float
    log_n: bool
    min_size: int
    clip: float | None

    @property
    def label(self) -> str:
        pen = f"{self.penalty:g}·log n" if self.log_n else f"{self.penalty:g}"
        return f"pen {pen}, min_size {self.min_size}, clip {self.clip if self.clip is not None else 'none'}"

    def detect(self, y: np.ndarray) -> tuple[int, ...]:
        return detect(y, penalty=self.penalty, min_size=self.min_size, clip=self.clip, log_n=self.log_n).indices


GRID = ([Setting(p, False, 3, 3.0) for p in (8.0, 10.0, 12.0, 14.0, 16.0)]
        + [Setting(p, False, 2, 3.0) for p in (10.0, 12.0, 14.0)]
        + [Setting(p, False, 3, None) for p in (10.0, 12.0, 14.0)]
        + [Setting(p, True, 3, 3.0) for p in (2.5, 3.0)])
FALSE = ("flat100", "flat1000", "ci_new")  # the false-step figures the choice limits (per 100 runs)
Z95 = 1.645  # one-sided 95%: the limit must hold for the simulation's upper bound, not just its estimate


def noise(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-sd noise: Gaussian, or Student-t with df=5 divided by its sd (sqrt(5/3)) - heavier tails, same sd."""
    if kind == "gaussian":
        return rng.standard_normal(shape)
    return rng.standard_t(5, shape) / math.sqrt(5 / 3)


def series(seed: int, kind_index: int, trials: int, before: int, noises: list[float]) -> dict:
    """All the synthetic series for one noise kind, each simulation from its own seeded Generator."""
    kind = KINDS[kind_index]
    rngs = [np.random.default_rng([seed, kind_index, i]) for i in range(3 + len(noises))]
    stepped = []
    for j, sd in enumerate(noises):
        rng = rngs[3 + j]
        y = sd * noise(rng, kind, (trials, before + WINDOW))
        y[:, before:] += STEP * rng.choice([-1.0, 1.0], size=(trials, 1))
        stepped.append(y)
    return {"flat100": noise(rngs[0], kind, (trials, 100)),
            "flat1000": noise(rngs[1], kind, (max(1, trials // 5), 1000)),
            "ci": noise(rngs[2], kind, (trials, 100)), "stepped": stepped}


def false_steps(setting: Setting, flat: np.ndarray) -> float:
    """Steps found per 100 runs of flat series."""
    return 100.0 * sum(len(setting.detect(y)) for y in flat) / flat.size


def ci_false_alarms(setting: Setting, flat: np.ndarray) -> dict:
    """The CI procedure on flat series: per 100 runs, runs that would fail (a step in the last WINDOW runs), new
    false steps (such a step not in the previous run's detection within ±TOLERANCE), and failing runs among the
    first 20 runs of each series (where the noise estimate rests on few runs)."""
    failing = new = early = 0
    for y in flat:
        previous: tuple[int, ...] = ()
        for t in range(1, y.size + 1):
            found = setting.detect(y[:t])
            recent = [i for i in found if i >= t - WINDOW]
            if recent:
                failing += 1
                early += t <= 20
                new += any(all(abs(i - j) > TOLERANCE for j in previous) for i in recent)
            previous = found
    per = 100.0 / flat.size
    return {"ci_failing": failing * per, "ci_new": new * per, "ci_failing_first20": early * per}


def detection(setting: Setting, stepped: np.ndarray, before: int) -> dict:
    """The CI procedure on series with a step at `before`: cumulative detection rates after k = 1..WINDOW
    post-step runs, and the median k (inf when at most half are found within WINDOW)."""
    first = np.full(len(stepped), np.inf)
    for trial, y in enumerate(stepped):
        for k in range(1, WINDOW + 1):
            if any(abs(i - before) <= TOLERANCE for i in setting.detect(y[:before + k])):
                first[trial] = k
                break
    rates = {f"k{k}": float(np.mean(first <= k)) for k in range(1, WINDOW + 1)}
    return {**rates, "median_k": float(np.median(first))}


def evaluate(setting: Setting, data: list[dict], noises: list[float], before: int) -> list[dict]:
    """One row per noise kind × noise level for one setting."""
    rows = []
    for kind, sims in zip(KINDS, data, strict=True):
        false = {"flat100": false_steps(setting, sims["flat100"]), "flat1000": false_steps(setting, sims["flat1000"]),
                 **ci_false_alarms(setting, sims["ci"]),
                 "runs": {"flat100": sims["flat100"].size, "flat1000": sims["flat1000"].size,
                          "ci_new": sims["ci"].size}}
        for sd, stepped in zip(noises, sims["stepped"], strict=True):
            rows.append({**asdict(setting), "label": setting.label, "noise": sd, "kind": kind, **false,
                         **detection(setting, stepped, before)})
    return rows


def upper(row: dict, figure: str) -> float:
    """A one-sided 95% upper bound of a false-step rate (per 100 runs), counting its events as Poisson."""
    runs = row["runs"][figure]
    events = row[figure] * runs / 100.0
    return 100.0 * (events + Z95 * math.sqrt(max(events, 1.0))) / runs


def choose(rows: list[dict], max_false: float) -> dict | None:
    """The setting with the best mean detection within WINDOW runs among those whose false steps (FALSE: flat
    N=100, N=1000, new in the CI procedure) are at most `max_false` per 100 runs for every noise kind, at the
    simulation's 95% upper bound (a setting on the limit passes or fails by the seed otherwise)."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    ok = {label: rs for label, rs in by_label.items()
          if all(upper(r, f) <= max_false for r in rs for f in FALSE)}
    if not ok:
        return None
    label = max(ok, key=lambda lb: (np.mean([r[f"k{WINDOW}"] for r in ok[lb]]), -ok[lb][0]["penalty"]))
    return {"label": label, **{k: ok[label][0][k] for k in ("penalty", "log_n", "min_size", "clip")}}


def render(rows: list[dict], chosen: dict | None, seconds: float, before: int) -> str:
    """The single-series Markdown table, one row per setting × noise kind × noise level."""
    head = ("| noise | kind | penalty | min_size | clip | det k=3 | det k=4 | det k=5 | median k "
            "| flat N=100 /100 runs | flat N=1000 /100 runs | CI failing /100 runs | CI new /100 runs |")
    lines = [f"## Single series, each divided by its own noise estimate ({seconds:.0f} s)", "",
             f"Detection: 5% step after {before} flat runs, the detector run after each new run, found within ±2 runs, "
             "cumulative. False steps do not depend on the noise level (each series is divided by its own sd).",
             "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        pen = f"{r['penalty']:g}·log n" if r["log_n"] else f"{r['penalty']:g}"
        lines.append(f"| {r['noise'] * 100:.1f}% | {r['kind']} | {pen} | {r['min_size']} | "
                     f"{r['clip'] if r['clip'] is not None else 'none'} | {r['k3']:.0%} | {r['k4']:.0%} | "
                     f"{r['k5']:.0%} | {median_text(r['median_k'])} | {r['flat100']:.2f} | {r['flat1000']:.2f} | "
                     f"{r['ci_failing']:.2f} | {r['ci_new']:.2f} |")
    lines += ["", f"Chosen: {chosen['label']}" if chosen else "Chosen: none meets the false-step limit",
              "(the best detection within 5 runs among settings whose false steps per 100 runs - flat N=100, "
              "N=1000, new in CI - stay at most the limit at their 95% upper bound, for both noise kinds)"]
    return "\n".join(lines) + "\n"


def median_text(k: float) -> str:
    return f"{k:g}" if math.isfinite(k) else f">{WINDOW}"


# The pipeline table: series divided by their machine's pooled noise, as `ortgate history` and CI analyse them.

def machine_noise(values: np.ndarray) -> list[float]:
    """The noise sd each series of one machine × metric is divided by in `analysis.analyse_all`; `values`: one row
    per series, all of the same length, on the analysis scale. Its own estimate, shrunk (`shrunk_noise`) toward the
    median of the own estimates of the series with at least 2·MIN_SIZE points (none: not shrunk)."""
    n = values.shape[1]
    own = [estimate_noise(v) for v in values]
    pooled = statistics.median(own) if n >= 2 * MIN_SIZE else None
    return [shrunk_noise(o, n, pooled) for o in own]


def pipeline_steps(y: np.ndarray, sd: float, penalty: float) -> tuple[int, ...]:
    """The steps `analysis.analyse` finds in a ratio series divided by `sd` (MIN_SIZE and CLIP as shipped)."""
    return detect(y, noise=sd, floor=RATIO.floor, penalty=penalty).indices


def pipeline_data(seed: int, kind_index: int, part: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sd noise for one noise kind and part ("detection": machines × series × runs, plus each machine's step
    direction; "false": flat machines), the same for every noise level, step size and penalty."""
    rng = np.random.default_rng([seed, 10 + kind_index, ("detection", "false").index(part)])
    return noise(rng, KINDS[kind_index], shape), rng.choice([-1.0, 1.0], size=shape[0])


def pipeline_detection(unit: np.ndarray, signs: np.ndarray, sd, step: float, before: int,
                       penalties: list[float], target: int = 0) -> dict[float, dict]:
    """Per penalty: the CI procedure on machines (`unit`: machines × series × runs, unit sd, scaled to `sd`: one
    sd, or one per series) whose series `target` moves by log(1 + step) (direction `signs`) at `before`; after
    each new run the machine's noise is estimated again and that series searched. Cumulative detection after
    k = 1..WINDOW runs and the median k."""
    scale = np.asarray(sd, dtype=float).reshape(-1, 1)
    first = {p: np.full(len(unit), np.inf) for p in penalties}
    for trial, machine in enumerate(unit):
        y = scale * machine[:, :before + WINDOW]
        y[target, before:] += signs[trial] * math.log1p(step)
        pending = list(penalties)
        for k in range(1, WINDOW + 1):
            if not pending:
                break
            t = before + k
            sd0 = machine_noise(y[:, :t])[target]
            for p in list(pending):
                if any(abs(i - before) <= TOLERANCE for i in pipeline_steps(y[target, :t], sd0, p)):
                    first[p][trial] = k
                    pending.remove(p)
    return {p: {**{f"k{k}": float(np.mean(f <= k)) for k in range(1, WINDOW + 1)}, "median_k": float(np.median(f))}
            for p, f in first.items()}


def bound(per_machine: np.ndarray, runs: int) -> float:
    """The one-sided 95% upper bound of a rate per 100 runs from its events per machine: Poisson, or the spread
    between machines where that is larger (a machine's series share its pooled noise, so their alarms are not
    independent)."""
    events = float(per_machine.sum())
    spread = len(per_machine) * float(np.var(per_machine, ddof=1)) if len(per_machine) > 1 else 0.0
    return 100.0 * (events + Z95 * math.sqrt(max(events, 1.0, spread))) / runs


def false_counts(unit: np.ndarray, sd, penalties: list[float]) -> dict[float, np.ndarray]:
    """Per penalty: flat machines (`unit`: machines × series × N, unit sd, scaled to `sd`: one sd, or one per
    series) analysed after each run t = 2·MIN_SIZE..N (before that no series has a step) as CI does; events per
    figure × machine × series, the figures: steps after the last run ("final"), runs whose analysis has the
    series' newest step within the newest WINDOW runs ("ci_failing"), and runs with a step there that the
    analysis after t - 1 did not have within ±TOLERANCE ("ci_new")."""
    machines, width, n = unit.shape
    scale = np.asarray(sd, dtype=float).reshape(-1, 1)
    counts = {p: np.zeros((3, machines, width)) for p in penalties}  # final, failing, new
    for m, machine in enumerate(unit):
        y = scale * machine
        previous: dict[float, list[tuple[int, ...]]] = {p: [()] * width for p in penalties}
        for t in range(2 * MIN_SIZE, n + 1):
            sds = machine_noise(y[:, :t])
            for p in penalties:
                count, before = counts[p], previous[p]
                for j in range(width):
                    found = pipeline_steps(y[j, :t], sds[j], p)
                    recent = [i for i in found if i >= t - WINDOW]
                    if recent:
                        count[1, m, j] += 1
                        count[2, m, j] += any(all(abs(i - q) > TOLERANCE for q in before[j]) for i in recent)
                    before[j] = found
                    if t == n:
                        count[0, m, j] += len(found)
    return counts


def false_figures(counts: np.ndarray, n: int, series: list[int] | None = None) -> dict:
    """The false-step figures per 100 runs of a series (`counts`: figure × machine × series from `false_counts`,
    of machines of `n` runs; `series`: those counted, else all), with CI new's 95% upper bound."""
    c = counts if series is None else counts[:, :, series]
    per_machine = c.sum(axis=2)
    runs = c.shape[1] * c.shape[2] * n
    return {"final": 100.0 * per_machine[0].sum() / runs, "ci_failing": 100.0 * per_machine[1].sum() / runs,
            "ci_new": 100.0 * per_machine[2].sum() / runs, "ci_new_upper": bound(per_machine[2], runs), "runs": runs}


def pipeline_false(unit: np.ndarray, sd, penalties: list[float]) -> dict[float, dict]:
    """Per penalty: the false-step figures (`false_counts`, `false_figures`) of flat machines, all series."""
    return {p: false_figures(c, unit.shape[2]) for p, c in false_counts(unit, sd, penalties).items()}


def pipeline_task(task: tuple) -> tuple[tuple, dict]:
    """One simulation, from its own seeded data (so the figures do not depend on --jobs): pipeline table, a
    (kind, noise, step) detection or a (kind, noise) false-step one; spread table, a (kind, stepped series, step)
    detection or the false-step events of one chunk of a kind's flat machines."""
    part, kind_index, what, step, o = task
    if part in ("detection", "spread-detection"):
        unit, signs = pipeline_data(o["seed"], kind_index, "detection",
                                    (o["trials"], o["series"], o["before"] + WINDOW))
        if part == "detection":
            return task, pipeline_detection(unit, signs, what, step, o["before"], o["penalties"])
        return task, pipeline_detection(unit, signs, o["sds"], step, o["before"], o["penalties"], target=what)
    unit, _ = pipeline_data(o["seed"], kind_index, "false", (o["machines"], o["series"], o["runs"]))
    if part == "false":
        return task, pipeline_false(unit, what, o["penalties"])
    return task, false_counts(unit[what[0]:what[1]], o["sds"], o["penalties"])


def run_tasks(tasks: list[tuple], jobs: int, log, table: str) -> dict[tuple, dict]:
    """`pipeline_task` on each task (in `jobs` worker processes where more than 1), by task[:4]."""
    started = time.perf_counter()
    results: dict[tuple, dict] = {}
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs) as pool:
            done = pool.map(pipeline_task, tasks)
            for n, (task, result) in enumerate(done, 1):
                results[task[:4]] = result
                progress(log, table, n, len(tasks), task, result, started)
    else:
        for n, task in enumerate(tasks, 1):
            results[task[:4]] = (result := pipeline_task(task)[1])
            progress(log, table, n, len(tasks), task, result, started)
    return results


def simulate_pipeline(*, noises: list[float], steps: list[float], penalties: list[float], series: int = 19,
                      trials: int = 400, machines: int = 12, runs: int = 100, before: int = 50, seed: int = 1,
                      kinds: tuple[str, ...] = KINDS, jobs: int = 1, log=None) -> list[dict]:
    """The pipeline table's rows, one per penalty × noise kind × noise level: the false-step figures of
    `pipeline_false` and, per step size (a key of "detection": the size as text), those of `pipeline_detection`.
    `trials`: machines per detection setting; `machines`: flat machines of `runs` runs per false-step setting."""
    options = {"seed": seed, "trials": trials, "series": series, "before": before, "machines": machines,
               "runs": runs, "penalties": [float(p) for p in penalties]}
    tasks = [("false", KINDS.index(kind), sd, None, options) for kind in kinds for sd in noises]
    tasks += [("detection", KINDS.index(kind), sd, step, options) for kind in kinds for sd in noises for step in steps]
    results = run_tasks(tasks, jobs, log, "pipeline")
    rows = []
    for p in options["penalties"]:
        for kind in kinds:
            for sd in noises:
                k = KINDS.index(kind)
                rows.append({"penalty": p, "min_size": MIN_SIZE, "clip": CLIP, "kind": kind, "noise": sd,
                             "series": series, **results[("false", k, sd, None)][p],
                             "detection": {f"{step:g}": results[("detection", k, sd, step)][p] for step in steps}})
    return rows


# The spread table: the pipeline with a different noise sd for each series of the machine.

def spread_sds(low: float, high: float, series: int) -> list[float]:
    """The noise sds of a machine's `series` series, spaced evenly on the log scale from `low` to `high`: the
    median series has sqrt(low·high) (3.13% for 2.0% and 4.9%)."""
    return [float(v) for v in np.geomspace(low, high, series)]


def noisiest_quarter(series: int) -> list[int]:
    """The indices of the noisiest quarter (rounded, at least 1) of `series` series whose sds rise with the index."""
    return list(range(series - max(1, round(series / 4)), series))


def simulate_spread(*, low: float, high: float, steps: list[float], penalties: list[float], series: int = 19,
                    trials: int = 400, machines: int = 12, runs: int = 100, before: int = 50, seed: int = 1,
                    kinds: tuple[str, ...] = KINDS, jobs: int = 1, chunk: int = 10, log=None) -> dict:
    """The spread table: machines of `series` ratio series with noise sds `spread_sds(low, high, series)`,
    analysed as the pipeline table's (same unit-sd series: common random numbers). One row per penalty × kind:
    false steps (`false_figures`) of all series ("all") and of the noisiest quarter ("noisiest"), CI new per 100
    runs of each series ("ci_new_by_series"), and per stepped series ("noisiest": the last, "median": the middle
    one) and step size, `pipeline_detection`. `trials`: machines per detection setting; `machines`: flat
    machines of `runs` runs per kind, simulated `chunk` machines a task."""
    sds = spread_sds(low, high, series)
    quarter, middle = noisiest_quarter(series), series // 2
    targets = {"noisiest": series - 1, "median": middle}
    options = {"seed": seed, "trials": trials, "series": series, "before": before, "machines": machines,
               "runs": runs, "penalties": [float(p) for p in penalties], "sds": sds}
    chunks = [(start, min(start + chunk, machines)) for start in range(0, machines, chunk)]
    tasks = [("spread-false", KINDS.index(kind), c, None, options) for kind in kinds for c in chunks]
    tasks += [("spread-detection", KINDS.index(kind), target, step, options)
              for kind in kinds for target in targets.values() for step in steps]
    results = run_tasks(tasks, jobs, log, "spread")
    rows = []
    for p in options["penalties"]:
        for kind in kinds:
            k = KINDS.index(kind)
            counts = np.concatenate([results[("spread-false", k, c, None)][p] for c in chunks], axis=1)
            by_series = 100.0 * counts[2].sum(axis=0) / (machines * runs)
            rows.append({"penalty": p, "kind": kind, "all": false_figures(counts, runs),
                         "noisiest": false_figures(counts, runs, quarter),
                         "ci_new_by_series": [float(v) for v in by_series],
                         "detection": {name: {f"{step:g}": results[("spread-detection", k, target, step)][p]
                                              for step in steps} for name, target in targets.items()}})
    return {"low": low, "high": high, "series": series, "sds": sds, "noisiest": quarter, "median": middle,
            "rows": rows}


def progress(log, table: str, n: int, total: int, task: tuple, result: dict, started: float) -> None:
    if log is None:
        return
    part, kind_index, what, step, o = task
    kind = KINDS[kind_index]
    if part == "false":
        figures = " ".join(f"pen {p:g} new {r['ci_new']:.2f} (bound {r['ci_new_upper']:.2f})"
                           for p, r in result.items())
        what = f"false steps, {kind} @ {what:.3f}"
    elif part == "spread-false":
        figures = " ".join(f"pen {p:g} new {100.0 * c[2].sum() / c[2].size / o['runs']:.2f}"
                           for p, c in result.items())
        what = f"false steps, {kind}, machines {what[0]}-{what[1] - 1}"
    else:
        figures = " ".join(f"pen {p:g} {r[f'k{WINDOW}']:.0%}" for p, r in result.items())
        at = f"{what:.3f}" if part == "detection" else f"series {what} ({o['sds'][what]:.3f})"
        what = f"{step:.0%} step found in {WINDOW}, {kind} @ {at}"
    log(f"[{table} {n}/{total}] {what}: {figures} ({time.perf_counter() - started:.0f}s)")


def choose_penalty(rows: list[dict], max_false: float) -> float | None:
    """The smallest penalty whose CI-new rate is at most `max_false` per 100 runs at its 95% upper bound for every
    noise kind and level (false steps only: detection does not enter)."""
    for p in sorted({r["penalty"] for r in rows}):
        if all(r["ci_new_upper"] <= max_false for r in rows if r["penalty"] == p):
            return p
    return None


def render_pipeline(rows: list[dict], chosen: float | None, seconds: float, args: argparse.Namespace) -> str:
    """The pipeline Markdown table, one row per penalty × noise kind × noise level, and the rule's choice."""
    steps = list(rows[0]["detection"]) if rows else []
    head = ("| noise | kind | penalty | "
            + " | ".join(f"{float(s):.0%} step k=3 / 4 / 5, median k" for s in steps)
            + " | final N=100 /100 runs | CI failing /100 runs | CI new /100 runs | CI new 95% bound |")
    lines = [f"## Pipeline: {args.series} ratio series per machine, noise pooled over the machine ({seconds:.0f} s)",
             "",
             f"Each series divided by its own noise estimate shrunk toward the median of the machine's "
             f"(`shrunk_noise`, PRIOR_RUNS {PRIOR_RUNS}), floor {RATIO.floor:g}, min_size {MIN_SIZE}, clip {CLIP:g} "
             "(`ortgate.history.analysis`). Detection: one series of the machine steps after "
             f"{args.before} flat runs (either direction), the others stay flat; after each run the machine is "
             f"analysed again; found within ±{TOLERANCE} runs after k runs, cumulative; {args.pipeline_trials} "
             f"machines per cell. False steps: {args.false_machines} flat machines × {args.series} series × "
             f"{args.runs} runs per row, per 100 runs of a series; the bound is one-sided 95%.",
             "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = " | ".join(f"{d['k3']:.0%} / {d['k4']:.0%} / {d['k5']:.0%}, {median_text(d['median_k'])}"
                           for d in r["detection"].values())
        lines.append(f"| {r['noise'] * 100:.1f}% | {r['kind']} | {r['penalty']:g} | {cells} | {r['final']:.2f} | "
                     f"{r['ci_failing']:.2f} | {r['ci_new']:.2f} | {r['ci_new_upper']:.2f} |")
    lines.append("")
    if chosen is None:
        lines.append(f"Rule: no penalty keeps CI new at most {args.max_false:g} per 100 runs at its 95% bound.")
    else:
        lines.append(f"Rule: the smallest penalty whose CI-new rate is at most {args.max_false:g} per 100 runs at its "
                     f"95% bound for both noise kinds at every noise level: **{chosen:g}**. Its detection "
                     f"(k=3 / 4 / 5, median k):")
        for r in rows:
            if r["penalty"] == chosen:
                lines.append(f"- {r['noise'] * 100:.1f}% {r['kind']}: " + "; ".join(
                    f"{float(s):.0%} {d['k3']:.0%} / {d['k4']:.0%} / {d['k5']:.0%}, {median_text(d['median_k'])}"
                    for s, d in r["detection"].items()))
    return "\n".join(lines) + "\n"


def choose_spread_penalty(spread: dict, max_false: float) -> float | None:
    """The smallest penalty whose CI-new rate is at most `max_false` per 100 runs at its 95% upper bound for both
    noise kinds, over all series and over the noisiest quarter."""
    rows = spread["rows"]
    for p in sorted({r["penalty"] for r in rows}):
        if all(r[group]["ci_new_upper"] <= max_false for r in rows if r["penalty"] == p
               for group in ("all", "noisiest")):
            return p
    return None


def render_spread(spread: dict, chosen: float | None, seconds: float, args: argparse.Namespace) -> str:
    """The spread section: a false-step table (all series, noisiest quarter) and a detection table (step on the
    noisiest or the median-noise series), one row per penalty × noise kind (× stepped series)."""
    sds, quarter, middle = spread["sds"], spread["noisiest"], spread["median"]
    k = len(sds)
    span = (f"{100 * sds[quarter[0]]:.1f}–{100 * sds[-1]:.1f}%" if len(quarter) > 1 else f"{100 * sds[-1]:.1f}%")
    top = f"noisiest {len(quarter)} ({span})"
    lines = [f"## Pipeline, noise spread across the machine's series ({seconds:.0f} s)", "",
             f"As the pipeline table, but the machine's {k} series have noise sds spaced evenly on the log scale from "
             f"{100 * sds[0]:.1f}% to {100 * sds[-1]:.1f}% (median series {100 * sds[middle]:.2f}%; the default "
             "2.0-4.9% puts the median and the noisiest series at the measured median and largest: per-variant sd "
             "of the log same-run ratio over 8 saved runs 2.4, 2.6, 2.9, 3.1, 3.1, 3.2, 4.2, 4.9%), each divided "
             "by its own noise estimate shrunk toward the median of the machine's, as shipped: the noisiest are "
             "divided by "
             f"less than their sd. False steps: {args.spread_machines} flat machines × {k} series × {args.runs} runs "
             f"per row, per 100 runs of a series, of all series and of the {top}; the bound is one-sided 95%. "
             f"Detection: one series steps after {args.before} flat runs (either direction), the noisiest "
             f"({100 * sds[-1]:.1f}%) or the median-noise one ({100 * sds[middle]:.2f}%); found within "
             f"±{TOLERANCE} runs after k runs, cumulative; {args.spread_trials} machines per cell.", ""]
    head = (f"| kind | penalty | all {k}: final N={args.runs} /100 runs | CI failing | CI new | CI new 95% bound "
            f"| {top}: final N={args.runs} /100 runs | CI failing | CI new | CI new 95% bound |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in spread["rows"]:
        cells = " | ".join(f"{g['final']:.2f} | {g['ci_failing']:.2f} | {g['ci_new']:.2f} | {g['ci_new_upper']:.2f}"
                           for g in (r["all"], r["noisiest"]))
        lines.append(f"| {r['kind']} | {r['penalty']:g} | {cells} |")
    steps = list(spread["rows"][0]["detection"]["noisiest"]) if spread["rows"] else []
    head = ("| stepped series | kind | penalty | "
            + " | ".join(f"{float(s):.0%} step k=3 / 4 / 5, median k" for s in steps) + " |")
    lines += ["", head, "|" + "---|" * (head.count("|") - 1)]
    for r in spread["rows"]:
        for name, index in (("noisiest", k - 1), ("median", middle)):
            cells = " | ".join(f"{d['k3']:.0%} / {d['k4']:.0%} / {d['k5']:.0%}, {median_text(d['median_k'])}"
                               for d in r["detection"][name].values())
            lines.append(f"| {name} ({100 * sds[index]:.1f}%) | {r['kind']} | {r['penalty']:g} | {cells} |")
    lines.append("")
    if chosen is None:
        lines.append(f"Rule on this table: no penalty keeps CI new at most {args.max_false:g} per 100 runs at its 95% "
                     f"bound, all series and the {top}, for both noise kinds.")
    else:
        lines.append(f"Rule on this table: the smallest penalty whose CI-new rate is at most {args.max_false:g} per "
                     f"100 runs at its 95% bound for both noise kinds, all series and the {top}: **{chosen:g}**.")
    return "\n".join(lines) + "\n"


def finite(value):
    """JSON without Infinity: an undetected median k is null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.031, 0.049], help="noise sds (log scale)")
    parser.add_argument("--trials", type=int, default=300,
                        help="single-series table: series per simulation (N=1000: a fifth) (300)")
    parser.add_argument("--seed", type=int, default=1, help="(1)")
    parser.add_argument("--before", type=int, default=50, help="flat runs before the step (50)")
    parser.add_argument("--max-false", type=float, default=1.0, help="false steps per 100 runs allowed (1)")
    parser.add_argument("--series", type=int, default=19, help="pipeline: ratio series per machine (19)")
    parser.add_argument("--steps", type=float, nargs="+", default=[0.05, 0.08, 0.10],
                        help="pipeline: step sizes, relative (0.05 0.08 0.10)")
    parser.add_argument("--penalties", type=float, nargs="+", default=[8.0, 10.0, 12.0, 14.0],
                        help="pipeline: penalties (8 10 12 14)")
    parser.add_argument("--pipeline-trials", type=int, default=600,
                        help="pipeline: machines per detection setting (600)")
    parser.add_argument("--false-machines", type=int, default=40,
                        help="pipeline: flat machines per false-step setting, each --series series (40)")
    parser.add_argument("--runs", type=int, default=100, help="pipeline: runs of a flat machine (100)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="pipeline: worker processes; the figures do not depend on it (2)")
    parser.add_argument("--spread", nargs="+", default=["0.020", "0.049"], metavar="LOW HIGH",
                        help="spread table: the lowest and highest noise sd of a machine's series, spaced evenly on "
                             "the log scale (0.020 0.049: median series 3.13%%); 'none' leaves the table out")
    parser.add_argument("--spread-trials", type=int, default=600,
                        help="spread table: machines per detection setting (600)")
    parser.add_argument("--spread-machines", type=int, default=80,
                        help="spread table: flat machines per noise kind, each --series series (80)")
    parser.add_argument("--no-single", action="store_true", help="leave out the single-series table")
    parser.add_argument("--out", type=Path, default=Path("ortgate-steps"))
    args = parser.parse_args(argv)
    if [v.lower() for v in args.spread] == ["none"]:
        spread_range = None
    else:
        try:
            spread_range = tuple(float(v) for v in args.spread)
        except ValueError:
            spread_range = ()
        if len(spread_range) != 2 or not 0 < spread_range[0] <= spread_range[1]:
            parser.error("--spread: LOW HIGH (0 < LOW <= HIGH), or none")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipeline = simulate_pipeline(noises=args.noise, steps=args.steps, penalties=args.penalties, series=args.series,
                                 trials=args.pipeline_trials, machines=args.false_machines, runs=args.runs,
                                 before=args.before, seed=args.seed, jobs=args.jobs,
                                 log=lambda line: print(line, flush=True))
    chosen_penalty = choose_penalty(pipeline, args.max_false)
    pipeline_seconds = time.perf_counter() - started
    spread, spread_penalty, spread_seconds = None, None, 0.0
    if spread_range is not None:
        spread = simulate_spread(low=spread_range[0], high=spread_range[1], steps=args.steps,
                                 penalties=args.penalties, series=args.series, trials=args.spread_trials,
                                 machines=args.spread_machines, runs=args.runs, before=args.before, seed=args.seed,
                                 jobs=args.jobs, log=lambda line: print(line, flush=True))
        spread_penalty = choose_spread_penalty(spread, args.max_false)
        spread_seconds = time.perf_counter() - started - pipeline_seconds
    simulated = pipeline_seconds + spread_seconds
    rows, chosen = [], None
    if not args.no_single:
        data = [series(args.seed, i, args.trials, args.before, args.noise) for i in range(len(KINDS))]
        for n, setting in enumerate(GRID, 1):
            rows += (new := evaluate(setting, data, args.noise, args.before))
            worst = max(r[f] for r in new for f in FALSE)
            top = max(upper(r, f) for r in new for f in FALSE)
            print(f"[single {n}/{len(GRID)}] {setting.label}: worst false {worst:.2f}/100 runs (bound {top:.2f}), "
                  "found in 5: " + " ".join(f"{r['kind']}@{r['noise']:.3f} {r['k5']:.0%}" for r in new)
                  + f" ({time.perf_counter() - started:.0f}s)", flush=True)
        chosen = choose(rows, args.max_false)
    seconds = time.perf_counter() - started
    command = ("python benchmarks/calibrate_steps.py "
               + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    text = (f"Step detector calibration (`{command}`, {seconds:.0f} s).\n\n"
            + render_pipeline(pipeline, chosen_penalty, pipeline_seconds, args)
            + ("" if spread is None else "\n" + render_spread(spread, spread_penalty, spread_seconds, args))
            + ("" if args.no_single else "\n" + render(rows, chosen, seconds - simulated, args.before)))
    (args.out / "steps.md").write_text(text)
    payload = {"command": command, "seconds": seconds, "args": {k: str(v) for k, v in vars(args).items()},
               "window": WINDOW, "tolerance": TOLERANCE,
               "pipeline": {"seconds": pipeline_seconds, "prior_runs": PRIOR_RUNS, "floor": RATIO.floor,
                            "steps": args.steps, "chosen_penalty": chosen_penalty,
                            "rows": [finite(r) for r in pipeline]},
               "spread": None if spread is None else {"seconds": spread_seconds, "chosen_penalty": spread_penalty,
                                                      **spread, "rows": [finite(r) for r in spread["rows"]]},
               "single": None if args.no_single else {"seconds": seconds - simulated, "step": STEP,
                                                      "chosen": chosen, "rows": [finite(r) for r in rows]}}
    (args.out / "steps.json").write_text(json.dumps(payload, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
