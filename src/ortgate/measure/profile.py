"""Where a variant's inference time goes, by operator type and by node, from ONNX Runtime's own profiler.

A speed ratio says that an int8 graph is 1.4x as fast as its parent; it does not say why, or why it is not
faster. The profiler does: it times every kernel of every call. `profile_session` runs a graph with
`SessionOptions.enable_profiling` and reads the chrome-trace file back; `aggregate_trace` (pure) turns the
trace's events into per-call times per operator type and per node; `diff_profiles` lines a variant's operator
types up against its parent's; `render_profile_markdown` writes the section a summary shows.

Profiled times are inflated (the profiler times and records every kernel), so they say where the time goes,
never whether a variant is fast enough: speed verdicts come from the interleaved speed measurement.

The trace format, as onnxruntime 1.32 writes it (a JSON list of chrome-trace "X" events, ts and dur in µs,
ts counted from the profiler's start):
- `{"cat": "Session", "name": "model_run", ...}`: one per `InferenceSession.run`, spanning the whole call;
- `{"cat": "Node", "name": "<node name>_kernel_time", "args": {"op_name", "provider", "node_index", ...}}`:
  one per kernel executed, inside its call's model_run span. Older versions also wrote `_fence_before` and
  `_fence_after` Node events (synchronization, not kernel work): only `_kernel_time` events are counted.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ortgate.errors import OrtgateError, first_line

KERNEL_SUFFIX = "_kernel_time"
SAME_FRACTION = 0.05  # a change within 5% of the parent's time ...
SAME_US = 2.0  # ... or within 2 µs is "same": the profiler's own noise on a busy machine
CAVEAT = ("Profiled times are inflated by the profiler (it times and records every kernel): they show where the "
          "time goes, not whether a variant is fast enough; speed verdicts come from the interleaved speed runs.")


class ProfileError(OrtgateError):
    """A graph could not be profiled, or its trace holds no calls to aggregate."""


@dataclass(frozen=True)
class OpTime:
    """One operator type (summed over its nodes) or one node: its kernel time per inference call."""

    name: str  # the op type, or the node's name
    op_type: str
    us_per_call: float
    nodes: int  # nodes of this type (1 for a node row)
    share: float  # of all node time in the graph (0..1)


@dataclass(frozen=True)
class OperatorProfile:
    """One graph's profiled kernel time, per call: by operator type and by node, both sorted slowest first."""

    graph: str  # the caller's label (a variant id)
    calls: int  # profiled calls, warm-up calls excluded
    node_us_per_call: float  # all kernels' time per call
    run_us_per_call: float  # the session's model_run time per call: kernels plus the executor's overhead
    by_op_type: tuple[OpTime, ...]
    by_node: tuple[OpTime, ...]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> OperatorProfile:
        return cls(graph=d["graph"], calls=int(d["calls"]), node_us_per_call=float(d["node_us_per_call"]),
                   run_us_per_call=float(d["run_us_per_call"]),
                   by_op_type=tuple(OpTime(**row) for row in d["by_op_type"]),
                   by_node=tuple(OpTime(**row) for row in d["by_node"]))


# ---------------------------------------------------------------- profiling

def profile_session(onnx_path: Path, feeds: Sequence[dict[str, np.ndarray]], threads: int, work_dir: Path,
                    label: str, warmup: int = 2) -> OperatorProfile:
    """Profiles every dict in `feeds` (one call each) on a fresh session with ortgate's deployment options.
    `warmup` extra calls (cycling through `feeds`) run first and are dropped from the trace: a session's first
    calls grow its arenas and would skew the figures. The trace file is deleted once read."""
    import onnxruntime as ort

    from ortgate.build.runtime import session_options

    onnx_path = Path(onnx_path)
    _check_request(onnx_path, feeds, warmup)
    work_dir.mkdir(parents=True, exist_ok=True)
    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(work_dir / "ortgate-profile")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return aggregate_trace(_profiled_events(session, feeds, warmup, onnx_path), label, warmup)


