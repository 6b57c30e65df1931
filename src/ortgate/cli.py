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
    report = commands.add_parser("report", help="cross-machine report (Markdown, HTML, PNG) from summary.json files")
    report.add_argument("results", type=Path, nargs="+", help="summary.json files, one or more per machine")
    report.add_argument("--out", type=Path, default=Path("ortgate-report"), help="output folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            from ortgate.default_model import ensure_default_model

            print(ensure_default_model(_cache_dir(args.cache_dir), log=print))
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

            try:
                doc = json.loads(args.path.read_text())
            except (OSError, ValueError) as exc:
                raise OrtgateError(f"cannot read {args.path} as an ortgate summary.json: {exc}") from None
            print(render_terminal(doc))
    except OrtgateError as exc:
        print(f"ortgate: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
