"""`ortgate` command line: prepare the default model, list or build a variant matrix ahead of a run, show
this CPU, print a summary, compare runs, report across machines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ortgate.errors import OrtgateError


def _cache_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("ORTGATE_CACHE_DIR") or "~/.cache/ortgate").expanduser()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ortgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch, verify and fine-tune a built-in model (default: the "
                                  "default model) into the cache")
    prepare.add_argument("--model", default="builtin:minilm", help="builtin:minilm (default), builtin:distilbert or "
                         "builtin:distilbert-bert-tokenizer")
    prepare.add_argument("--cache-dir", help="default: $ORTGATE_CACHE_DIR or ~/.cache/ortgate")
    listing = commands.add_parser("variants", help="list a variant matrix (preset + user matrix): id, parent, step")
    build = commands.add_parser("build", help="build a variant matrix into the cache, measuring nothing; print "
                                "each variant's build status, time and failure reason (exit 1 if any failed)")
    for sub in (listing, build):
        sub.add_argument("--preset", help="default, quick, reference or full (default: pyproject's, else default)")
        sub.add_argument("--matrix", help="TOML file of user variants ([variants.<id>] tables)")
        sub.add_argument("--variants", help="comma-separated ids or globs")
    build.add_argument("--model", help="model directory or hub id (default: the built-in model)")
    build.add_argument("--dataset", help="dataset (its held-out rows calibrate static quantization)")
    build.add_argument("--build-jobs", help="worker processes for independent builds (default 1)")
    build.add_argument("--cache-dir", help="default: $ORTGATE_CACHE_DIR or ~/.cache/ortgate")
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
    compare.add_argument("--tolerance", default="1.0pp", help="allowed accuracy drop (default 1.0pp)")
    compare.add_argument("--cross-machine", action="store_true", help="compare runs from different CPUs")
    compare.add_argument("--markdown", type=Path, help="also write the table here (e.g. $GITHUB_STEP_SUMMARY)")
    report = commands.add_parser("report", help="cross-machine report (Markdown, HTML, PNG) from summary.json files")
    report.add_argument("results", type=Path, nargs="+", help="summary.json files, one or more per machine")
    report.add_argument("--out", type=Path, default=Path("ortgate-report"), help="output folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            from ortgate.sources.default_model import builtin_model, ensure_builtin_model

            print(ensure_builtin_model(builtin_model(args.model).name, _cache_dir(args.cache_dir), log=print))
        elif args.command == "compare":
            from ortgate.report.compare import compare_runs, load_run, render_markdown
            from ortgate.verdict.gate import parse_tolerance

            rows = compare_runs(load_run(args.old), load_run(args.new), alpha=args.alpha,
                                min_effect=args.min_effect, tolerance=parse_tolerance(args.tolerance),
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
            from ortgate.report.results import read_results_file
            from ortgate.report.tables import render_terminal

            print(render_terminal(read_results_file(args.path, "an ortgate summary.json", "variants",
                                                    "is it an ortgate summary.json?")))
    except OrtgateError as exc:
        print(f"ortgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _matrix_command(args) -> int:
    from ortgate.spec.settings import read_pyproject, resolve_settings

    cli = {k: getattr(args, k, None) for k in ("preset", "matrix", "variants", "model", "dataset", "build_jobs",
                                               "cache_dir")}
    settings = resolve_settings(cli, read_pyproject(Path.cwd()), Path.cwd())
    ids = settings.variant_set.select(settings.variants)
    if args.command == "variants":
        from ortgate.build.builder import _describe

        for vid in ids:
            spec = settings.variant_set.specs[vid]
            step = _describe(spec.step) if spec.step else "eager PyTorch"
            print(f"{vid:45s} {spec.parent or '':14s} {step}")
        print(f"{len(ids)} variants (preset {settings.preset}"
              + (f", {len(settings.user_variant_ids)} user-defined" if settings.user_variant_ids else "") + ")")
        return 0
    from ortgate.session import RunSession

    session = RunSession(settings, log=print)
    session.build_all()
    for vid in ids:
        status, reason = session.build_status(vid)
        if status == "built":
            built = session.built(vid)
            status = f"{'cache hit' if built.cache_hit else 'built'} ({built.build_seconds:.1f}s build)"
        print(f"{vid:45s} {status}" + (f": {reason}" if reason else ""))
    failed = [v for v in ids if session.build_status(v)[0] == "build failed"]
    if failed:
        print(f"{len(failed)} variant(s) failed to build: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