def profile_sessions(graphs: Mapping[str, tuple[Path, Sequence[dict[str, np.ndarray]]]], threads: int,
                     work_dir: Path, warmup: int = 2) -> dict[str, OperatorProfile]:
    """Several graphs (label -> (model.onnx, feeds), the same number of feeds each) profiled call by call in turn,
    in `rotation.round_order`: the machine's noise comes and goes within seconds, so graphs profiled one after the
    other differ by it (a MatMul kernel left in fp32 read 5% faster in one graph than in its parent, profiled a
    second later); taking turns call by call, each graph sees the same machine. Each session writes its own trace
    (its own file prefix), read back and deleted as `profile_session` does."""
    import onnxruntime as ort

    from ortgate.build.runtime import session_options
    from ortgate.measure.rotation import round_order

    if len({len(feeds) for _, feeds in graphs.values()}) > 1:
        raise ProfileError("profile_sessions needs the same number of feeds for every graph")
    work_dir.mkdir(parents=True, exist_ok=True)
    sessions = {}
    for index, (label, (path, feeds)) in enumerate(graphs.items()):
        _check_request(Path(path), feeds, warmup)
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(work_dir / f"ortgate-profile-{index}")
        # An idle session's pool threads spin after each call (ORT's default), taking the cores from the next
        # session's call when calls alternate: without this, the parent's kernels read twice as slow interleaved.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[label] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        for label, session in sessions.items():
            _check_feeds(session, graphs[label][1], Path(graphs[label][0]))
        calls = warmup + len(next(iter(graphs.values()))[1])
        for call in range(calls):
            for label in round_order(list(sessions), call):
                feeds = graphs[label][1]
                session = sessions[label]
                session.run(None, feeds[(call - warmup if call >= warmup else call) % len(feeds)])
    except BaseException:
        for session in sessions.values():
            _remove(session.end_profiling())
        raise
    profiles = {}
    for label, session in sessions.items():
        trace = session.end_profiling()
        try:
            profiles[label] = aggregate_trace(_read_trace(Path(trace)), label, warmup)
        finally:
            _remove(trace)
    return profiles


def _profiled_events(session, feeds: Sequence[dict], warmup: int, onnx_path: Path) -> list[dict]:
    """The trace of the warm-up calls then every feed. Profiling is ended and its file deleted whatever
    happens: a failed run must not leave a trace behind for a later one to trip over."""
    try:
        _check_feeds(session, feeds, onnx_path)
        for feed in [feeds[index % len(feeds)] for index in range(warmup)] + list(feeds):
            session.run(None, feed)
    except BaseException:
        _remove(session.end_profiling())
        raise
    trace = session.end_profiling()
    try:
        return _read_trace(Path(trace))
    finally:
        _remove(trace)


def _remove(trace: str) -> None:
    if trace:
        Path(trace).unlink(missing_ok=True)


def _check_request(onnx_path: Path, feeds: Sequence[dict], warmup: int) -> None:
    """Fails before a session is built: a bad request should not cost a model load."""
    if not onnx_path.is_file():
        raise ProfileError(f"no ONNX graph at {onnx_path}; build the variant first, or pass its model.onnx")
    if not feeds:
        raise ProfileError("no inputs to profile: pass at least one dict of model inputs in `feeds`")
    if warmup < 0:
        raise ProfileError(f"warm-up calls must be 0 or more, not {warmup}")


def _check_feeds(session, feeds: Sequence[dict], onnx_path: Path) -> None:
    """Names the missing input: ORT's own error for it does not say which graph or what to do."""
    wanted = [i.name for i in session.get_inputs()]
    for index, feed in enumerate(feeds):
        missing = [name for name in wanted if name not in feed]
        if missing:
            raise ProfileError(f"feed {index} lacks the inputs {missing} that {onnx_path} takes (it has "
                               f"{sorted(feed)}); build feeds with the variant's tokenizer and select_inputs")


def _read_trace(trace: Path) -> list[dict]:
    try:
        events = json.loads(trace.read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"could not read ONNX Runtime's trace {trace}: {first_line(exc)}; check that "
                           f"the work directory is writable and has free space") from exc
    if isinstance(events, dict):  # the chrome-trace object form; ORT writes the bare list
        events = events.get("traceEvents", [])
    return list(events)


# ---------------------------------------------------------------- aggregating

