"""`ortgate` command line: prepare the default model, list or build a variant matrix ahead of a run, show
this CPU, print a summary, compare runs, report across machines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.spec.options import OPTIONS, add_cli_options
from ortgate.spec.parsers import cache_dir_or_default

_FROM_PYPROJECT = "Options not given come from [tool.ortgate] in ./pyproject.toml, else the defaults shown."


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
                                  description=_FROM_PYPROJECT)
    build = commands.add_parser("build", help="build a variant matrix into the cache, measuring nothing; print "
                                "each variant's build status, time and failure reason (exit 1 if any failed)",
                                description=_FROM_PYPROJECT)
    add_cli_options(listing, ["preset", "matrix", "variants"])
    add_cli_options(build, ["preset", "matrix", "variants", "model", "dataset", "build_jobs", "cache_dir"])
    commands.add_parser("cpu", help="print this machine's CPU fingerprint as JSON")
    summary = commands.add_parser("summary", help="print a summary.json written by a run as a table")
    summary.add_argument("path", type=Path)
    compare = commands.add_parser("compare", help="compare two saved runs (pytest-benchmark JSON); "
                                  "exit 1 on a regression")
    compare.add_argument("old", type=Path)
    compare.add_argument("new", type=Path)
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    compare.add_argument("--min-effect", type=float, default=0.05,
                         help="smallest speed change that counts (0.05 = 5%%)")
    add_cli_options(compare, ["tolerance", "cross_machine"])  # raw: a str or None, True or None
    compare.add_argument("--markdown", type=Path, help="also write the table here (e.g. $GITHUB_STEP_SUMMARY)")
    report = commands.add_parser("report", help="cross-machine report (Markdown, HTML, PNG) from summary.json files")
    report.add_argument("results", type=Path, nargs="+", help="summary.json files, one or more per machine")
    report.add_argument("--out", type=Path, default=Path("ortgate-report"), help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "prepare":
            from ortgate.sources.default_model import builtin_model, ensure_builtin_model

            print(ensure_builtin_model(builtin_model(args.model).name, _cache_dir(args.cache_dir), log=print))
        elif args.command == "compare":
            from ortgate.report.compare import compare_runs, load_run, render_markdown
            from ortgate.spec.thresholds import parse_tolerance_table

            rows = compare_runs(load_run(args.old), load_run(args.new), alpha=args.alpha,
                                min_effect=args.min_effect, tolerance=parse_tolerance_table(args.tolerance),
                                cross_machine=args.cross_machine)
            text = render_markdown(rows, args.old.name, args.new.name)
            print(text)
            if args.markdown:
                with open(args.markdown, "a") as handle:
                    handle.write(text)
            return 1 if any(r.verdict == "regression" for r in rows) else 0
        elif args.command == "report":
            from ortgate.report.crossmachine import write_report

            for kind, path in write_report(args.results, args.out).items():
                print(f"{kind}: {path}")
        elif args.command in ("variants", "build"):
            return _matrix_command(args)
        elif args.command == "cpu":
            from ortgate.isa import machine_fingerprint, suggest_preset

            preset, reason = suggest_preset()
            print(json.dumps({**machine_fingerprint(), "suggested_preset": preset, "why": reason}, indent=2))
            print("(a suggestion only: the suite measures every preset on this machine)", file=sys.stderr)
        else:
            from ortgate.record.result import read_run_record
            from ortgate.report.tables import render_terminal

            print(render_terminal(read_run_record(args.path)))
    except OrtgateError as exc:
        print(f"ortgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _matrix_command(args) -> int:
    from ortgate.spec.settings import read_pyproject, resolve_settings

    cli = {option.name: getattr(args, option.name, None) for option in OPTIONS}  # those the subcommand takes
    settings = resolve_settings(cli, read_pyproject(Path.cwd()), Path.cwd())
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
