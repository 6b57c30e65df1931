"""Cross-machine report: which variant wins where, from the summary.json of runs on several machines.

Rows are variants (their ISA preset shown), columns are machines (by CPU fingerprint). Each cell holds
the variant's accuracy, samples/s and speed ratio to that machine's own baseline with the ratio's interval.
Byte-identical graphs are shown once: the others' cells say `= <variant>` (the record's `same_graph_as`, or
equal graph digests). A variant is called the fastest on a machine (★) only where its interval separates
from every other passing variant's there; otherwise the report says the fastest are indistinguishable
there and names them. A quantized variant that lost accuracy on one machine (its gate failed there, or it
scored lower there than on another machine) is flagged. The report makes no speed claim across machines:
each ratio is to its own machine's baseline.
"""

from __future__ import annotations

import base64
import html
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.files import atomic_write_text
from ortgate.record.result import RunResult, VariantResult, read_run_record
from ortgate.record.speed import Speed, speed_of

LOST_ACCURACY_PP = 0.1  # a variant more than this below its best machine "lost accuracy" there
ELIGIBLE_GATES = ("pass", "baseline")


@dataclass
class Cell:
    accuracy: float | None = None
    samples_per_s: list[float] = field(default_factory=list)
    speeds: list[Speed] = field(default_factory=list)
    gate: str | None = None
    best: bool = False
    tied: list[str] = field(default_factory=list)  # the fastest cannot be told apart: the others tied with it
    flag: str | None = None
    same_as: str | None = None  # byte-identical graph: shown once, in that variant's cell

    @property
    def median_samples_per_s(self) -> float | None:
        return statistics.median(self.samples_per_s) if self.samples_per_s else None

    @property
    def median_ratio(self) -> float | None:
        return statistics.median(s.ratio for s in self.speeds) if self.speeds else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The span of the runs' intervals (one run: its interval); None if any measurement has none."""
        if not self.speeds or any(s.interval is None for s in self.speeds):
            return None
        return min(s.interval[0] for s in self.speeds), max(s.interval[1] for s in self.speeds)


def separated(faster: Cell, slower: Cell) -> bool:
    """Whether `faster`'s interval lies wholly above `slower`'s (a cell without an interval never does)."""
    a, b = faster.interval, slower.interval
    return a is not None and b is not None and a[0] > b[1]


@dataclass
class Fastest:
    """The verdict on one machine: `best` where its interval separates from all others, else `tied`."""

    best: str | None = None
    runner_up: str | None = None
    tied: list[str] = field(default_factory=list)  # indistinguishable from the fastest, the fastest first


@dataclass
class Machine:
    id: str
    label: str
    fingerprint: dict
    runs: int = 0


@dataclass
class CrossReport:
    machines: list[Machine]
    variants: list[str]
    isa: dict[str, str | None]
    cells: dict[tuple[str, str], Cell]
    fastest: dict[str, Fastest] = field(default_factory=dict)

    def cell(self, variant: str, machine_id: str) -> Cell | None:
        return self.cells.get((variant, machine_id))


def _machine_of(run: RunResult, path: Path) -> Machine:
    fp = run.machine
    if not isinstance(fp, dict) or not fp.get("arch"):
        raise OrtgateError(f"{path} has no machine fingerprint: is it an ortgate summary.json?")
    from ortgate.isa import fingerprint_id

    mid = fp.get("id") or fingerprint_id(fp)
    flags = ",".join(fp.get("flags", [])) or "no int8 flags"
    return Machine(mid, f"{fp.get('model_name') or fp['arch']} ({flags}) [{mid}]", fp)


def load_summaries(paths: list[Path]) -> list[tuple[Path, RunResult]]:
    runs = [(Path(path), read_run_record(path)) for path in paths]
    if not runs:
        raise OrtgateError("give at least one summary.json")
    return runs


def _check_same_experiment(runs: list[tuple[Path, RunResult]]) -> None:
    """Only runs of the same model on the same data are comparable across machines."""
    def what(run: RunResult) -> tuple:
        return (run.model.fingerprint, run.data)

    first_path, first = runs[0]
    for path, run in runs[1:]:
        if what(run) != what(first):
            raise OrtgateError(
                f"{path} measured another model or data set than {first_path} "
                f"(model {what(run)[0]!s:.12} on {what(run)[1]!r} vs {what(first)[0]!s:.12} on {what(first)[1]!r}); "
                "a cross-machine report compares one model on one data set"
            )


