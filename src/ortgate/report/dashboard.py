"""A static HTML dashboard of run history (`ortgate history --html DIR`), like asv's published site.

`index.html` has one section per machine (its CPU and id) with a table of variants: per metric the newest
value and the newest step (its change, kind and cause), and the variant's latest accuracy gate. Below, one
block per variant × machine (its own anchor) holds one PNG figure with a panel per metric that has points
(x: run order, labelled by commit or time): the values, the runs' own intervals as a band, the detected
steps as vertical lines (red: regression, green: improvement) with the segments' means, and the runs where
the variant failed its accuracy gate as red crosses in every panel. The block lists the steps in words and
links to the variant's parent and to the same variant on the other machines.

The whole site is built in a temporary folder next to DIR and then moved in: a failed build leaves DIR as
it was (an earlier dashboard stays whole), and `index.html` is replaced last, in one rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.files import atomic_write_text
from ortgate.history.series import METRICS, Metric, RunInfo, Series, Step

# Plot colours, chosen to be found again in a screenshot (tests/test_dashboard.py): nothing else on the page
# uses them.
VALUE_COLOR = "#00a0a0"  # teal: the values
BAND_COLOR = "#9fdede"  # the runs' own intervals
REGRESSION_COLOR = "#e8000b"  # a step for the worse, and the runs whose gate failed
IMPROVEMENT_COLOR = "#00b000"
MEAN_COLOR = "#222222"
DPI = 80
FIG_WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 1.7
TICKS = 6
DENSE = 150  # points in a panel above which the marks get thinner


class DashboardError(OrtgateError):
    """The dashboard cannot be built or written."""


@dataclass
class Group:
    """One variant on one machine: its series by metric name (the METRICS order first) and their runs."""

    variant: str
    machine_id: str
    series: dict[str, Series] = field(default_factory=dict)
    parent: str | None = None
    experiment: str = ""  # the model and data measured (a machine's runs of two models are two groups)
    model: str = ""

    @property
    def slug(self) -> str:
        return safe_name(f"{self.variant}@{self.machine_id}" + (f"#{self.experiment}" if self.experiment else ""))

    @property
    def key(self) -> tuple[str, str, str]:
        return self.variant, self.machine_id, self.experiment

    @property
    def anchor(self) -> str:
        return "v-" + self.slug

    @property
    def plot_name(self) -> str:
        return f"{self.slug}.png"

    def runs(self) -> list[RunInfo]:
        """Every run any of its metrics has a point in, in time order (the figure's shared x axis)."""
        seen = {p.run.run_id: p.run for s in self.series.values() for p in s.points}
        return sorted(seen.values(), key=lambda r: (r.generated, r.run_id))

    def failed_runs(self) -> set[int]:
        return {p.run.run_id for s in self.series.values() for p in s.points if p.gate == "FAIL"}

    def latest_gate(self) -> str | None:
        gated = [p for s in self.series.values() for p in s.points if p.gate]
        return max(gated, key=lambda p: (p.run.generated, p.run.run_id)).gate if gated else None


@dataclass
class Machine:
    id: str
    cpu: str
    groups: list[Group] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "m-" + safe_name(self.id)


def safe_name(text: str) -> str:
    """A file name and HTML id for `text`: its letters, digits, `.`, `_` and `-` (the rest as `-`), plus a
    short digest of the whole text, so that two names that differ only in other characters stay apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "x"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _metric_order(name: str) -> tuple[int, str]:
    names = list(METRICS)
    return (names.index(name), name) if name in names else (len(names), name)


def group_series(series: list[Series]) -> list[Machine]:
    """The series by machine (in first-seen order), and on each by variant and experiment; metrics in the METRICS
    order."""
    machines: dict[str, Machine] = {}
    groups: dict[tuple[str, str, str], Group] = {}
    for s in series:
        if not s.points:
            continue
        machine = machines.setdefault(s.machine_id, Machine(s.machine_id, s.points[0].run.cpu))
        group = groups.get((s.variant, s.machine_id, s.experiment))
        if group is None:
            group = Group(s.variant, s.machine_id, experiment=s.experiment, model=s.model)
            groups[group.key] = group
            machine.groups.append(group)
        if s.metric.name in group.series:
            raise DashboardError(f"two series for {s.key}: give each variant × machine × metric once")
        group.series[s.metric.name] = s
        group.parent = group.parent or s.parent
    for group in groups.values():
        group.series = dict(sorted(group.series.items(), key=lambda item: _metric_order(item[0])))
    return list(machines.values())


# --- the figure -------------------------------------------------------------------------------------------

def _band(s: Series, xs: list[int], ax) -> bool:
    """The runs' own intervals as a band (gaps where a run gives none); whether there was any."""
    if not any(p.low is not None and p.high is not None for p in s.points):
        return False
    nan = float("nan")
    low = [p.low if p.low is not None and p.high is not None else nan for p in s.points]
    high = [p.high if p.low is not None and p.high is not None else nan for p in s.points]
    if len(xs) == 1:
        ax.errorbar(xs, [s.points[0].value], yerr=[[s.points[0].value - low[0]], [high[0] - s.points[0].value]],
                    fmt="none", ecolor=BAND_COLOR, capsize=3)
    else:
        ax.fill_between(xs, low, high, color=BAND_COLOR, alpha=0.6, linewidth=0, label="run interval")
    return True


def _steps(s: Series, xs: list[int], ax) -> None:
    """Each step as a vertical line between its two runs, and each segment's mean as a horizontal segment."""
    bounds = [0] + [st.index for st in s.steps] + [len(xs)]
    means = [s.steps[0].before] + [st.after for st in s.steps] if s.steps else []
    for i, mean in enumerate(means):
        lo, hi = bounds[i], bounds[i + 1] - 1
        if lo <= hi:
            ax.hlines(mean, xs[lo] - 0.4, xs[hi] + 0.4, colors=MEAN_COLOR, linestyles="--", linewidth=1.4,
                      zorder=4, label="segment mean" if i == 0 else None)
    for st in s.steps:
        if not 0 < st.index < len(xs):
            continue
        regression = st.kind == "regression"
        ax.axvline((xs[st.index - 1] + xs[st.index]) / 2, linewidth=1.6, zorder=5,
                   color=REGRESSION_COLOR if regression else IMPROVEMENT_COLOR,
                   label=f"step: {'regression' if regression else 'improvement'}")


def _panel(ax, s: Series, x_of: dict[int, int], failed: set[int]) -> None:
    xs = [x_of[p.run.run_id] for p in s.points]
    values = [p.value for p in s.points]
    _band(s, xs, ax)
    dense = len(xs) > DENSE  # thinner marks, or the values hide the band and the means
    ax.plot(xs, values, color=VALUE_COLOR, linewidth=0.6 if dense else 1.2, marker="o",
            markersize=1.2 if dense else 3, label="value")
    _steps(s, xs, ax)
    bad = [(x, p.value) for x, p in zip(xs, s.points, strict=True) if p.run.run_id in failed]
    if bad:
        ax.plot([b[0] for b in bad], [b[1] for b in bad], linestyle="none", marker="x", markersize=7,
                markeredgewidth=1.8, color=REGRESSION_COLOR, zorder=6, label="accuracy gate FAIL")
    metric: Metric = s.metric
    unit = metric.unit if metric.scale == 1.0 else f"changes in {metric.unit}"
    ax.set_title(f"{metric.name}: {metric.label} ({unit})", fontsize=8, loc="left")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _legend(fig, axes) -> None:
    """One legend for the figure, each kind of mark once (placed above the panels: no overlap search)."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="upper center", ncol=min(len(entries), 6), fontsize=7,
               frameon=False)


def figure_height_in(panels: int) -> float:
    """A figure's height: its panels and the legend and tick labels around them (the page's <img> says it too)."""
    return PANEL_HEIGHT_IN * panels + 0.9


def plot_group(group: Group, plt, path: Path) -> None:
    """One figure for a variant on a machine: a panel per metric, sharing the runs as the x axis."""
    runs = group.runs()
    x_of = {run.run_id: i for i, run in enumerate(runs)}
    failed = group.failed_runs()
    n = len(group.series)
    height = figure_height_in(n)
    fig, axes = plt.subplots(n, 1, sharex=True, squeeze=False, figsize=(FIG_WIDTH_IN, height), dpi=DPI)
    axes = [row[0] for row in axes]
    try:
        for ax, s in zip(axes, group.series.values(), strict=True):
            _panel(ax, s, x_of, failed)
        ticks = sorted({round(i * (len(runs) - 1) / (TICKS - 1)) for i in range(TICKS)})
        axes[-1].set_xticks(ticks)
        axes[-1].set_xticklabels([f"{runs[t].label}\n{runs[t].generated[:10]}" for t in ticks], fontsize=7)
        axes[-1].set_xlim(-0.5, len(runs) - 0.5)
        axes[-1].set_xlabel("run (oldest to newest): commit or time", fontsize=7)
        _legend(fig, axes)
        fig.subplots_adjust(left=0.08, right=0.95, top=1 - 0.45 / height, bottom=0.5 / height, hspace=0.35)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def render_plots(machines: list[Machine], plots_dir: Path, log: Callable[[str], None] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    groups = [g for m in machines for g in m.groups]
    for i, group in enumerate(groups, 1):
        if log is not None:
            log(f"dashboard: plot {i}/{len(groups)}: {group.variant} on {group.machine_id}")
        plot_group(group, plt, plots_dir / group.plot_name)


# --- the page ---------------------------------------------------------------------------------------------

def step_text(step: Step) -> str:
    """`-6.1% regression at <commit> (<time>): <cause>`."""
    run = step.run
    where = f"at {run.label} ({run.generated[:16].replace('T', ' ')})"
    return f"{step.change} {step.kind} {where}: {step.cause or 'nothing recorded changed'}"


def _cell(s: Series | None) -> str:
    if s is None:
        return "<td>–</td>"
    value = html.escape(s.metric.value_text(s.points[-1].value))
    step = s.newest_step
    if step is None:
        return f"<td>{value}</td>"
    return (f'<td class="{html.escape(step.kind)}">{value}<br><small>newest step: '
            f"{html.escape(step_text(step))}</small></td>")


def _gate_cell(gate: str | None) -> str:
    cls = {"FAIL": "fail", "pass": "pass"}.get(gate or "", "")
    return f'<td class="{cls}">{html.escape(gate or "–")}</td>'


def machine_section(machine: Machine) -> str:
    metrics = sorted({name for g in machine.groups for name in g.series}, key=_metric_order)
    several = len({g.experiment for g in machine.groups}) > 1  # runs of several models or data sets here
    head = "".join(f"<th>{html.escape(name)}</th>" for name in metrics)
    rows = "".join(
        f'<tr><th><a href="#{g.anchor}">{html.escape(g.variant)}</a>'
        + (f"<br><small>{html.escape(g.model)}</small>" if several else "") + f"</th>{_gate_cell(g.latest_gate())}"
        + "".join(_cell(g.series.get(name)) for name in metrics) + "</tr>"
        for g in machine.groups)
    return (f'<section id="{machine.anchor}"><h2>{html.escape(machine.cpu)} <small>[{html.escape(machine.id)}]'
            f"</small></h2>\n<table><thead><tr><th>variant</th><th>latest gate</th>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def _links(group: Group, by_key: dict[tuple[str, str, str], Group]) -> str:
    parts = []
    if group.parent:
        parent = by_key.get((group.parent, group.machine_id, group.experiment))
        parts.append(f'parent: <a href="#{parent.anchor}">{html.escape(group.parent)}</a>' if parent
                     else f"parent: {html.escape(group.parent)} (no runs on this machine)")
    others = [g for (v, _, e), g in by_key.items() if v == group.variant and e == group.experiment and g is not group]
    if others:
        parts.append("on other machines: " + ", ".join(
            f'<a href="#{g.anchor}">{html.escape(g.machine_id)}</a>' for g in others))
    return f"<p>{' · '.join(parts)}</p>" if parts else ""


def group_block(group: Group, by_key: dict[tuple[str, str, str], Group], cpu: str) -> str:
    steps = [f"<li><b>{html.escape(name)}</b>: {html.escape(step_text(st))}</li>"
             for name, s in group.series.items() for st in s.steps]
    listed = f"<ul>{''.join(steps)}</ul>" if steps else "<p>No steps detected.</p>"
    runs = len(group.runs())
    alt = f"history of {group.variant} on {group.machine_id}"
    width = round(FIG_WIDTH_IN * DPI)
    height = round(figure_height_in(len(group.series)) * DPI)
    return (f'<section class="block" id="{group.anchor}"><h3>{html.escape(group.variant)} on '
            f"{html.escape(cpu)} <small>[{html.escape(group.machine_id)}], {runs} run(s)"
            + (f", {html.escape(group.model)}" if group.model else "") + "</small></h3>\n"
            f"{_links(group, by_key)}\n"
            f'<img src="plots/{html.escape(group.plot_name)}" alt="{html.escape(alt)}" width="{width}" '
            f'height="{height}">\n<h4>Steps</h4>{listed}</section>')


STYLE = """body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
a { color: #5b3b8c; }
table { border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
thead th { background: #f2f2f2; }
td.regression, td.fail { background: #fde2e2; }
td.improvement, td.pass { background: #e3f5e3; }
section.block { border-top: 1px solid #ddd; margin-top: 1.5rem; }
img { border: 1px solid #ddd; max-width: 100%; height: auto; }"""

LEGEND = ("Per metric: the newest value and the newest detected step (its change, kind, the first run after it "
          "and what changed there). Figures: teal the values, the band the runs' own intervals, vertical lines "
          "the steps (red regression, green improvement), dashed the segments' means, red crosses the runs "
          "where the variant failed its accuracy gate.")


def render_index(machines: list[Machine], title: str) -> str:
    by_key = {g.key: g for m in machines for g in m.groups}
    nav = " · ".join(f'<a href="#{m.anchor}">{html.escape(m.id)}</a>' for m in machines)
    sections = "\n".join(machine_section(m) for m in machines)
    blocks = "\n".join(group_block(g, by_key, m.cpu) for m in machines for g in m.groups)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{STYLE}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(LEGEND)}</p>
<p>Machines: {nav}</p>
{sections}
{blocks}
</body></html>
"""


# --- writing ----------------------------------------------------------------------------------------------

def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DashboardError(f"{out_dir} is a file, not a folder: give the dashboard a folder (or move the file)")
    if (out_dir / "index.html").is_dir():
        raise DashboardError(f"{out_dir / 'index.html'} is a folder: remove it, or give the dashboard another folder")


def _move_in(stage: Path, out_dir: Path) -> None:
    """A new folder is renamed into place whole; into an existing one the plots go first, then index.html
    in one rename (an earlier index.html is whole until then)."""
    if not out_dir.exists():
        os.replace(stage, out_dir)
        return
    old = stage / ".old-plots"
    had_plots = (out_dir / "plots").exists() or (out_dir / "plots").is_symlink()
    if had_plots:
        os.replace(out_dir / "plots", old)
    try:
        os.replace(stage / "plots", out_dir / "plots")
    except OSError:
        if had_plots:  # put the earlier plots back: the earlier index.html still shows them
            os.replace(old, out_dir / "plots")
        raise
    os.replace(stage / "index.html", out_dir / "index.html")


def write_dashboard(series: list[Series], out_dir: Path, *, title: str = "ortgate history",
                    log: Callable[[str], None] | None = None) -> Path:
    """Writes the dashboard of `series` to `out_dir` (index.html, plots/) and returns index.html's path."""
    out_dir = Path(out_dir)
    machines = group_series(series)
    if not machines:
        raise DashboardError("no history to show: the series have no points (record some runs first)")
    _check_target(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise DashboardError(f"cannot write the dashboard next to {out_dir}: {exc}; "
                             "give a folder in a writable place") from exc
    try:
        render_plots(machines, stage / "plots", log)
        atomic_write_text(stage / "index.html", render_index(machines, title))
        _move_in(stage, out_dir)
    except OSError as exc:
        raise DashboardError(f"cannot write the dashboard to {out_dir}: {exc}; "
                             "check that the folder is writable and the disk has room") from exc
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(stage)
    if log is not None:
        log(f"dashboard: wrote {out_dir / 'index.html'}")
    return out_dir / "index.html"
