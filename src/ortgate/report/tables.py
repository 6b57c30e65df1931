"""The run's record as tables: the terminal summary, summary.md, and summary.json (the record itself).

Formatting only: every figure comes from the `RunResult`; nothing here computes or measures.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

from ortgate.files import atomic_write_text
from ortgate.record.result import RunResult, VariantResult
from ortgate.report.explain import explanation_notes, explanation_sections

COLUMNS = [  # (header, key, format)
    ("variant", "variant", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("F1", "f1", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("acc Δ (pp)", "accuracy_delta_pp", "{:+.2f}"),
    ("gate", "gate", "{}"),
    ("samples/s", "samples_per_s", "{:.1f}"),
    ("latency ms", "latency_ms", "{:.2f}"),
    ("speed Δ", "speed_delta_pct", "{:+.0f}%"),
    ("ratio", "speed_ratio", "{:.2f}x"),
    ("model-only/s", "model_only_samples_per_s", "{:.1f}"),
    ("model-only ratio", "model_only_speed_ratio", "{:.2f}x"),
    ("p50 ms", "p50", "{}"),
    ("p99 ms", "p99", "{}"),
    ("peak MB", "peak_mb", "{:.0f}"),
    ("load ms", "load_ms", "{:.0f}"),
    ("of GEMM limit", "limit_share", "{:.0%}"),
    ("size MB", "size_mb", "{:.1f}"),
    ("nodes (Δ export)", "nodes", "{}"),
    ("fused ops", "fused", "{}"),
    ("quantized", "quantized", "{}"),
    ("structure", "structure_verdict", "{}"),
]


# The terminal table leaves out what the Markdown and JSON keep (precision, recall, latency).
TERMINAL_KEYS = ("variant", "accuracy", "f1", "accuracy_delta_pp", "gate", "samples_per_s", "speed_ratio",
                 "model_only_samples_per_s", "p50", "p99", "peak_mb", "load_ms", "limit_share", "size_mb", "fused",
                 "quantized", "structure_verdict")
_SHORT_OPS = {"SkipLayerNormalization": "SkipLN", "LayerNormalization": "LN", "EmbedLayerNormalization": "EmbedLN"}


def _cells(row: VariantResult, columns=COLUMNS) -> list[str]:
    graph = row.graph or {}
    fused = " ".join(f"{_SHORT_OPS.get(k, k)}×{v}" for k, v in graph.get("fused_operators", {}).items())
    q = graph.get("quantized_nodes", {})
    quantized = " ".join(f"{k.replace('_', ' ')} {v}" for k, v in q.items() if v and k != "dequantized_weights")
    nodes = f"{graph['nodes']} ({graph['nodes_vs_export']:+d})" if "nodes_vs_export" in graph else graph.get("nodes")
    verdict = ("pass" if row.structure.passed else "FAIL") if row.structure else None
    if verdict and row.structure.unchecked:
        verdict += " (partial)"  # a CPU without a record of its own: the Graphs section says what was not checked
    gate = row.gate
    if row.build_error:
        gate = f"{row.build}: {row.build_error[:80]}"
    elif row.same_graph_as:
        gate = f"{gate} (= {row.same_graph_as})" if gate else f"= {row.same_graph_as}"
    lat, fp = row.latency, row.footprint
    values = {**asdict(row), "fused": fused or ("-" if graph else ""), "quantized": quantized or ("-" if graph else ""),
              "nodes": nodes, "structure_verdict": verdict, "gate": gate,
              "p50": _quantile(lat, "p50") if lat else None, "p99": _quantile(lat, "p99") if lat else None,
              "peak_mb": fp.peak_rss_mb if fp else None, "load_ms": fp.load_ms if fp else None,
              "limit_share": row.roofline.fraction if row.roofline else None}
    return [fmt.format(values[key]) if values.get(key) not in (None, "") else "" for _, key, fmt in columns]


def _quantile(latency, name: str) -> str:
    """`2.41 [2.38–2.45]`: the quantile (ms) and its bootstrap interval."""
    low, high = latency.intervals[name]
    return f"{getattr(latency, name + '_ms'):.2f} [{low:.2f}–{high:.2f}]"


def _header(result: RunResult) -> list[str]:
    machine, settings, t = result.machine, result.settings, result.truncation
    return [
        "# ortgate summary",
        "",
        f"- model: {result.model.source}",
        f"- data: {result.data}",
        *([f"- max_length {t['max_length']} ({t['source']}): {t['truncated_rows']} of {t['rows']} evaluation rows "
           f"truncated (longest {t['longest_tokens']} tokens)"] if t else []),
        f"- machine: {machine.get('model_name')} ({machine.get('arch')}, "
        f"flags {', '.join(machine.get('flags', [])) or 'none'}), {settings.threads} threads",
        f"- speeds: {settings.speed_mode} and model-only, batch 1, median of {settings.bench_rounds} rounds × "
        f"{settings.bench_samples} texts; ratios vs `{result.baseline}` in the same run",
        f"- best variant for this machine (fastest end to end within tolerance): **{result.best or 'n/a'}**",
        *(f"- harness check: {c.variant} model-only through ortgate {c.harness_samples_per_s:.1f} samples/s "
          f"vs a bare InferenceSession.run loop {c.bare_samples_per_s:.1f} (ratio {c.ratio:.3f})"
          for c in result.harness_checks),
        "",
        "| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
        *("| " + " | ".join(_cells(row)) + " |" for row in result.variants),
    ]


def _builds(result: RunResult) -> list[str]:
    failed = [r for r in result.variants if r.build_error]
    built = [r for r in result.variants if r.build_seconds is not None]
    if not (failed or built):
        return []
    lines = ["", "## Builds", ""]
    if result.build_wall_seconds is not None:
        lines.append(f"- {len(built)} variants ready in {result.build_wall_seconds:.1f}s of wall time with "
                     f"{result.build_jobs} build job(s); cold builds took "
                     f"{sum(r.build_seconds for r in built if r.build == 'built'):.1f}s in all, "
                     f"{sum(1 for r in built if r.build == 'cache hit')} came from the cache")
    lines += [f"- **{r.variant}**: {r.build}: {r.build_error}" for r in failed]
    lines += [f"- {r.variant}: same graph as {r.same_graph_as} (byte-identical model.onnx; its evaluation "
              "and speed are reused)" for r in result.variants if r.same_graph_as]
    return lines


def _graphs(result: RunResult) -> list[str]:
    graphs = [r for r in result.variants if r.graph]
    if not graphs:
        return []
    lines = ["", "## Graphs", "",
             "| variant | nodes | Δ export | fused operators | quantized nodes (dynamic / QLinear / QDQ pairs) | "
             "fp32-weight MatMuls | weight types | int8 share of weight bytes | operators quantized | "
             "structure |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in graphs:
        g = r.graph
        q = g.get("quantized_nodes", {})
        st = r.structure
        verdict = "" if not st else ("pass" if st.passed else "FAIL: " + "; ".join(st.problems))
        if st and st.unchecked:
            verdict += "; not checked on this CPU: " + "; ".join(st.unchecked)
        lines.append(
            f"| {r.variant} | {g['nodes']} | {g.get('nodes_vs_export', 0):+d} | "
            f"{', '.join(f'{k}×{v}' for k, v in g['fused_operators'].items()) or '–'} | "
            f"{q.get('dynamic', 0)} / {q.get('qlinear', 0)} / {q.get('qdq_pairs', 0)} | "
            f"{g.get('float_weight_matmuls', 0)} | "
            f"{', '.join(f'{k}×{v}' for k, v in g['initializer_types'].items())} | "
            f"{g.get('int8_weight_fraction', 0):.0%} | {', '.join(r.operators_quantized or []) or '–'} | "
            f"{verdict} |")
    return lines


def _paired(result: RunResult) -> list[str]:
    paired = [r for r in result.variants if r.paired]
    if not paired:
        return []
    conf = f"{paired[0].paired.confidence:.0%}"
    lines = ["", f"## Paired comparison with the baseline (same rows; gate mode: {paired[0].gate_mode})", "",
             f"| variant | differing | baseline-only right | variant-only right | McNemar p (exact / mid) | "
             f"accuracy Δ, {conf} CI (pp) | F1 Δ, {conf} CI (pp) | detectable drop (pp) / rows for the tolerance | "
             "max / mean / p99 \\|Δlogit\\| |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in paired:
        p = r.paired
        acc_low, acc_high = (x * 100 for x in p.interval)
        f1_low, f1_high = (x * 100 for x in r.f1_interval)
        logit = r.logit_differences
        lines.append(
            f"| {r.variant} | {p.differing_predictions} | {p.baseline_only} | {p.variant_only} | "
            f"{p.mcnemar_p_exact:.3g} / {p.mcnemar_p_mid:.3g} | "
            f"{p.difference * 100:+.2f} [{acc_low:+.2f}, {acc_high:+.2f}] | {r.f1_delta_pp:+.2f} "
            f"[{f1_low:+.2f}, {f1_high:+.2f}] | {_power(r)} | "
            f"{logit['max']:.3f} / {logit['mean']:.4f} / {logit['p99']:.4f} |")
    if any(r.gate == "inconclusive" for r in paired):
        lines += ["", "Inconclusive: the rows cannot tell the drop from the tolerance (its interval holds both no "
                  "drop and more than the allowed drop). Detectable drop: the smallest these rows detect with 80% "
                  "power (paired, McNemar; Connor 1987); rows: what a drop of the tolerance would need."]
    return lines


def _power(row: VariantResult) -> str:
    """`4.38 / 3,186`: the smallest drop these rows detect, and the rows the tolerance would need."""
    if row.min_detectable_drop_pp is None:
        return "–"
    return f"{row.min_detectable_drop_pp:.2f} / " + (f"{row.rows_needed:,}" if row.rows_needed is not None else "–")


def _interleaved(result: RunResult) -> list[str]:
    """Each graph's speed ratio to the baseline from the round-robin cycles, per mode, with its interval."""
    rows = [r for r in result.variants if r.interleaved and not r.same_graph_as and r.variant != result.baseline]
    if not rows:
        return []
    modes = sorted({m for r in rows for m in r.interleaved})
    ran = ", ".join(f"{m} {len(next(r.interleaved[m] for r in rows if m in r.interleaved).cycle_seconds)}"
                    for m in modes)
    settings = result.settings
    rule = (f"at most {settings.cycles}, fewer once every ratio was within ±{settings.cycle_precision:.0%}"
            if settings.cycle_precision else f"{settings.cycles}")
    lines = ["", f"## Same-run speed, round-robin (cycles: {ran}; {rule}; every graph in turn, cycle after cycle), "
             f"ratio to {result.baseline}", "", "| variant | " + " | ".join(modes) + " |",
             "|---" * (len(modes) + 1) + "|"]
    for r in rows:
        cells = [f"{x.ratio:.2f}x [{x.interval[0]:.2f}, {x.interval[1]:.2f}]" if (x := r.interleaved.get(m)) else "–"
                 for m in modes]
        lines.append(f"| {r.variant} | " + " | ".join(cells) + " |")
    return lines