def same_graphs(rows: list[VariantResult], order: list[str]) -> dict[str, str]:
    """Each variant -> the variant that stands for its byte-identical graph (the first in `order`), from
    `same_graph_as` and equal graph digests in any of the rows (one machine's runs)."""
    parent: dict[str, str] = {}

    def find(v: str) -> str:
        while parent.get(v, v) != v:
            v = parent[v]
        return v

    def join(a: str, b: str) -> None:
        first, second = sorted((find(a), find(b)), key=lambda v: order.index(v) if v in order else len(order))
        if first != second:
            parent[second] = first

    by_digest: dict[str, str] = {}
    for row in rows:
        if row.same_graph_as:
            join(row.variant, row.same_graph_as)
        if digest := row.graph_digest:
            join(by_digest.setdefault(digest, row.variant), row.variant)
    return {row.variant: find(row.variant) for row in rows}


def _add_row(cells: dict[tuple[str, str], Cell], mid: str, run: RunResult, row: VariantResult, stands_for: str) -> None:
    """Adds one run's row to the cell of the variant that stands for its graph; a `same_graph_as` row's values
    are copies of its original's (not measured again) and add nothing."""
    if stands_for != row.variant:
        cells.setdefault((row.variant, mid), Cell()).same_as = stands_for
    cell = cells.setdefault((stands_for, mid), Cell())
    if row.same_graph_as:
        return
    if row.accuracy is not None:
        cell.accuracy = row.accuracy
        cell.gate = row.gate if cell.gate != "FAIL" else "FAIL"
    if row.samples_per_s is not None:
        cell.samples_per_s.append(row.samples_per_s)
    if (speed := speed_of(row, run.baseline)) is not None:
        cell.speeds.append(speed)


def build_report(runs: list[tuple[Path, RunResult]]) -> CrossReport:
    _check_same_experiment(runs)
    machines: dict[str, Machine] = {}
    variants: list[str] = []
    isa: dict[str, str | None] = {}
    rows: dict[str, list[tuple[RunResult, VariantResult]]] = {}
    for path, run in runs:
        machine = _machine_of(run, path)
        machines.setdefault(machine.id, machine).runs += 1
        for row in run.variants:
            if row.variant not in variants:
                variants.append(row.variant)
            isa.setdefault(row.variant, row.isa)
            rows.setdefault(machine.id, []).append((run, row))
    cells: dict[tuple[str, str], Cell] = {}
    for mid, measured in rows.items():
        stands_for = same_graphs([row for _, row in measured], variants)
        for run, row in measured:
            _add_row(cells, mid, run, row, stands_for[row.variant])
    report = CrossReport(list(machines.values()), variants, isa, cells)
    for machine in report.machines:
        report.fastest[machine.id] = _rank(report, machine.id)
    _flag_lost_accuracy(report)
    return report


def _rank(report: CrossReport, mid: str) -> Fastest:
    """★ the fastest passing variant only where its interval lies above every other's; else name the tied."""
    eligible = sorted(((c.median_ratio, v) for v in report.variants
                       if (c := report.cell(v, mid)) and not c.same_as and c.gate in ELIGIBLE_GATES and c.speeds),
                      key=lambda item: -item[0])
    if not eligible:
        return Fastest()
    top = eligible[0][1]
    top_cell = report.cells[(top, mid)]
    tied = [v for _, v in eligible[1:] if not separated(top_cell, report.cells[(v, mid)])]
    runner_up = eligible[1][1] if len(eligible) > 1 else None
    if not tied:
        top_cell.best = True
        return Fastest(best=top, runner_up=runner_up)
    group = [top, *tied]
    for v in group:
        report.cells[(v, mid)].tied = [o for o in group if o != v]
    return Fastest(runner_up=runner_up, tied=group)


def _flag_lost_accuracy(report: CrossReport) -> None:
    for vid in report.variants:
        if not report.isa.get(vid):
            continue
        scored = {m.id: c.accuracy for m in report.machines
                  if (c := report.cell(vid, m.id)) and c.accuracy is not None}
        if not scored:
            continue
        top = max(scored.values())
        for mid, accuracy in scored.items():
            cell = report.cells[(vid, mid)]
            if cell.gate == "FAIL":
                cell.flag = "failed its accuracy gate on this machine"
            elif (top - accuracy) * 100 > LOST_ACCURACY_PP:
                cell.flag = f"{(top - accuracy) * 100:.2f}pp below its best machine"


def _fmt(value: float | None, pattern: str) -> str:
    return pattern.format(value) if value is not None else "–"


