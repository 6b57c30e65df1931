"""`ortgate` command line: prepare the default model ahead of a run, show this CPU, print a summary."""

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
    prepare = commands.add_parser("prepare", help="fetch, verify and fine-tune the default model into the cache")
    prepare.add_argument("--cache-dir", help="default: $ORTGATE_CACHE_DIR or ~/.cache/ortgate")
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
            from ortgate.default_model import ensure_default_model

            print(ensure_default_model(_cache_dir(args.cache_dir), log=print))
        elif args.command == "compare":
            from ortgate.compare import compare_runs, load_run, render_markdown
            from ortgate.gate import parse_tolerance

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
            from ortgate.crossmachine import write_report

            for kind, path in write_report(args.results, args.out).items():
                print(f"{kind}: {path}")
        elif args.command == "cpu":
            from ortgate.isa import machine_fingerprint, suggest_preset

            preset, reason = suggest_preset()
            print(json.dumps({**machine_fingerprint(), "suggested_preset": preset, "why": reason}, indent=2))
            print("(a suggestion only: the suite measures every preset on this machine)", file=sys.stderr)
        else:
            from ortgate.report import render_terminal
            from ortgate.results import read_results_file

            print(render_terminal(read_results_file(args.path, "an ortgate summary.json", "variants",
                                                    "is it an ortgate summary.json?")))
    except OrtgateError as exc:
        print(f"ortgate: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
