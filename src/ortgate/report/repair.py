"""How a repair is shown: the candidates as a table (Markdown, JSON), the accuracy-vs-speed Pareto plot, and the
`[tool.ortgate.variants.<id>]` entry that rebuilds the chosen graph. Formatting only: `diagnose.repair` measured."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ortgate.diagnose.repair import Outcome, RepairResult
from ortgate.files import atomic_write_text
from ortgate.spec.remedies import REPAIR_MARK, entry_id
from ortgate.spec.variants import format_entry


def entry_name(outcome: Outcome) -> str:
    """The entry's variant id: the candidate's, with the repair mark spelled as a TOML bare key allows."""
    return entry_id(outcome.variant_id)


def toml_entry(outcome: Outcome, name: str | None = None) -> str:
    """The pyproject entry that rebuilds the outcome's graph: the same parent and step, so the same content hash."""
    return format_entry(replace(outcome.spec, id=name or entry_name(outcome)))


def repair_doc(result: RepairResult) -> dict:
    """The repair as JSON: every candidate, the diagnoses, the chosen graph and its entry."""
    return {**result.as_dict(), "entry": toml_entry(result.chosen) if result.chosen else None}


def _cell(o: Outcome) -> list[str]:
    row = o.as_dict()
    accuracy = "—" if row["accuracy_delta_pp"] is None else f"{row['accuracy_delta_pp']:+.2f}"
    if row["drop_interval_pp"]:
        low, high = row["drop_interval_pp"]
        accuracy += f" (drop [{low:.2f}, {high:.2f}])"
    speed = "—" if o.speed is None else f"{o.speed.ratio:.2f}x [{o.speed.interval[0]:.2f}–{o.speed.interval[1]:.2f}]"
    gate = row["gate"] or f"{o.build}: {o.error}"
    return [o.variant_id, o.remedy, str(o.round), accuracy, gate, speed]


def render_markdown(result: RepairResult) -> str:
    chosen = result.chosen
    head = ["graph", "remedy", "round", "accuracy Δ pp (drop 95% CI)", "gate", f"speed vs {result.parent_id}"]
    lines = [f"## Repair of {result.variant_id}", "",
             f"Tolerance {result.tolerance}; speed is the same-run ratio to the fp32 parent {result.parent_id} over "
             f"{result.cycles} round-robin cycles per round (95% interval), {result.min_ratio:g}x to keep. Rounds: 1 "
             f"single remedies, 2 two that helped together, 3 fp32 fallback of the worst nodes. "
             f"{len(result.tried)} candidates in {result.seconds / 60:.1f} min; {result.stopped}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in (result.original, *result.tried):
        lines.append("| " + " | ".join(_cell(o)) + " |")
    lines.append("")
    if chosen is not None:
        keeps = (f"keeps {chosen.speed.ratio:.2f}x ≥ {result.min_ratio:g}x" if chosen.speed.ratio >= result.min_ratio
                 else f"at {chosen.speed.ratio:.2f}x, below the {result.min_ratio:g}x to keep")
        lines += [f"Chosen: **{chosen.variant_id}** ({chosen.remedy}): of the graphs that pass, the fastest, or "
                  "one as fast (within its 95% interval) that changes fewer fields; it "
                  f"{keeps}. To keep it:", "",
                  "```toml", toml_entry(chosen).rstrip(), "```", ""]
    else:
        best = ", ".join(f"{o.variant_id} ({o.accuracy_delta_pp:+.2f}pp)" for o in result.best_tried())
        lines += [f"No candidate passed. Closest: {best or 'none was evaluated'}.", ""]
    return "\n".join(lines)


_SHORT = {"per-channel-reduce-range": "pc,rr", "per-channel": "pc", "reduce-range": "rr", "matmul-only": "MatMul"}


def short_label(outcome: Outcome) -> str:
    """A point's label in the plot: the candidate's remedies, abbreviated (pc per-channel, rr reduce_range, -X
    without operator type X, <isa> the ISA preset, xN the N worst nodes in fp32)."""
    slug = outcome.variant_id.partition(REPAIR_MARK)[2]
    if not slug:
        return "failing variant"
    parts = []
    for part in slug.split(REPAIR_MARK):
        part = _SHORT.get(part, part)
        part = part.removesuffix("-preset").replace("without-", "-").replace("-calibration", "")
        parts.append(part.replace("exclude-", "x"))
    return "+".join(parts)


def pareto_front(outcomes: list[Outcome]) -> list[Outcome]:
    """The graphs no other beats on both speed and accuracy, fastest first."""
    points = [o for o in outcomes if o.speed is not None and o.accuracy_delta_pp is not None]
    front = [o for o in points if not any(
        p.speed.ratio >= o.speed.ratio and p.accuracy_delta_pp >= o.accuracy_delta_pp
        and (p.speed.ratio, p.accuracy_delta_pp) != (o.speed.ratio, o.accuracy_delta_pp) for p in points)]
    return sorted(front, key=lambda o: -o.speed.ratio)


def pareto_figure(result: RepairResult):
    from matplotlib.figure import Figure

    outcomes = [o for o in (result.original, *result.tried) if o.speed is not None and o.accuracy_delta_pp is not None]
    figure = Figure(figsize=(9, 6), dpi=120, layout="constrained")
    ax = figure.subplots()
    allowed = -result.original.gates["accuracy"].tolerance.allowed_drop(result.original.gates["accuracy"].baseline)
    ax.axhline(allowed * 100, color="tab:red", linestyle="--", linewidth=1, label=f"tolerance ({result.tolerance})")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.axvline(result.min_ratio, color="tab:green", linestyle=":", linewidth=1, label=f"{result.min_ratio:g}x to keep")
    for o in outcomes:
        color = "tab:green" if o.passed else "tab:red" if o.round else "black"
        (low, high) = o.speed.interval
        ax.errorbar(o.speed.ratio, o.accuracy_delta_pp, xerr=[[o.speed.ratio - low], [high - o.speed.ratio]],
                    fmt="o", color=color, capsize=2, markersize=5)
        label = ax.annotate(short_label(o), (o.speed.ratio, o.accuracy_delta_pp), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
        label.set_in_layout(False)  # a long label must not squeeze the axes
    front = pareto_front(outcomes)
    ax.plot([o.speed.ratio for o in front], [o.accuracy_delta_pp for o in front], color="tab:blue", alpha=0.5,
            label="Pareto front")
    if result.chosen is not None and result.chosen.speed is not None:
        ax.scatter([result.chosen.speed.ratio], [result.chosen.accuracy_delta_pp], s=160, facecolors="none",
                   edgecolors="tab:green", linewidths=2, label="chosen")
    ax.set(xlabel=f"speed ratio to {result.parent_id} (same run; 95% interval)", ylabel="accuracy Δ vs baseline (pp)",
           title=f"repair of {result.variant_id}\n(pc per-channel, rr reduce_range, -X without X, xN N nodes in fp32)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure


def write_repair(result: RepairResult, out_dir: Path) -> dict[str, Path]:
    """repair.json, repair.md, pareto.png and the chosen entry (chosen.toml) under out_dir."""
    from ortgate.report.plots import save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "repair.json", "markdown": out_dir / "repair.md", "plot": out_dir / "pareto.png"}
    atomic_write_text(paths["json"], json.dumps(repair_doc(result), indent=2))
    atomic_write_text(paths["markdown"], render_markdown(result))
    save_figure(pareto_figure(result), paths["plot"])
    if result.chosen is not None:
        paths["entry"] = out_dir / "chosen.toml"
        atomic_write_text(paths["entry"], toml_entry(result.chosen))
    return paths