def ratio_text(cell: Cell) -> str:
    """The median ratio over the machine's runs with its interval, or that it has none."""
    ratio = cell.median_ratio
    if ratio is None:
        return "–"
    if all(s.source == "baseline" for s in cell.speeds):
        return f"{ratio:.2f}x (baseline)"
    interval = cell.interval
    return f"{ratio:.2f}x [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else f"{ratio:.2f}x (no interval)"


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if cell.same_as:
        return f"= {cell.same_as}"
    text = f"{_fmt(cell.accuracy, '{:.4f}')} · {_fmt(cell.median_samples_per_s, '{:.1f}')}/s · {ratio_text(cell)}"
    return ("★ " if cell.best else "≈ " if cell.tied else "") + text + (" ⚠" if cell.flag else "")


def fastest_text(report: CrossReport, mid: str) -> str:
    """The machine's verdict in words: a claim of the fastest only where the intervals separate."""
    verdict = report.fastest.get(mid) or Fastest()

    def named(vid: str) -> str:
        return f"{vid} {ratio_text(report.cells[(vid, mid)])}"

    if verdict.best and verdict.runner_up:
        return (f"★ {named(verdict.best)}: faster than every other passing variant here "
                f"(its interval lies above the runner-up {named(verdict.runner_up)})")
    if verdict.best:
        return f"★ {named(verdict.best)}: the only passing variant with a speed here"
    if verdict.tied:
        blind = [v for v in verdict.tied if report.cells[(v, mid)].interval is None]
        why = f"{', '.join(blind)} without an interval" if blind else "their intervals overlap the fastest's"
        return "indistinguishable here: " + ", ".join(named(v) for v in verdict.tied) + f" ({why})"
    return "no variant that passed its gate has a speed here"


LEGEND = ("Cells: accuracy · end-to-end samples/s · speed ratio to that machine's own baseline [interval] "
          "(round-robin cycles' interval where the run has one, else the same-run speed check's; over "
          "several runs of a machine, medians and the span of their intervals). ★ the fastest variant that "
          "passed its gate on that machine, only where its interval lies above every other's; ≈ tied for "
          "fastest there (indistinguishable: the intervals overlap, or a cell has none); `= X` a "
          "byte-identical graph to X, shown once in X's cell; ⚠ an ISA preset that lost accuracy there. "
          "Ratios are to each machine's own baseline: no speed is compared across machines.")


