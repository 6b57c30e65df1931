"""`ortgate history` as text and JSON: per variant × machine × metric, the newest value, the noise the
detection assumed, and every detected step with the commit or library change at it. Formatting only."""

from __future__ import annotations

import math

from ortgate.history.series import Series, Step


def _noise(series: Series) -> str:
    if series.noise is None:
        return ""
    if series.metric.log:
        return f"{100 * (math.exp(series.noise) - 1):.1f}%"
    return f"{series.noise:.2f}{series.metric.unit}"


SPARK = "▁▂▃▄▅▆▇█"
SPARK_RUNS = 24


def sparkline(series: Series, runs: int = SPARK_RUNS) -> str:
    """The newest `runs` values as bars between their own min and max (one level: a flat line)."""
    values = [p.value for p in series.points[-runs:]]
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(abs(high), 1.0):
        return SPARK[3] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / (high - low) * len(SPARK)))] for v in values)


def step_text(series: Series, step: Step) -> str:
    shown = series.metric.value_text
    return (f"{step.kind} {step.change} ({shown(step.before)} → {shown(step.after)}) at run "
            f"{step.run.run_id} ({step.run.label})" + (f": {step.cause}" if step.cause else ""))


def render_markdown(series: list[Series], failing: list[Series], *, all_series: bool = False) -> str:
    """The series with steps (every series with `all_series`), newest step last in each row."""
    shown = [s for s in series if s.steps or all_series]
    machines = sorted({s.machine_id for s in series})
    several = len({s.experiment for s in series}) > 1  # models or data sets: each its own series, named
    lines = [f"# ortgate history: {len(series)} series on {len(machines)} machine(s), "
             f"{sum(len(s.steps) for s in series)} step(s)", ""]
    if failing:
        lines += ["**Newest step is a regression:** " + ", ".join(
            f"`{s.variant}` {s.metric.name} on {s.machine_id}" + (f" [{s.model}]" if several else "")
            + f" ({s.newest_step.change})" for s in failing), ""]
    if not shown:
        return "\n".join(lines + ["No steps detected.", ""])
    model_head, model_rule = ("model | ", "---|") if several else ("", "")
    lines += [f"| variant | machine | {model_head}metric | runs | last {SPARK_RUNS} | newest | noise (sd) | "
              "steps (oldest first) |", f"|---|---|{model_rule}---|---|---|---|---|---|"]
    for s in shown:
        steps = "<br>".join(step_text(s, st) for st in s.steps) or "none"
        model = f"{s.model} | " if several else ""
        lines.append(f"| `{s.variant}` | {s.machine_id} | {model}{s.metric.name} | {len(s.points)} | {sparkline(s)} | "
                     f"{s.metric.value_text(s.points[-1].value)} | {_noise(s)} | {steps} |")
    return "\n".join(lines + [""])


def series_dict(series: Series) -> dict:
    return {
        "variant": series.variant, "machine": series.machine_id, "metric": series.metric.name,
        "model": series.model, "experiment": series.experiment, "parent": series.parent, "noise": series.noise,
        "points": [{"run": p.run.run_id, "generated": p.run.generated, "commit": p.run.commit, "value": p.value,
                    "low": p.low, "high": p.high, "gate": p.gate} for p in series.points],
        "steps": [{"index": st.index, "run": st.run.run_id, "commit": st.run.commit, "generated": st.run.generated,
                   "kind": st.kind, "change": st.change, "before": st.before, "after": st.after, "cause": st.cause}
                  for st in series.steps],
    }


def history_dict(series: list[Series], failing: list[Series]) -> dict:
    return {"series": [series_dict(s) for s in series],
            "failing": [{"variant": s.variant, "machine": s.machine_id, "metric": s.metric.name, "model": s.model}
                        for s in failing]}
