"""`ortgate history`: the store's series and their steps (exit 1 when a series' newest step is a regression),
the dashboard (--html), backfill (`import`) and interchange (`export --json/--bmf`); and the store options
`ortgate report --store` takes."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ortgate.errors import OrtgateError
from ortgate.history.series import METRICS
from ortgate.history.store import Selection, Store
from ortgate.spec.options import OPTIONS_BY_NAME, argparse_kwargs
from ortgate.spec.parsers import DEFAULT_STORE


def add_store_option(parser: argparse.ArgumentParser, default=None) -> None:
    """--store; a subcommand's has no default (argparse.SUPPRESS), so that it leaves one given before it."""
    parser.add_argument("--store", **{**argparse_kwargs(OPTIONS_BY_NAME["store"], "store"), "default": default,
                                      "help": "the history store: a sqlite:///PATH or postgresql://USER@HOST/DB URL, "
                                      "or a SQLite file (default: [tool.ortgate] store, else "
                                      f"{DEFAULT_STORE.replace('%', '%%')})"})


def add_selection_options(parser: argparse.ArgumentParser, *, variants: bool = True, default=None) -> None:
    add_store_option(parser, default)
    parser.add_argument("--machine", action="append", default=default, help="runs of this machine: its fingerprint "
                        "id (or a prefix) or part of its CPU name (repeat it for several)")
    parser.add_argument("--model", action="append", default=default, help="runs of this model: its fingerprint "
                        "(or a prefix) or part of its name or path (repeat it for several)")
    parser.add_argument("--since", default=default, help="runs since a time: ISO 8601 (2026-11-01, "
                        "2026-11-01T12:00) or 30d / 12h ago")
    parser.add_argument("--branch", default=default, help="runs of one git branch")
    parser.add_argument("--last", type=int, default=default, help="the newest N runs only")
    if variants:
        parser.add_argument("--variant", action="append", default=default, help="these variants only (repeat it)")


def add_parser(commands) -> None:
    history = commands.add_parser(
        "history", help="series per variant × machine × metric from the history store, with their steps "
        "(exit 1 when a series' newest step is a regression); import, export, --html dashboard",
        description=__doc__)
    add_selection_options(history)
    history.add_argument("--metric", action="append", choices=list(METRICS),
                         help="these metrics only (repeat it; default: all)")
    history.add_argument("--recent", type=int, help="fail only on a regression step within the newest N runs of "
                         "its series (default: the newest step, however old)")
    history.add_argument("--all", action="store_true", help="list every series, also those without steps")
    history.add_argument("--json", type=Path, help="write the series and steps here")
    history.add_argument("--markdown", type=Path, help="also write the table here (e.g. $GITHUB_STEP_SUMMARY)")
    history.add_argument("--html", type=Path, help="write the dashboard (index.html, plots/) into this folder")
    sub = history.add_subparsers(dest="history_command")
    backfill = sub.add_parser("import", help="store the runs of saved files: summary.json, pytest-benchmark JSON "
                              "(.benchmarks/ folders), `history export --json` files")
    backfill.add_argument("paths", type=Path, nargs="+", help="files or folders (searched for *.json)")
    # A subcommand's unset options must not overwrite what was given before it (`history --store X import F`)
    add_store_option(backfill, argparse.SUPPRESS)
    export = sub.add_parser("export", help="write stored runs as plain JSON (--json) or the newest selected run as "
                            "Bencher Metric Format (--bmf, for `bencher run --adapter json --file`)")
    add_selection_options(export, variants=False, default=argparse.SUPPRESS)
    export.add_argument("--json", type=Path, default=argparse.SUPPRESS,
                        help="all selected runs' records, as `history import` reads them")
    export.add_argument("--bmf", type=Path, help="the newest selected run as BMF JSON")


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    ago = re.fullmatch(r"(\d+)([dh])", value.strip())
    if ago:
        amount = int(ago.group(1))
        delta = timedelta(days=amount) if ago.group(2) == "d" else timedelta(hours=amount)
        return (datetime.now(UTC) - delta).replace(tzinfo=None)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise OrtgateError(f"--since {value!r} is not a time: give ISO 8601 (2026-11-01 or 2026-11-01T12:00) or "
                           "an age (30d, 12h)") from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def selection_of(args) -> Selection:
    if args.last is not None and args.last < 1:
        raise OrtgateError(f"--last must be at least 1, got {args.last}")
    variants = getattr(args, "variant", None)
    return Selection(tuple(args.machine) if args.machine else None, tuple(args.model) if args.model else None,
                     parse_since(args.since), args.branch, tuple(variants) if variants else None, args.last)


def open_store(args, *, create: bool = False) -> Store:
    """The store the command names (--store), else [tool.ortgate] store, else the default SQLite file. Reading a
    SQLite file that is not there is an error, not an empty history."""
    from ortgate.spec.settings import settings_from_args

    store = Store(settings_from_args(args, Path.cwd()).store or DEFAULT_STORE, Path.cwd())
    url = store.url
    if not create and url.get_backend_name() == "sqlite" and not Path(url.database).exists():
        raise OrtgateError(f"no history store at {url.database}: run the suite with --ortgate-store, or `ortgate "
                           "history import` saved runs, or name the store with --store")
    return store.open()


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def history_command(args) -> int:
    if args.history_command == "import":
        from ortgate.history.interchange import import_runs

        with open_store(args, create=True) as store:
            done = import_runs(store, args.paths, log=_log)
        print(f"{done['runs']} run(s) read: {done['stored']} stored, {done['already']} stored already, "
              f"{len(done['skipped'])} file(s) skipped, in {store.shown}")
        return 0
    if args.history_command == "export":
        return _export(args)
    return _show(args)


def _export(args) -> int:
    from ortgate.history.interchange import export_bencher, export_json

    if not (args.json or args.bmf):
        raise OrtgateError("history export needs --json FILE or --bmf FILE")
    with open_store(args) as store:
        if args.json:
            print(f"{export_json(store, selection_of(args), args.json)} run(s) written to {args.json}")
        if args.bmf:
            print(f"run {export_bencher(store, selection_of(args), args.bmf)} written to {args.bmf} as BMF")
    return 0


def _show(args) -> int:
    from ortgate.files import append_text, atomic_write_text
    from ortgate.history.analysis import failing, load_series
    from ortgate.report.history import history_dict, render_markdown

    if args.recent is not None and args.recent < 1:
        raise OrtgateError(f"--recent must be at least 1, got {args.recent}")
    with open_store(args) as store:
        series = load_series(store, selection_of(args), tuple(args.metric or METRICS), log=_log)
    if not series:
        raise OrtgateError(f"no stored run in {store.shown} matches: widen --machine/--since/--branch/--variant")
    bad = failing(series, args.recent)
    text = render_markdown(series, bad, all_series=args.all)
    print(text)
    if args.markdown:
        append_text(args.markdown, text)
    if args.json:
        atomic_write_text(args.json, json.dumps(history_dict(series, bad), indent=1))
    if args.html:
        from ortgate.report.dashboard import write_dashboard

        print(f"dashboard: {write_dashboard(series, args.html, log=_log)}")
    return 1 if bad else 0


def stored_runs(args) -> list:
    """`ortgate report --store`: the selected runs' records, labelled by run (for the cross-machine report)."""
    with open_store(args) as store:
        records = store.records(selection_of(args))
        if not records:
            raise OrtgateError(f"no stored run in {store.shown} matches: widen --machine/--since/--branch/--last")
        return [(Path(f"{store.shown} run {i}"), record) for i, record in records]