def _speeds(result: RunResult) -> list[str]:
    lines = _interleaved(result)
    checked = [r for r in result.variants if r.speed_check]
    if checked:
        lines += ["", "## Speed floors (same-run ratios from the round-robin cycles, end to end)", "",
                  "| variant | reference | ratio | CI | floor | verdict |", "|---|---|---|---|---|---|"]
        for r in checked:
            c = r.speed_check
            lines.append(f"| {r.variant} | {c.reference} | {c.ratio:.2f}x | {c.interval[0]:.2f}–{c.interval[1]:.2f}x "
                         f"| {c.floor or '–'} | {'pass' if c.passed else 'FAIL'} |")
    repeated = [r for r in result.variants if r.samples_per_s_repeats]
    if repeated:
        keys = ("count", "mean", "std", "min", "q1", "median", "q3", "max")
        lines += ["", f"## End-to-end samples/s over {result.settings.repeat} repeats of the whole matrix", "",
                  "| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in repeated:
            d = r.samples_per_s_repeats
            lines.append(f"| {r.variant} | {d['count']} | " + " | ".join(f"{d[k]:.1f}" for k in keys[1:]) + " |")
    return lines


def _latency(result: RunResult) -> list[str]:
    rows = [r for r in result.variants if r.latency and not r.same_graph_as]
    if not rows:
        return []
    p = result.latency_pass or {}
    conf = f"{rows[0].latency.confidence:.0%}"
    lines = ["", "## Request latency (single stream, batch 1, end to end: tokenize + run + argmax; ms)", "",
             f"Every call timed on its own (`perf_counter_ns`; timer overhead {result.timer_overhead_ns or 0:.0f} ns "
             f"a call), graphs interleaved in blocks of {p.get('block', '?')} calls; the pass stopped: "
             f"{p.get('stopped', '?')} after {p.get('cycles', '?')} cycles (target: every p99 within "
             f"±{p.get('precision', 0):.0%}). Brackets: {conf} bootstrap intervals. MLPerf: SingleStream's "
             "early-stopping estimates (99% confidence the true percentile lies below).", "",
             "| variant | calls | p50 | p90 | p99 | max | mean | MLPerf p90 / p99 |", "|---" * 8 + "|"]
    for r in rows:
        x = r.latency
        mlperf = " / ".join(f"{v:.2f}" if v is not None else "too few calls"
                            for v in (x.early_stopping_p90_ms, x.early_stopping_p99_ms))
        lines.append(f"| {r.variant} | {x.calls} | {_quantile(x, 'p50')} | {_quantile(x, 'p90')} | "
                     f"{_quantile(x, 'p99')} | {x.max_ms:.2f} | {x.mean_ms:.2f} | {mlperf} |")
    return lines


def _footprints(result: RunResult) -> list[str]:
    rows = [r for r in result.variants if r.footprint and not r.same_graph_as]
    if not rows:
        return []
    lines = ["", f"## Memory and load time (each graph in {rows[0].footprint.rounds} fresh processes; median [range])",
             "", "Peak RSS: the process's high-water mark over session creation and inference (source: VmHWM, reset "
             "before the load; where the kernel refused the reset, `VmHWM since start` includes the imports' peak); "
             "added: peak less the RSS before loading (what the variant itself costs); load: session creation, the "
             "process's first (cold).", "",
             "| variant | file MB | peak RSS MB | added by the model MB | load ms | peak from |", "|---" * 6 + "|"]
    for r in rows:
        f = r.footprint
        rng = lambda xs: f"[{min(xs):.0f}–{max(xs):.0f}]"  # noqa: E731
        lines.append(f"| {r.variant} | {f.file_mb:.1f} | {f.peak_rss_mb:.0f} {rng(f.peak_rss_mb_rounds)} | "
                     f"{f.model_rss_mb:.0f} {rng(f.model_rss_mb_rounds)} | {f.load_ms:.0f} {rng(f.load_ms_rounds)} | "
                     f"{f.peak_source} |")
    return lines


def _shapes(result: RunResult) -> list[str]:
    rows = [r for r in result.variants if r.shapes and not r.same_graph_as]
    lines = []
    if rows:
        shapes = sorted({(x.batch, x.seq_len) for r in rows for x in r.shapes})
        lines += ["", "## Throughput by shape (model only, samples/s; every row exactly the sequence length in "
                  f"tokens; {rows[0].shapes[0].threads} threads)", "", "Plot: `shapes.png`.", "",
                  "| variant | " + " | ".join(f"b{b} s{s}" for b, s in shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
        for r in rows:
            got = {(x.batch, x.seq_len): x.samples_per_s for x in r.shapes}
            lines.append(f"| {r.variant} | " + " | ".join(f"{got[k]:.1f}" if k in got else "–" for k in shapes) + " |")
    threaded = [r for r in result.variants if r.threads and not r.same_graph_as]
    if threaded:
        counts = sorted({x.threads for r in threaded for x in r.threads})
        lines += ["", "## Throughput by thread count (model only, batch 1, the benchmark texts; samples/s, best in "
                  "bold)", "", "Plot: `threads.png`.", "",
                  "| variant | " + " | ".join(f"{t} threads" for t in counts) + " |", "|---" * (len(counts) + 1) + "|"]
        for r in threaded:
            got = {x.threads: x.samples_per_s for x in r.threads}
            best = max(got, key=got.get)
            cells = ("–" if t not in got else f"**{got[t]:.1f}**" if t == best else f"{got[t]:.1f}" for t in counts)
            lines.append(f"| {r.variant} | " + " | ".join(cells) + " |")
    return lines


def _roofline(result: RunResult) -> list[str]:
    rows = [r for r in result.variants if r.roofline and not r.same_graph_as]
    if not rows:
        return []
    lines = ["", "## Distance to this CPU's limit (model only, batch 1)", "",
             "MACs per sample counted from each graph at the benchmark texts' token lengths, by GEMM kind; the ceiling "
             "is the speed those GEMMs alone would allow at this CPU's measured kernel speeds (below); achieved: the "
             "round-robin's model-only speed.", "",
             "| variant | mean tokens | MMACs / sample (by kind) | ceiling samples/s | achieved | share of ceiling |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        x = r.roofline
        macs = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in x.macs_per_sample.items() if v)
        lines.append(f"| {r.variant} | {x.tokens_mean:.1f} | {macs} | {x.ceiling_samples_per_s:.0f} | "
                     f"{x.achieved_samples_per_s:.0f} | {x.fraction:.0%} |")
    if result.gemm_ceilings:
        lines += ["", "GEMM kernels measured on this CPU (GOP/s = 2 × MAC/s):", "",
                  "| kind | M × K × N | threads | GOP/s |", "|---|---|---|---|"]
        for c in sorted(result.gemm_ceilings, key=lambda c: (c["kind"], c["k"], c["n"], c["m"])):
            lines.append(f"| {c['kind']} | {c['m']} × {c['k']} × {c['n']} | {c['threads']} | "
                         f"{2 * c['macs_per_s'] / 1e9:.0f} |")
    return lines


def _budgets(result: RunResult) -> list[str]:
    rows = [r for r in result.variants if r.budget]
    if not rows:
        return []
    lines = ["", "## Budgets (a budget fails only when the figure's whole interval lies above it)", "",
             "| variant | figure | value [interval] | budget | pattern | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        for b in r.budget:
            value = "not measured" if b.value is None else f"{b.value:.4g} [{b.interval[0]:.4g}, {b.interval[1]:.4g}]"
            lines.append(f"| {r.variant} | {b.metric} | {value} | ≤ {b.limit:g} | `{b.pattern}` | {b.outcome} |")
    return lines


def render_markdown(result: RunResult) -> str:
    lines = (_header(result) + _builds(result) + _graphs(result) + _paired(result) + _speeds(result)
             + _latency(result) + _footprints(result) + _shapes(result) + _roofline(result) + _budgets(result)
             + explanation_sections(result))
    return "\n".join(lines) + "\n"


def render_terminal(result: RunResult, width: int = 200) -> str:
    from rich.console import Console
    from rich.table import Table

    columns = [c for c in COLUMNS if c[1] in TERMINAL_KEYS]
    cells = [_cells(row, columns) for row in result.variants]
    # Only the columns this run filled: a run without a latency pass shows no empty latency columns.
    kept = [i for i, (_, key, _) in enumerate(columns) if key == "variant" or any(row[i] for row in cells)]
    table = Table(title=f"ortgate summary — best for this machine: {result.best or 'n/a'}")
    for i in kept:
        header, key, _ = columns[i]
        table.add_column(header, overflow="fold", justify="left" if key in ("variant", "gate", "fused") else "right")
    for row in cells:
        table.add_row(*(row[i] for i in kept))
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue() + "".join(f"{note}\n" for note in explanation_notes(result))


def write_results(result: RunResult, results_dir: Path) -> tuple[Path, Path]:
    """Write summary.json (the record) and summary.md, each atomically (readers never see half a file)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / "summary.json", results_dir / "summary.md"
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2, default=str))
    atomic_write_text(md_path, render_markdown(result))
    write_plots(result, results_dir)
    return json_path, md_path


def write_plots(result: RunResult, results_dir: Path) -> list[Path]:
    """shapes.png (samples/s against sequence length, a panel per batch size) and threads.png, where the run
    measured them."""
    from ortgate.report.plots import plot_shapes, plot_threads

    written = []
    shapes = [{"variant": r.variant, "batch": x.batch, "seq_len": x.seq_len, "samples_per_s": x.samples_per_s}
              for r in result.variants if r.shapes and not r.same_graph_as for x in r.shapes]
    if shapes:
        written.append(plot_shapes(shapes, results_dir / "shapes.png",
                                   f"{result.model.source}: model-only samples/s by shape"))
    threads = [{"variant": r.variant, "threads": x.threads, "samples_per_s": x.samples_per_s}
               for r in result.variants if r.threads and not r.same_graph_as for x in r.threads]
    if threads:
        written.append(plot_threads(threads, results_dir / "threads.png",
                                    f"{result.model.source}: batch 1, benchmark texts, model only"))
    return written
