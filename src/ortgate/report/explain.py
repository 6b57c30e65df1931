"""The summary's "why" sections, from the record: where a slow variant's time goes (profile against its parent),
where a failed quantized variant's accuracy goes (top nodes), and what a repair found. Formatting only."""

from __future__ import annotations

from ortgate.record.result import RunResult

TOP_CHANGES = 8


def _profile_lines(variant: str, p: dict) -> list[str]:
    lines = ["", f"### {variant}: {p['why']}", ""]
    if "error" in p:
        return [*lines, p["error"]]
    ratio = p.get("node_time_ratio")
    lines += [f"Kernel time {p['node_us_per_call']:.0f} µs a call against {p['parent_node_us_per_call']:.0f} µs for "
              f"{p['against']}" + (f" ({ratio:.2f}x)" if ratio else "") + f", {p['calls']} profiled calls. Changes "
              "by operator type (µs a call):", "",
              "| operator | parent | variant | change | status |", "|---|---|---|---|---|"]
    for c in p["changes"][:TOP_CHANGES]:
        parent = "—" if c["parent_us"] is None else f"{c['parent_us']:.1f}"
        mine = "—" if c["variant_us"] is None else f"{c['variant_us']:.1f}"
        lines.append(f"| {c['op_type']} | {parent} | {mine} | {c['delta_us']:+.1f} | {c['status']} |")
    return lines


def _diagnosis_lines(variant: str, d: dict) -> list[str]:
    lines = ["", f"### {variant}", ""]
    if "error" in d:
        return [*lines, d["error"]]
    lines += [f"Against {d['against']} on {d['rows']} calibration rows ({d['method']}); logits SQNR "
              f"{_db(d['logits_sqnr_db'])} dB. The nodes that add the most noise (introduced dB: 120 + 10·log10 of "
              "the noise fraction a node adds to its inputs'; higher is worse):", "",
              "| node | op | layer | quantized | output SQNR dB | introduced dB |", "|---|---|---|---|---|---|"]
    for n in d["top_nodes"]:
        lines.append(f"| `{n['node']}` | {n['op_type']} | {n['layer'] or '—'} | {'yes' if n['quantized'] else 'no'} | "
                     f"{_db(n['sqnr_db'])} | {_db(n['introduced_db'])} |")
    layers = ", ".join(f"{name} {_db(db)} dB" for name, db in d["by_layer"])
    ops = ", ".join(f"{name} {_db(db)} dB" for name, db in d["by_op_type"])
    return [*lines, "", f"Noise introduced by layer: {layers}; by operator type: {ops}."]


def _db(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def _repair_lines(variant: str, r: dict) -> list[str]:
    lines = ["", f"### {variant}", ""]
    if "error" in r:
        return [*lines, r["error"]]
    lines += [f"{len(r['candidates'])} candidates in {r['seconds'] / 60:.1f} min; {r['stopped']}.", "",
              f"| candidate | remedy | accuracy Δ pp | gate | speed vs {r['fp32_parent']} |", "|---|---|---|---|---|"]
    for c in (r["original"], *r["candidates"]):
        delta = "—" if c["accuracy_delta_pp"] is None else f"{c['accuracy_delta_pp']:+.2f}"
        speed = "—" if c["speed_ratio"] is None else f"{c['speed_ratio']:.2f}x"
        lines.append(f"| {c['variant']} | {c['remedy']} | {delta} | {c['gate'] or c['build']} | {speed} |")
    if r["chosen"]:
        return [*lines, "", f"Chosen: **{r['chosen']}** (of the graphs that pass, the fastest, or one as fast with "
                f"fewer changes; {r['min_ratio']:g}x its fp32 parent to keep):", "", "```toml",
                r["entry"].rstrip(), "```"]
    return [*lines, "", "No candidate passed."]


def explanation_sections(result: RunResult) -> list[str]:
    lines: list[str] = []
    slow = [r for r in result.variants if r.profile]
    if slow:
        lines += ["", "## Where the time goes (ONNX Runtime's profiler, a separate pass: times inflated, for the "
                  "shares, not for verdicts)"]
        for r in slow:
            lines += _profile_lines(r.variant, r.profile)
    failed = [r for r in result.variants if r.diagnosis]
    if failed:
        lines += ["", "## Where the accuracy goes (failed gates; `ortgate diagnose VARIANT` for the full ranking)"]
        for r in failed:
            lines += _diagnosis_lines(r.variant, r.diagnosis)
    repaired = [r for r in result.variants if r.repair]
    if repaired:
        lines += ["", "## Repairs (--ortgate-repair)"]
        for r in repaired:
            lines += _repair_lines(r.variant, r.repair)
    return lines


def explanation_notes(result: RunResult) -> list[str]:
    """One terminal line per explained variant."""
    notes = []
    for r in result.variants:
        if r.diagnosis and "top_nodes" in r.diagnosis and r.diagnosis["top_nodes"]:
            top = r.diagnosis["top_nodes"][0]
            notes.append(f"{r.variant}: accuracy lost most at {top['node']} ({top['op_type']}, "
                         f"{top['layer'] or 'no layer'}, {_db(top['introduced_db'])} dB introduced)")
        if r.repair and r.repair.get("chosen"):
            notes.append(f"{r.variant}: repaired as {r.repair['chosen']} (entry in summary.md)")
        elif r.repair:
            notes.append(f"{r.variant}: repair found nothing within tolerance"
                         + (f" ({r.repair['error']})" if "error" in r.repair else ""))
    return notes
