"""`ortgate profile`, `ortgate diagnose` and `ortgate repair`: one variant of the matrix, built through the cache and
checked against the same baseline rows as a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ortgate.errors import ConfigError
from ortgate.spec.options import add_cli_options
from ortgate.spec.settings import FROM_PYPROJECT
from ortgate.spec.variants import BASELINE_ID

# What the three commands read: the matrix, the model and data, the gate, the machine settings.
_RUN_OPTIONS = ["preset", "matrix", "model", "dataset", "split", "text_column", "label_column", "label_map",
                "max_length", "limit", "tolerance", "gate_mode", "confidence", "speed_floor", "threads", "cache_dir",
                "results_dir", "eval_batch_size", "bench_samples"]


def add_parsers(commands) -> None:
    profile = commands.add_parser(
        "profile", description=FROM_PYPROJECT,
        help="where a variant's time goes: ONNX Runtime's profiler by operator type and node, against its parent "
        "(or --against): which operators got faster or slower, which are new")
    profile.add_argument("variant")
    profile.add_argument("--against", help="the graph to compare with (default: the variant's parent)")
    profile.add_argument("--calls", type=int, default=32, help="profiled calls, one benchmark text each (32)")
    diagnose = commands.add_parser(
        "diagnose", description=FROM_PYPROJECT,
        help="where a quantized variant's accuracy goes: its intermediate tensors against its fp32 parent's on the "
        "calibration rows, nodes ranked by the noise they add (introduced dB), by layer and operator type")
    diagnose.add_argument("variant")
    diagnose.add_argument("--rows", type=int, default=64, help="calibration rows to run (64)")
    diagnose.add_argument("--top", type=int, default=10, help="nodes to list (10)")
    diagnose.add_argument("--any", action="store_true", help="diagnose even a variant that passes its gate")
    repair = commands.add_parser(
        "repair", description=FROM_PYPROJECT,
        help="find a variant that passes the accuracy gate, from one that fails it: remedies, then fp32 fallback of "
        "the worst nodes; a table, a Pareto plot and the entry of the fastest that passes (exit 1: none passed)")
    repair.add_argument("variant")
    repair.add_argument("--cycles", type=int, default=8, help="round-robin cycles timing the candidates (8)")
    repair.add_argument("--rows", type=int, default=64, help="calibration rows the diagnosis runs (64)")
    repair.add_argument("--fallback-only", action="store_true", help="skip the single remedies: keep the step as it "
                        "is and grow the fp32 fallback of the worst nodes only")
    for parser in (profile, diagnose, repair):
        add_cli_options(parser, _RUN_OPTIONS)
        parser.add_argument("--json", type=Path, help="also write the result as JSON here")


def _session(args):
    """The run's session, planning nothing yet: the command checks the variant first, then sets `planned_ids`."""
    from ortgate.session import RunSession
    from ortgate.spec.settings import settings_from_args

    for dest in ("calls", "rows", "cycles", "top"):
        if getattr(args, dest, 1) < 1:
            raise ConfigError(f"--{dest} must be at least 1, got {getattr(args, dest)}")
    settings = settings_from_args(args, Path.cwd())
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    return RunSession(settings, log=log)


def _explainer(session, rows: int = 64, calls: int = 32):
    from ortgate.diagnose.explain import Explainer

    s = session.settings
    return Explainer(session.plan, session.data.calibration_texts, session.data.texts[: s.bench_samples], s.threads,
                     rows=rows, calls=calls, log=session.log)


def _write_json(path: Path | None, doc: dict) -> None:
    if path is not None:
        from ortgate.files import atomic_write_text

        atomic_write_text(path, json.dumps(doc, indent=2))


def profile_command(args) -> int:
    from ortgate.diagnose.explain import check_variant
    from ortgate.measure.profile import render_profile_markdown

    session = _session(args)
    check_variant(session.variants, args.variant, "profile", quantized=False)
    against = args.against or session.variants.specs[args.variant].parent
    if against is not None:
        check_variant(session.variants, against, "profile --against", quantized=False)
    session.planned_ids = [BASELINE_ID, args.variant, *([against] if against else [])]
    explainer = _explainer(session, calls=args.calls)
    try:
        diff = explainer.profile_diff(args.variant, against) if against else None
        profile = diff.variant if diff is not None else explainer.profile(args.variant)
    finally:
        explainer.close()
    print(render_profile_markdown(profile, diff))
    _write_json(args.json, diff.as_dict() if diff else profile.as_dict())
    return 0


def diagnose_command(args) -> int:
    from ortgate.diagnose.explain import check_variant, quantized_ids
    from ortgate.measure.tensor_error import render_diagnosis_markdown
    from ortgate.verdict.checks import GATED_METRICS

    session = _session(args)
    check_variant(session.variants, args.variant, "diagnose")
    session.planned_ids = [BASELINE_ID, args.variant]
    session.prepare()
    if not args.any:
        gates = session.gates
        session.plan.built(args.variant)
        results = [gates.gate(args.variant, m) for m in GATED_METRICS]
        if all(g.passed for g in results):
            others = [v for v in quantized_ids(session.variants) if v != args.variant]
            raise ConfigError(f"diagnose: {args.variant!r} passes its gate ({results[0].drop * 100:+.2f}pp "
                              f"drop within {results[0].tolerance}); pass --any to diagnose it anyway, or give a "
                              f"failing one (quantized variants: {', '.join(others)})")
    explainer = _explainer(session, rows=args.rows)
    try:
        diagnosis = explainer.diagnose(args.variant)
    finally:
        explainer.close()
    print(render_diagnosis_markdown(diagnosis, top=args.top))
    _write_json(args.json, diagnosis.as_dict())
    return 0


def repair_command(args) -> int:
    from ortgate.diagnose.explain import check_variant
    from ortgate.diagnose.repair import Repairer
    from ortgate.report.repair import render_markdown, repair_doc, write_repair

    session = _session(args)
    check_variant(session.variants, args.variant, "repair")
    parent = session.variants.fp32_ancestor(args.variant)
    session.planned_ids = [BASELINE_ID, args.variant, *([parent] if parent else [])]
    session.prepare()
    s = session.settings
    explainer = _explainer(session, rows=args.rows)
    repairer = Repairer(session.plan, session.evaluator, explainer, s.tolerance, session.data.texts[: s.bench_samples],
                        s.gate_mode, s.confidence, cycles=args.cycles, log=session.log,
                        remedies=not args.fallback_only, speed_floors=s.speed_floors)
    try:
        result = repairer.repair(args.variant)
    finally:
        explainer.close()
    print(render_markdown(result))
    paths = write_repair(result, s.results_dir / "repair" / args.variant)
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()), file=sys.stderr)
    _write_json(args.json, repair_doc(result))
    return 0 if result.chosen is not None else 1


COMMANDS = {"profile": profile_command, "diagnose": diagnose_command, "repair": repair_command}


def run_command(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
