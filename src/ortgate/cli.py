"""`ortgate` command line: prepare the default model, list or build a variant matrix ahead of a run, show
this CPU, print a summary, compare runs, report across machines; profile, diagnose and repair a variant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ortgate.ab import ab_command
from ortgate.ab import add_parser as add_ab_parser
from ortgate.errors import OrtgateError
from ortgate.explain_cli import COMMANDS as DIAGNOSE_COMMANDS
from ortgate.explain_cli import add_parsers as add_diagnose_parsers
from ortgate.explain_cli import run_command as run_diagnose_command
from ortgate.files import append_text
from ortgate.history_cli import add_parser as add_history_parser
from ortgate.history_cli import add_selection_options, history_command, stored_runs
from ortgate.spec.options import add_cli_options
from ortgate.spec.parsers import cache_dir_or_default
from ortgate.spec.settings import FROM_PYPROJECT


def _cache_dir(value: str | None) -> Path:
    return cache_dir_or_default(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ortgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch, verify and fine-tune a built-in model (default: the "
                                  "default model) into the cache")
    prepare.add_argument("--model", default="builtin:minilm", help="builtin:minilm (default), builtin:distilbert or "
                         "builtin:distilbert-bert-tokenizer")
    add_cli_options(prepare, ["cache_dir"])
    listing = commands.add_parser("variants", help="list a variant matrix (preset + user matrix): id, parent, step",
                                  description=FROM_PYPROJECT)
    build = commands.add_parser("build", help="build a variant matrix into the cache, measuring nothing; print "
                                "each variant's build status, time and failure reason (exit 1 if any failed)",
                                description=FROM_PYPROJECT)
    add_cli_options(listing, ["preset", "matrix", "variants"])
    add_cli_options(build, ["preset", "matrix", "variants", "model", "dataset", "build_jobs", "cache_dir"])
    cpu = commands.add_parser("cpu", help="print this machine's CPU fingerprint, its measured GEMM kernels (fp32, "
                              "u8×s8, u8×u8; cached per CPU) and the quantization preset they point to, as JSON")
    add_cli_options(cpu, ["threads", "cache_dir"])
    cpu.add_argument("--refresh", action="store_true", help="measure the kernels again instead of reading the cache")
    cpu.add_argument("--flags-only", action="store_true", help="suggest from the CPU flags alone, measuring nothing")
    summary = commands.add_parser("summary", help="print a summary.json written by a run as a table")
    summary.add_argument("path", type=Path)
    compare = commands.add_parser("compare", help="compare saved runs (pytest-benchmark JSON or summary.json), "
                                  "one or more a side; exit 1 on a regression, 2 on an error")
    compare.add_argument("runs", type=Path, nargs="*", help="OLD NEW (one run a side); or use --old/--new")
    compare.add_argument("--old", type=Path, nargs="+", default=[], help="the old side's runs (globs expanded "
                         "by the shell)")
    compare.add_argument("--new", type=Path, nargs="+", default=[], help="the new side's runs")
    compare.add_argument("--alpha", type=float, default=0.05,
                         help="family-wise error of the job over all rows, Holm (default 0.05)")
    compare.add_argument("--min-effect", type=float, default=0.05,
                         help="smallest speed change that counts (0.05 = 5%%); no change means within it")
    compare.add_argument("--run-noise", type=float, default=None,
                         help="sd of one run's log speed ratio between runs, assumed with one run a side "
                         "(default: the README's measurement)")
    add_cli_options(compare, ["tolerance", "cross_machine"])  # raw: a str or None, True or None
    compare.add_argument("--markdown", type=Path, help="also write the table here (e.g. $GITHUB_STEP_SUMMARY)")
    calibrate = commands.add_parser("calibrate", help="A/A false failures and detection of a real slowdown of "
                                    "`ortgate compare`, on saved runs of one unchanged build "
                                    "(benchmarks/calibrate_compare.py makes them)")
    calibrate.add_argument("runs", type=Path, nargs="+", help="saved runs (pytest-benchmark JSON or summary.json)")
    calibrate.add_argument("--variant", default="O99", help="the variant to slow down (default O99)")
    calibrate.add_argument("--twin", default="O99-no-attention", help="its slower twin, timed in the same runs")
    calibrate.add_argument("--per-side", type=int, nargs="+", default=[1, 2, 3], help="runs a side (1 2 3)")
    calibrate.add_argument("--splits", type=int, default=200, help="random splits per setting (200)")
    calibrate.add_argument("--json", type=Path, help="write the figures here")
    calibrate.add_argument("--markdown", type=Path, help="write the table here")
    report = commands.add_parser("report", help="cross-machine report (Markdown, HTML, PNG) from summary.json files, "
                                 "or from the history store's runs (--store with --machine/--since/--last)")
    report.add_argument("results", type=Path, nargs="*", help="summary.json files, one or more per machine")
    report.add_argument("--out", type=Path, default=Path("ortgate-report"), help="output folder")
    add_selection_options(report, variants=False)
    add_history_parser(commands)
    add_ab_parser(commands)
    add_diagnose_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "prepare":
            from ortgate.sources.default_model import builtin_model, ensure_builtin_model

            print(ensure_builtin_model(builtin_model(args.model).name, _cache_dir(args.cache_dir), log=print))
        elif args.command == "compare":
            return _compare_command(args)
        elif args.command == "ab":
            return ab_command(args)
        elif args.command in DIAGNOSE_COMMANDS:
            return run_diagnose_command(args)
        elif args.command == "calibrate":
            return _calibrate_command(args)
        elif args.command == "report":
            return _report_command(args)
        elif args.command == "history":
            return history_command(args)
        elif args.command in ("variants", "build"):
            return _matrix_command(args)
        elif args.command == "cpu":
            return _cpu_command(args)
        else:
            from ortgate.record.result import read_run_record
            from ortgate.report.tables import render_terminal

            print(render_terminal(read_run_record(args.path)))
    except OrtgateError as exc:
        print(f"ortgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _report_command(args) -> int:
    from ortgate.report.crossmachine import load_summaries, write_report_of

    from_store = args.store is not None or any((args.machine, args.model, args.since, args.branch, args.last))
    if args.results and from_store:
        raise OrtgateError("report takes summary.json files or --store (with --machine/--since/--last), not both")
    if not args.results and not from_store:
        raise OrtgateError("report needs summary.json files, or --store to read runs from the history store")
    runs = stored_runs(args) if from_store else load_summaries(args.results)
    for kind, path in write_report_of(runs, args.out).items():
        print(f"{kind}: {path}")
    return 0


def _cpu_command(args) -> int:
    from ortgate.isa import cpu_fingerprint, machine_fingerprint, suggest_preset
    from ortgate.spec.parsers import cache_dir_or_default, threads_or_cores

    doc = machine_fingerprint()
    if args.flags_only:
        preset, reason = suggest_preset()
    else:
        from ortgate.measure.roofline import gops, measured_preset_figures, suggest_preset_measured

        threads = threads_or_cores(args.threads, "threads")
        log = lambda message: print(message, file=sys.stderr)  # noqa: E731
        figures = measured_preset_figures(threads, cache_dir_or_default(args.cache_dir), log=log,
                                          refresh=args.refresh)
        preset, reason = suggest_preset_measured(figures, cpu_fingerprint())
        doc["gemm_gops"] = {kind: round(gops(v), 1) for kind, v in figures.items()}
        doc["gemm_shape"] = {"m": 32, "k": 384, "n": 1536, "threads": threads}
        doc["flags_suggest"] = suggest_preset()[0]
    print(json.dumps({**doc, "suggested_preset": preset, "why": reason}, indent=2))
    print("(a suggestion only: the suite measures every preset on this machine)", file=sys.stderr)
    return 0


def _compare_command(args) -> int:
    from ortgate.report.compare import DEFAULT_RUN_NOISE, compare_runs, load_run, render_markdown
    from ortgate.spec.thresholds import parse_tolerance_table

    if args.runs and (args.old or args.new):
        raise OrtgateError("give either OLD NEW or --old ... --new ..., not both")
    old, new = ([args.runs[0]], [args.runs[1]]) if len(args.runs) == 2 else (args.old, args.new)
    if args.runs and len(args.runs) != 2 or not old or not new:
        raise OrtgateError("compare takes OLD NEW, or --old RUN [RUN ...] --new RUN [RUN ...]")
    for name, value, low, high in (("--alpha", args.alpha, 0, 0.5), ("--min-effect", args.min_effect, 0, 1)):
        if not low < value < high:
            raise OrtgateError(f"{name} must lie between {low} and {high}, got {value}")
    rows = compare_runs([load_run(p) for p in old], [load_run(p) for p in new], alpha=args.alpha,
                        min_effect=args.min_effect, tolerance=parse_tolerance_table(args.tolerance),
                        cross_machine=args.cross_machine,
                        run_noise=args.run_noise if args.run_noise is not None else DEFAULT_RUN_NOISE)
    names = [", ".join(p.name for p in side) for side in (old, new)]
    text = render_markdown(rows, *names, alpha=args.alpha, min_effect=args.min_effect)
    print(text)
    if args.markdown:
        append_text(args.markdown, text)
    return 1 if any(r.verdict == "regression" for r in rows) else 0


def _calibrate_command(args) -> int:
    from ortgate.files import atomic_write_text
    from ortgate.report.calibration import calibrate, render_markdown
    from ortgate.report.compare import load_run

    runs = [load_run(p) for p in args.runs]
    results = [calibrate(runs, args.variant, args.twin, n, args.splits) for n in args.per_side]
    text = render_markdown(results)
    print(text)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    if args.json:
        atomic_write_text(args.json, json.dumps([r.as_dict() for r in results], indent=2))
    return 0


def _matrix_command(args) -> int:
    from ortgate.spec.settings import settings_from_args

    settings = settings_from_args(args, Path.cwd())
    ids = settings.variant_set.select(settings.variants)
    if args.command == "variants":
        from ortgate.spec.variants import describe_step

        for vid in ids:
            spec = settings.variant_set.specs[vid]
            step = describe_step(spec.step) if spec.step else "eager PyTorch"
            print(f"{vid:45s} {spec.parent or '':14s} {step}")
        print(f"{len(ids)} variants (preset {settings.preset}"
              + (f", {len(settings.user_variant_ids)} user-defined" if settings.user_variant_ids else "") + ")")
        return 0
    from ortgate.build.builder import BuildStatus
    from ortgate.session import RunSession

    plan = RunSession(settings, log=print).plan
    plan.build_all()
    for vid in ids:
        status, reason = plan.status(vid)
        if status is BuildStatus.BUILT:
            built = plan.built(vid)
            status = f"{'cache hit' if built.cache_hit else 'built'} ({built.build_seconds:.1f}s build)"
        print(f"{vid:45s} {status or 'baseline'}" + (f": {reason}" if reason else ""))
    failed = [v for v in ids if plan.status(v)[0] is BuildStatus.BUILD_FAILED]
    if failed:
        print(f"{len(failed)} variant(s) failed to build: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