def aggregate_trace(events: list[dict], label: str, warmup: int) -> OperatorProfile:
    """The profile of the calls after the first `warmup` ones: calls are the trace's `model_run` spans, and a
    kernel counts for the call whose span holds its start (kernels outside every kept span are dropped)."""
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) <= warmup:
        raise ProfileError(f"the trace of {label!r} holds {len(runs)} model_run events, no more than the {warmup} "
                           f"warm-up calls: profile more calls than warm-up calls")
    kept = runs[warmup:]
    per_node = _kernel_time_by_node(events, kept)
    calls = len(kept)
    node_total = sum(us for us, _ in per_node.values())
    by_node = [OpTime(name, op_type, us / calls, 1, _share(us, node_total))
               for name, (us, op_type) in per_node.items()]
    return OperatorProfile(graph=label, calls=calls, node_us_per_call=node_total / calls,
                           run_us_per_call=sum(dur for _, dur in kept) / calls,
                           by_op_type=_by_op_type(by_node), by_node=_slowest_first(by_node))


def _kernel_time_by_node(events: list[dict], runs: list[tuple[float, float]]) -> dict[str, tuple[float, str]]:
    """Node name -> (total kernel µs in `runs`, op type). Unnamed nodes are named after their op type and
    index (the graph's node_index, else their place in the call), so they stay apart."""
    starts = [ts for ts, _ in runs]
    totals: dict[str, float] = defaultdict(float)
    op_types: dict[str, str] = {}
    place: dict[int, int] = defaultdict(int)  # run -> kernels seen so far in it
    for event in sorted(_kernel_events(events), key=lambda e: e["ts"]):
        run = bisect_right(starts, event["ts"]) - 1
        if run < 0 or event["ts"] > runs[run][0] + runs[run][1]:
            continue
        args = event.get("args") or {}
        op_type = str(args.get("op_name") or "unknown")
        name = event["name"][: -len(KERNEL_SUFFIX)] or f"{op_type}#{args.get('node_index', place[run])}"
        place[run] += 1
        totals[name] += float(event["dur"])
        op_types.setdefault(name, op_type)
    return {name: (us, op_types[name]) for name, us in totals.items()}


def _kernel_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)]


def _by_op_type(by_node: list[OpTime]) -> tuple[OpTime, ...]:
    us: dict[str, float] = defaultdict(float)
    shares: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    for row in by_node:
        us[row.op_type] += row.us_per_call
        shares[row.op_type] += row.share
        nodes[row.op_type] += 1
    return _slowest_first([OpTime(op, op, us[op], nodes[op], shares[op]) for op in us])


def _slowest_first(rows: list[OpTime]) -> tuple[OpTime, ...]:
    return tuple(sorted(rows, key=lambda r: (-r.us_per_call, r.name)))


def _share(us: float, total: float) -> float:
    return us / total if total > 0 else 0.0


# ---------------------------------------------------------------- comparing

@dataclass(frozen=True)
class OpChange:
    """One operator type's time per call in the variant against its parent."""

    op_type: str
    parent_us: float | None  # None: the op type is new in the variant
    variant_us: float | None  # None: the op type is gone
    status: str  # "new" | "gone" | "faster" | "slower" | "same" (within 5% of the parent's time or 2 µs)

    @property
    def delta_us(self) -> float:
        """Variant minus parent (negative: the variant spends less time here); a missing side counts as 0."""
        return (self.variant_us or 0.0) - (self.parent_us or 0.0)


@dataclass(frozen=True)
class ProfileDiff:
    variant: OperatorProfile
    parent: OperatorProfile
    changes: tuple[OpChange, ...]  # largest |delta_us| first

    @property
    def node_time_ratio(self) -> float:
        """Parent node time / variant node time: above 1 the variant's kernels are faster (inf: it has none)."""
        if self.variant.node_us_per_call <= 0:
            return math.inf
        return self.parent.node_us_per_call / self.variant.node_us_per_call

    def as_dict(self) -> dict:
        ratio = self.node_time_ratio
        return {"variant": self.variant.as_dict(), "parent": self.parent.as_dict(),
                "node_time_ratio": ratio if math.isfinite(ratio) else None,
                "changes": [{**asdict(c), "delta_us": c.delta_us} for c in self.changes]}


def diff_profiles(variant: OperatorProfile, parent: OperatorProfile) -> ProfileDiff:
    """Every op type of either graph, with its status, largest change first."""
    ours = {row.op_type: row.us_per_call for row in variant.by_op_type}
    theirs = {row.op_type: row.us_per_call for row in parent.by_op_type}
    changes = [OpChange(op, theirs.get(op), ours.get(op), _status(theirs.get(op), ours.get(op)))
               for op in ours.keys() | theirs.keys()]
    changes.sort(key=lambda c: (-abs(c.delta_us), c.op_type))
    return ProfileDiff(variant=variant, parent=parent, changes=tuple(changes))