def render_markdown(report: CrossReport) -> str:
    lines = ["# ortgate cross-machine report", "", LEGEND, ""]
    for m in report.machines:
        lines.append(f"- `{m.id}`: {m.label}, {m.runs} run(s)")
    lines += ["", "| variant | preset | " + " | ".join(f"`{m.id}`" for m in report.machines) + " |",
              "|---|---" + "|---" * len(report.machines) + "|"]
    for vid in report.variants:
        cells = [cell_text(report.cell(vid, m.id)) for m in report.machines]
        lines.append(f"| {vid} | {report.isa.get(vid) or ''} | " + " | ".join(cells) + " |")
    lines += ["", "Fastest:", ""] + [f"- `{m.id}`: {fastest_text(report, m.id)}" for m in report.machines]
    flags = [(vid, m, c.flag) for vid in report.variants for m in report.machines
             if (c := report.cell(vid, m.id)) and c.flag]
    if flags:
        lines += ["", "Flags:", ""] + [f"- {vid} on `{m.id}`: {flag}" for vid, m, flag in flags]
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (speed ratio, accuracy), both higher-is-better, sorted by speed."""
    front = [p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def _errors(cells: list[Cell]) -> list[list[float]]:
    """Matplotlib's asymmetric error bars (below, above) from the cells' intervals (0 where none)."""
    spans = [(c.median_ratio - c.interval[0], c.interval[1] - c.median_ratio) if c.interval else (0.0, 0.0)
             for c in cells]
    return [[max(s[0], 0.0) for s in spans], [max(s[1], 0.0) for s in spans]]


def _plot_accuracy_vs_speed(report: CrossReport, plt, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for i, m in enumerate(report.machines):
        pts = [(c, v) for v in report.variants
               if (c := report.cell(v, m.id)) and c.median_ratio is not None and c.accuracy is not None]
        if not pts:
            continue
        color = f"C{i}"
        ax.errorbar([c.median_ratio for c, _ in pts], [c.accuracy for c, _ in pts], xerr=_errors([c for c, _ in pts]),
                    fmt="o", color=color, label=m.label[:60], alpha=0.8, capsize=3)
        for c, v in pts:
            ax.annotate(v, (c.median_ratio, c.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points",
                        color=color)
        front = pareto_front([(c.median_ratio, c.accuracy) for c, _ in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("speed ratio to the machine's baseline (end to end, with its interval)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs speed, per machine (dashed: Pareto front; identical graphs once)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_speed_by_preset(report: CrossReport, plt, path: Path) -> None:
    quantized = [v for v in report.variants if report.isa.get(v)
                 and any((c := report.cell(v, m.id)) and c.speeds for m in report.machines)]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    width = 0.8 / max(len(report.machines), 1)
    for i, m in enumerate(report.machines):
        cells = [report.cell(v, m.id) or Cell() for v in quantized]
        ax.bar([j + i * width for j in range(len(quantized))], [c.median_ratio or 0.0 for c in cells], width,
               yerr=_errors([c if c.speeds else Cell() for c in cells]) if cells else None, capsize=3,
               label=m.label[:60], color=f"C{i}")
    ax.set_xticks([j + width * (len(report.machines) - 1) / 2 for j in range(len(quantized))])
    ax.set_xticklabels([f"{v}\n({report.isa[v]})" for v in quantized], fontsize=7, rotation=15)
    ax.set_ylabel("speed ratio to baseline (with its interval)")
    ax.set_title("Speed ratio by quantization preset and machine (identical graphs once)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_plots(report: CrossReport, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "accuracy_vs_speed.png", out_dir / "speed_by_preset.png"]
    _plot_accuracy_vs_speed(report, plt, paths[0])
    _plot_speed_by_preset(report, plt, paths[1])
    return paths


def _html_cell(cell: Cell | None) -> str:
    if cell is None:
        return "<td>–</td>"
    classes = [k for k, on in (("best", cell.best), ("tied", cell.tied), ("same", cell.same_as),
                               ("flag", cell.flag)) if on]
    titles = ([f"byte-identical graph to {cell.same_as}: shown once, in its cell"] if cell.same_as else []) + (
        [f"indistinguishable here from {', '.join(cell.tied)}"] if cell.tied else []) + (
        [cell.flag] if cell.flag else [])
    title = f' title="{html.escape("; ".join(titles))}"' if titles else ""
    return f'<td class="{" ".join(classes)}"{title}>{html.escape(cell_text(cell))}</td>'


STYLE = """body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
thead th { background: #f2f2f2; }
td.best { background: #d9f7d9; font-weight: 600; }
td.tied { background: #fff6d5; }
td.same { color: #777; font-style: italic; }
td.flag { background: #fde2e2; }
figure { display: inline-block; margin: 1rem 1rem 0 0; }
img { max-width: 720px; border: 1px solid #ddd; }"""


def render_html(report: CrossReport, plots: list[Path]) -> str:
    """One self-contained page: styles inline, plots embedded as data: URLs."""
    head = "".join(f"<th>{html.escape(m.id)}<br><small>{html.escape(m.label)}</small></th>" for m in report.machines)
    rows = []
    for vid in report.variants:
        tds = "".join(_html_cell(report.cell(vid, m.id)) for m in report.machines)
        rows.append(f"<tr><th>{html.escape(vid)}</th><td>{html.escape(report.isa.get(vid) or '')}</td>{tds}</tr>")
    fastest = "".join(f"<li><code>{html.escape(m.id)}</code>: {html.escape(fastest_text(report, m.id))}</li>"
                      for m in report.machines)
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.stem.replace("_", " "))}'
        "</figcaption></figure>" for p in plots)
    legend = html.escape(LEGEND.replace("`", "")) + " Hover a cell for why."
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ortgate cross-machine report</title>
<style>
{STYLE}
</style></head><body>
<h1>ortgate cross-machine report</h1>
<p>{legend}</p>
<table><thead><tr><th>variant</th><th>preset</th>{head}</tr></thead><tbody>
{''.join(rows)}
</tbody></table>
<h2>Fastest</h2>
<ul>{fastest}</ul>
{images}
</body></html>
"""


def write_report(paths: list[Path], out_dir: Path) -> dict[str, Path]:
    return write_report_of(load_summaries(paths), out_dir)


def write_report_of(runs: list[tuple[Path, RunResult]], out_dir: Path) -> dict[str, Path]:
    """The report of runs already read (files, or a history store's records labelled by run)."""
    report = build_report(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_plots(report, out_dir)
    outputs = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    for kind, text in (("markdown", render_markdown(report)), ("html", render_html(report, plots))):
        atomic_write_text(outputs[kind], text)
    return {**outputs, **{p.stem: p for p in plots}}
