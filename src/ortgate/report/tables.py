"""The run's summary: one row per variant, printed in the terminal and written as JSON and Markdown."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from ortgate.build.builder import library_versions
from ortgate.isa import machine_fingerprint
from ortgate.session import RunSession
from ortgate.spec.variants import BASELINE_ID, Quantize

SPEED_MODE = "end-to-end"  # the reference measured pipelines, tokenization included


def summary_rows(session: RunSession) -> list[dict]:
    base_eval = session.evaluations.get(BASELINE_ID)
    base_speed = session.speed(BASELINE_ID, SPEED_MODE)
    base_model_only = session.speed(BASELINE_ID, "model-only")
    ids = session.planned_ids if session.planned_ids is not None else session.selected_ids
    rows = []
    for vid in ids:
        spec = session.variants.specs[vid]
        step = spec.step
        row: dict = {"variant": vid, "description": spec.description, "parent": spec.parent,
                     "isa": step.isa if isinstance(step, Quantize) else None}
        status, reason = session.build_status(vid) if session._builds_done else ("pending", None)
        if status in ("build failed", "not applicable"):
            row.update({"build": status, "build_error": reason, "gate": status})
            rows.append(row)
            continue
        original = session.same_graph.get(vid) or (session.duplicate_of(vid) if status == "built" else None)
        evaluation = session.evaluations.get(vid)
        speed = session.speed(vid, SPEED_MODE) or (original and session.speed(original, SPEED_MODE))
        model_only = session.speed(vid, "model-only") or (original and session.speed(original, "model-only"))
        if evaluation is None and speed is None and model_only is None and vid not in session.speed_checks \
                and vid not in session.structure_checks:
            continue
        built = session.built(vid)  # already built: it was evaluated, timed or inspected
        graph = session.graph(vid) if built else None
        if original:
            row["same_graph_as"] = original
        if evaluation:
            row.update(evaluation.metrics.as_dict())
            if base_eval:
                row["accuracy_delta_pp"] = (evaluation.metrics.accuracy - base_eval.metrics.accuracy) * 100
                row["f1_delta_pp"] = (evaluation.metrics.f1 - base_eval.metrics.f1) * 100
                if vid == BASELINE_ID:
                    row["gate"] = "baseline"
                else:
                    gates = [session.gate(vid, m) for m in ("accuracy", "f1")]
                    row["gate"] = "pass" if all(g.passed for g in gates) else "FAIL"
                    row["gate_mode"] = session.settings.gate_mode
                    row["paired"] = session.paired(vid).as_dict()
                    row["f1_interval"] = list(gates[1].interval)
                    row["logit_differences"] = session.logit_differences(vid)
        if speed:
            row["samples_per_s"] = speed.samples_per_s
            row["latency_ms"] = speed.latency_ms
            if base_speed:
                row["speed_ratio"] = speed.samples_per_s / base_speed.samples_per_s
                row["speed_delta_pct"] = (row["speed_ratio"] - 1) * 100
        check = session.speed_checks.get(vid)
        if check is None and session.same_speed_check_as(vid):
            check = session.speed_checks.get(original)
        if check:
            row["speed_check"] = {"reference": check.reference_id, "ratio": check.ratio,
                                  "interval": list(check.interval), "passed": check.passed,
                                  "floor": str(check.floor) if check.floor else None}
        if session.settings.repeat > 1 and speed:
            row["samples_per_s_repeats"] = session.speed_distribution(original or vid, SPEED_MODE)
        if model_only:
            row["model_only_samples_per_s"] = model_only.samples_per_s
            if base_model_only:
                row["model_only_speed_ratio"] = model_only.samples_per_s / base_model_only.samples_per_s
        if built:
            row["size_mb"] = built.size_bytes / 1e6
            row["build"] = "cache hit" if built.cache_hit else "built"
            row["build_seconds"] = built.build_seconds
            row["cache_hit"] = built.cache_hit
            row["graph"] = graph
            if built.metadata.get("operators_quantized") is not None:
                row["operators_quantized"] = built.metadata["operators_quantized"]
            if vid in session.structure_checks:
                structure = session.structure_checks[vid]
                row["structure"] = {"passed": structure.passed, "problems": list(structure.problems),
                                    "notes": list(structure.notes), "record": structure.record}
        elif vid == BASELINE_ID:
            row["size_mb"] = sum(p.stat().st_size for p in session.model.path.glob("*.safetensors")) / 1e6
        rows.append(row)
    return rows


def best_variant(rows: list[dict]) -> str | None:
    """The fastest variant (end to end) that passed its accuracy gate, the baseline included."""
    eligible = [r for r in rows if r.get("gate") in ("pass", "baseline") and "samples_per_s" in r]
    return max(eligible, key=lambda r: r["samples_per_s"])["variant"] if eligible else None


def summary_document(session: RunSession) -> dict:
    rows = summary_rows(session)
    s = session.settings
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_fingerprint(),
        "versions": library_versions(),
        "model": {"source": session.model.description, "path": str(session.model.path),
                  "fingerprint": session.model.fingerprint, "model_type": session.model.model_type,
                  "labels": [session.model.id2label[i] for i in sorted(session.model.id2label)]},
        "data": session.data.source,
        "truncation": session.truncation,
        "settings": {"threads": s.threads, "max_length": session.max_length, "eval_batch_size": s.eval_batch_size,
                     "bench_samples": s.bench_samples, "bench_rounds": s.bench_rounds,
                     "warmup_rounds": s.warmup_rounds, "repeat": s.repeat, "speed_mode": SPEED_MODE},
        "baseline": BASELINE_ID,
        "best": best_variant(rows),
        "preset": s.preset,
        "user_variants": list(s.user_variant_ids),
        "build_wall_seconds": session.build_wall_seconds,
        "build_jobs": s.build_jobs,
        "harness_checks": [{"variant": c.variant_id, "harness_samples_per_s": c.harness.samples_per_s,
                            "bare_samples_per_s": c.bare.samples_per_s, "ratio": c.ratio}
                           for c in session.harness_checks],
        "variants": rows,
    }


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
    ("size MB", "size_mb", "{:.1f}"),
    ("nodes (Δ export)", "nodes", "{}"),
    ("fused ops", "fused", "{}"),
    ("quantized", "quantized", "{}"),
    ("structure", "structure_verdict", "{}"),
]


# The terminal table leaves out what the Markdown and JSON keep (precision, recall, latency).
TERMINAL_KEYS = ("variant", "accuracy", "f1", "accuracy_delta_pp", "gate", "samples_per_s", "speed_ratio",
                 "model_only_samples_per_s", "size_mb", "fused", "quantized", "structure_verdict")
_SHORT_OPS = {"SkipLayerNormalization": "SkipLN", "LayerNormalization": "LN", "EmbedLayerNormalization": "EmbedLN"}


def _cells(row: dict, columns=COLUMNS) -> list[str]:
    graph = row.get("graph") or {}
    fused = " ".join(f"{_SHORT_OPS.get(k, k)}×{v}" for k, v in graph.get("fused_operators", {}).items())
    q = graph.get("quantized_nodes", {})
    quantized = " ".join(f"{k.replace('_', ' ')} {v}" for k, v in q.items() if v and k != "dequantized_weights")
    nodes = f"{graph['nodes']} ({graph['nodes_vs_export']:+d})" if "nodes_vs_export" in graph else graph.get("nodes")
    structure = row.get("structure")
    verdict = ("pass" if structure["passed"] else "FAIL") if structure else None
    gate = row.get("gate")
    if row.get("build_error"):
        gate = f"{row['build']}: {row['build_error'][:80]}"
    elif row.get("same_graph_as"):
        gate = f"{gate} (= {row['same_graph_as']})" if gate else f"= {row['same_graph_as']}"
    row = {**row, "fused": fused or ("-" if graph else ""), "quantized": quantized or ("-" if graph else ""),
           "nodes": nodes, "structure_verdict": verdict, "gate": gate}
    return [fmt.format(row[key]) if row.get(key) not in (None, "") else "" for _, key, fmt in columns]


def render_markdown(doc: dict) -> str:
    lines = [
        "# ortgate summary",
        "",
        f"- model: {doc['model']['source']}",
        f"- data: {doc['data']}",
        *([f"- max_length {t['max_length']} ({t['source']}): {t['truncated_rows']} of {t['rows']} evaluation rows "
           f"truncated (longest {t['longest_tokens']} tokens)"] if (t := doc.get("truncation")) else []),
        f"- machine: {doc['machine'].get('model_name')} ({doc['machine'].get('arch')}, "
        f"flags {', '.join(doc['machine'].get('flags', [])) or 'none'}), {doc['settings']['threads']} threads",
        f"- speeds: {doc['settings']['speed_mode']} and model-only, batch 1, median of "
        f"{doc['settings']['bench_rounds']} rounds × {doc['settings']['bench_samples']} texts; ratios vs "
        f"`{doc['baseline']}` in the same run",
        f"- best variant for this machine (fastest end to end within tolerance): **{doc['best'] or 'n/a'}**",
        *(f"- harness check: {c['variant']} model-only through ortgate {c['harness_samples_per_s']:.1f} samples/s "
          f"vs a bare InferenceSession.run loop {c['bare_samples_per_s']:.1f} (ratio {c['ratio']:.3f})"
          for c in doc.get("harness_checks", [])),
        "",
        "| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in doc["variants"]]
    failed = [r for r in doc["variants"] if r.get("build_error")]
    built = [r for r in doc["variants"] if "build_seconds" in r]
    if failed or built:
        lines += ["", "## Builds", ""]
        if doc.get("build_wall_seconds") is not None:
            lines.append(f"- {len(built)} variants ready in {doc['build_wall_seconds']:.1f}s of wall time with "
                         f"{doc.get('build_jobs', 1)} build job(s); cold builds took "
                         f"{sum(r['build_seconds'] for r in built if r.get('build') == 'built'):.1f}s in all, "
                         f"{sum(1 for r in built if r.get('build') == 'cache hit')} came from the cache")
        lines += [f"- **{r['variant']}**: {r['build']}: {r['build_error']}" for r in failed]
        same = [r for r in doc["variants"] if r.get("same_graph_as")]
        lines += [f"- {r['variant']}: same graph as {r['same_graph_as']} (byte-identical model.onnx; its evaluation "
                  "and speed are reused)" for r in same]
    graphs = [r for r in doc["variants"] if r.get("graph")]
    if graphs:
        lines += ["", "## Graphs", "",
                  "| variant | nodes | Δ export | fused operators | quantized nodes (dynamic / QLinear / QDQ pairs) | "
                  "fp32-weight MatMuls | weight types | int8 share of weight bytes | operators quantized | "
                  "structure |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in graphs:
            g = r["graph"]
            q = g.get("quantized_nodes", {})
            st = r.get("structure")
            verdict = "" if not st else ("pass" if st["passed"] else "FAIL: " + "; ".join(st["problems"]))
            lines.append(
                f"| {r['variant']} | {g['nodes']} | {g.get('nodes_vs_export', 0):+d} | "
                f"{', '.join(f'{k}×{v}' for k, v in g['fused_operators'].items()) or '–'} | "
                f"{q.get('dynamic', 0)} / {q.get('qlinear', 0)} / {q.get('qdq_pairs', 0)} | "
                f"{g.get('float_weight_matmuls', 0)} | "
                f"{', '.join(f'{k}×{v}' for k, v in g['initializer_types'].items())} | "
                f"{g.get('int8_weight_fraction', 0):.0%} | {', '.join(r.get('operators_quantized') or []) or '–'} | "
                f"{verdict} |")
    paired = [r for r in doc["variants"] if r.get("paired")]
    if paired:
        conf = f"{paired[0]['paired']['confidence']:.0%}"
        lines += ["", f"## Paired comparison with the baseline (same rows; gate mode: {paired[0]['gate_mode']})", "",
                  f"| variant | differing | baseline-only right | variant-only right | McNemar p (exact / mid) | "
                  f"accuracy Δ, {conf} CI (pp) | F1 Δ, {conf} CI (pp) | max / mean / p99 \\|Δlogit\\| |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in paired:
            p = r["paired"]
            acc_low, acc_high = (x * 100 for x in p["interval"])
            f1_low, f1_high = (x * 100 for x in r["f1_interval"])
            logit = r["logit_differences"]
            lines.append(
                f"| {r['variant']} | {p['differing_predictions']} | {p['baseline_only']} | {p['variant_only']} | "
                f"{p['mcnemar_p_exact']:.3g} / {p['mcnemar_p_mid']:.3g} | "
                f"{p['difference'] * 100:+.2f} [{acc_low:+.2f}, {acc_high:+.2f}] | "
                f"{r['f1_delta_pp']:+.2f} "
                f"[{f1_low:+.2f}, {f1_high:+.2f}] | {logit['max']:.3f} / {logit['mean']:.4f} / {logit['p99']:.4f} |")
    checked = [r for r in doc["variants"] if r.get("speed_check")]
    if checked:
        lines += ["", "## Same-run speed ratios (interleaved rounds, end to end)", "",
                  "| variant | reference | ratio | CI | floor | verdict |", "|---|---|---|---|---|---|"]
        for r in checked:
            c = r["speed_check"]
            lines.append(f"| {r['variant']} | {c['reference']} | {c['ratio']:.2f}x | "
                         f"{c['interval'][0]:.2f}–{c['interval'][1]:.2f}x | {c['floor'] or '–'} | "
                         f"{'pass' if c['passed'] else 'FAIL'} |")
    repeated = [r for r in doc["variants"] if r.get("samples_per_s_repeats")]
    if repeated:
        keys = ("count", "mean", "std", "min", "q1", "median", "q3", "max")
        lines += ["", f"## End-to-end samples/s over {doc['settings']['repeat']} repeats of the whole matrix", "",
                  "| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in repeated:
            d = r["samples_per_s_repeats"]
            lines.append(f"| {r['variant']} | {d['count']} | " + " | ".join(f"{d[k]:.1f}" for k in keys[1:]) + " |")
    return "\n".join(lines) + "\n"


def render_terminal(doc: dict, width: int = 200) -> str:
    from rich.console import Console
    from rich.table import Table

    columns = [c for c in COLUMNS if c[1] in TERMINAL_KEYS]
    table = Table(title=f"ortgate summary — best for this machine: {doc['best'] or 'n/a'}")
    for header, key, _ in columns:
        table.add_column(header, overflow="fold", justify="left" if key in ("variant", "gate", "fused") else "right")
    for row in doc["variants"]:
        table.add_row(*_cells(row, columns))
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue()


def write_results(doc: dict, results_dir: Path) -> tuple[Path, Path]:
    """Write summary.json and summary.md atomically (readers never see half a file)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    outputs = ((results_dir / "summary.json", json.dumps(doc, indent=2, default=str)),
               (results_dir / "summary.md", render_markdown(doc)))
    for path, text in outputs:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return outputs[0][0], outputs[1][0]
