"""Cross-machine report: which variant wins where, from the summary.json of runs on several machines.

Rows are variants (their ISA preset shown), columns are machines (by CPU fingerprint). Each cell holds
the variant's accuracy, samples/s and speed ratio to that machine's own baseline; the best variant
within tolerance is marked per machine, and a quantized variant that lost accuracy on one machine
(its gate failed there, or it scored lower there than on another machine) is flagged.
"""

from __future__ import annotations

import base64
import html
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.files import atomic_write_text
from ortgate.record.result import RunResult, read_run_record

LOST_ACCURACY_PP = 0.1  # a variant more than this below its best machine "lost accuracy" there


@dataclass
class Cell:
    accuracy: float | None = None
    samples_per_s: list[float] = field(default_factory=list)
    speed_ratio: list[float] = field(default_factory=list)
    gate: str | None = None
    best: bool = False
    flag: str | None = None

    @property
    def median_samples_per_s(self) -> float | None:
        return statistics.median(self.samples_per_s) if self.samples_per_s else None

    @property
    def median_ratio(self) -> float | None:
        return statistics.median(self.speed_ratio) if self.speed_ratio else None


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


def build_report(runs: list[tuple[Path, RunResult]]) -> CrossReport:
    _check_same_experiment(runs)
    machines: dict[str, Machine] = {}
    variants: list[str] = []
    isa: dict[str, str | None] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for path, run in runs:
        machine = _machine_of(run, path)
        machines.setdefault(machine.id, machine).runs += 1
        for row in run.variants:
            vid = row.variant
            if vid not in variants:
                variants.append(vid)
            isa.setdefault(vid, row.isa)
            cell = cells.setdefault((vid, machine.id), Cell())
            if row.accuracy is not None:
                cell.accuracy = row.accuracy
                cell.gate = row.gate if cell.gate != "FAIL" else "FAIL"
            if row.samples_per_s is not None:
                cell.samples_per_s.append(row.samples_per_s)
            if row.speed_ratio is not None:
                cell.speed_ratio.append(row.speed_ratio)
    report = CrossReport(list(machines.values()), variants, isa, cells)
    _mark_best(report)
    _flag_lost_accuracy(report)
    return report


def _mark_best(report: CrossReport) -> None:
    for machine in report.machines:
        eligible = [(c.median_samples_per_s, v) for v in report.variants
                    if (c := report.cell(v, machine.id)) and c.gate in ("pass", "baseline") and c.samples_per_s]
        if eligible:
            report.cells[(max(eligible)[1], machine.id)].best = True


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


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    text = (f"{_fmt(cell.accuracy, '{:.4f}')} · {_fmt(cell.median_samples_per_s, '{:.1f}')}/s · "
            f"{_fmt(cell.median_ratio, '{:.2f}')}x")
    return ("★ " if cell.best else "") + text + (" ⚠" if cell.flag else "")


def render_markdown(report: CrossReport) -> str:
    lines = ["# ortgate cross-machine report", "",
             "Cells: accuracy · end-to-end samples/s · speed ratio to that machine's own baseline "
             "(medians over runs). ★ best variant within tolerance on that machine; ⚠ an ISA preset that "
             "lost accuracy there.", ""]
    for m in report.machines:
        lines.append(f"- `{m.id}`: {m.label}, {m.runs} run(s)")
    lines += ["", "| variant | preset | " + " | ".join(f"`{m.id}`" for m in report.machines) + " |",
              "|---|---" + "|---" * len(report.machines) + "|"]
    for vid in report.variants:
        cells = [cell_text(report.cell(vid, m.id)) for m in report.machines]
        lines.append(f"| {vid} | {report.isa.get(vid) or ''} | " + " | ".join(cells) + " |")
    flags = [(vid, m, c.flag) for vid in report.variants for m in report.machines
             if (c := report.cell(vid, m.id)) and c.flag]
    if flags:
        lines += ["", "Flags:", ""] + [f"- {vid} on `{m.id}`: {flag}" for vid, m, flag in flags]
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (speed ratio, accuracy), both higher-is-better, sorted by speed."""
    front = [p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)]
    return sorted(set(front))


def render_plots(report: CrossReport, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for i, m in enumerate(report.machines):
        pts = [(c.median_ratio, c.accuracy, v) for v in report.variants
               if (c := report.cell(v, m.id)) and c.median_ratio is not None and c.accuracy is not None]
        if not pts:
            continue
        color = f"C{i}"
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, label=m.label[:60], alpha=0.8)
        for x, y, v in pts:
            ax.annotate(v, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points", color=color)
        front = pareto_front([(p[0], p[1]) for p in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("speed ratio to the machine's baseline (end to end)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs speed, per machine (dashed: Pareto front)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_speed.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    quantized = [v for v in report.variants if report.isa.get(v)]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    width = 0.8 / max(len(report.machines), 1)
    for i, m in enumerate(report.machines):
        ratios = [(c.median_ratio if (c := report.cell(v, m.id)) and c.median_ratio else 0.0) for v in quantized]
        ax.bar([j + i * width for j in range(len(quantized))], ratios, width, label=m.label[:60], color=f"C{i}")
    ax.set_xticks([j + width * (len(report.machines) - 1) / 2 for j in range(len(quantized))])
    ax.set_xticklabels([f"{v}\n({report.isa[v]})" for v in quantized], fontsize=7, rotation=15)
    ax.set_ylabel("speed ratio to baseline")
    ax.set_title("Speed ratio by quantization preset and machine")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "speed_by_preset.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def render_html(report: CrossReport, plots: list[Path]) -> str:
    """One self-contained page: styles inline, plots embedded as data: URLs."""
    head = "".join(f"<th>{html.escape(m.id)}<br><small>{html.escape(m.label)}</small></th>" for m in report.machines)
    rows = []
    for vid in report.variants:
        tds = []
        for m in report.machines:
            c = report.cell(vid, m.id)
            cls = " ".join(k for k, on in (("best", c and c.best), ("flag", c and c.flag)) if on)
            title = f' title="{html.escape(c.flag)}"' if c and c.flag else ""
            tds.append(f'<td class="{cls}"{title}>{html.escape(cell_text(c))}</td>')
        preset = html.escape(report.isa.get(vid) or "")
        rows.append(f"<tr><th>{html.escape(vid)}</th><td>{preset}</td>{''.join(tds)}</tr>")
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.stem.replace("_", " "))}'
        "</figcaption></figure>" for p in plots)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ortgate cross-machine report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
thead th {{ background: #f2f2f2; }}
td.best {{ background: #d9f7d9; font-weight: 600; }}
td.flag {{ background: #fde2e2; }}
figure {{ display: inline-block; margin: 1rem 1rem 0 0; }}
img {{ max-width: 720px; border: 1px solid #ddd; }}
</style></head><body>
<h1>ortgate cross-machine report</h1>
<p>Cells: accuracy · end-to-end samples/s · speed ratio to that machine's own baseline (medians over runs).
Green ★: best variant within tolerance on that machine. Red ⚠: an ISA preset that lost accuracy there
(hover for why).</p>
<table><thead><tr><th>variant</th><th>preset</th>{head}</tr></thead><tbody>
{''.join(rows)}
</tbody></table>
{images}
</body></html>
"""


def write_report(paths: list[Path], out_dir: Path) -> dict[str, Path]:
    report = build_report(load_summaries(paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_plots(report, out_dir)
    outputs = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    for kind, text in (("markdown", render_markdown(report)), ("html", render_html(report, plots))):
        atomic_write_text(outputs[kind], text)
    return {**outputs, **{p.stem: p for p in plots}}