def _status(parent_us: float | None, variant_us: float | None) -> str:
    if parent_us is None:
        return "new"
    if variant_us is None:
        return "gone"
    delta = variant_us - parent_us
    if abs(delta) <= max(SAME_US, SAME_FRACTION * parent_us):
        return "same"
    return "faster" if delta < 0 else "slower"


# ---------------------------------------------------------------- rendering

def render_profile_markdown(profile: OperatorProfile, diff: ProfileDiff | None = None, top: int = 12) -> str:
    """The slowest `top` op types (with a diff: against the parent, and every new or gone op type whatever its
    rank, since those are what a graph transformation did), then the slowest `top` nodes."""
    lines = [f"### Where the time goes: {_cell(profile.graph)}", "", _headline(profile, diff), "", f"_{CAVEAT}_", ""]
    lines += _op_table(profile, diff, top) + [""] + _node_table(profile, top)
    return "\n".join(lines) + "\n"


def _headline(profile: OperatorProfile, diff: ProfileDiff | None) -> str:
    kernels = _share(profile.node_us_per_call, profile.run_us_per_call)
    text = (f"Kernels {profile.node_us_per_call:,.1f} µs of {profile.run_us_per_call:,.1f} µs per call "
            f"({kernels:.0%}), over {profile.calls} profiled calls.")
    if diff is not None:
        text += (f" Parent {_cell(diff.parent.graph)}: kernels {diff.parent.node_us_per_call:,.1f} µs per call; "
                 f"parent / variant kernel time {diff.node_time_ratio:.2f}x.")
    return text


def _op_table(profile: OperatorProfile, diff: ProfileDiff | None, top: int) -> list[str]:
    shown = [r.op_type for r in profile.by_op_type[:top]]
    hidden = [r for r in profile.by_op_type if r.op_type not in shown]
    if diff is None:
        rows = [_op_row(r) for r in profile.by_op_type[:top]]
        return ["| Op type | Nodes | µs/call | Share |", "|---|---:|---:|---:|", *rows, *_rest(hidden, 4)]
    shown += [c.op_type for c in diff.changes if c.status in ("new", "gone") and c.op_type not in shown]
    hidden = [r for r in hidden if r.op_type not in shown]
    mine = {r.op_type: r for r in profile.by_op_type}
    by_op = {c.op_type: c for c in diff.changes}
    rows = [_diff_row(mine.get(op), by_op[op]) for op in shown if op in by_op]
    return ["| Op type | Nodes | µs/call | Share | Parent µs/call | Change | Status |",
            "|---|---:|---:|---:|---:|---:|---|", *rows, *_rest(hidden, 7)]


def _op_row(row: OpTime) -> str:
    return f"| {_cell(row.op_type)} | {row.nodes} | {row.us_per_call:,.1f} | {row.share:.1%} |"


def _diff_row(row: OpTime | None, change: OpChange) -> str:
    nodes, us, share = (row.nodes, f"{row.us_per_call:,.1f}", f"{row.share:.1%}") if row else ("0", "–", "–")
    parent = "–" if change.parent_us is None else f"{change.parent_us:,.1f}"
    return (f"| {_cell(change.op_type)} | {nodes} | {us} | {share} | {parent} | {change.delta_us:+,.1f} µs "
            f"| {change.status} |")


def _rest(hidden: list[OpTime], columns: int) -> list[str]:
    """One line for the op types left out, so the table still adds up to the whole."""
    if not hidden:
        return []
    us, share = sum(r.us_per_call for r in hidden), sum(r.share for r in hidden)
    cells = [f"{len(hidden)} more op types", str(sum(r.nodes for r in hidden)), f"{us:,.1f}", f"{share:.1%}"]
    return ["| " + " | ".join(cells + [""] * (columns - 4)) + " |"]


def _node_table(profile: OperatorProfile, top: int) -> list[str]:
    rows = [f"| {_cell(r.name)} | {_cell(r.op_type)} | {r.us_per_call:,.1f} | {r.share:.1%} |"
            for r in profile.by_node[:top]]
    return [f"Slowest nodes ({min(top, len(profile.by_node))} of {len(profile.by_node)}):", "",
            "| Node | Op type | µs/call | Share |", "|---|---|---:|---:|", *rows]


def _cell(text: str) -> str:
    """Code-formatted and safe in a table cell: node names hold slashes, and could hold pipes."""
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"
