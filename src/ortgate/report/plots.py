"""Figures of the shape and thread sweeps, written as image files (PNG, or SVG/PDF by the path's suffix).

Formatting only: the rows are `ShapeSpeed.as_dict()` records (variant, batch, seq_len, threads,
samples_per_s); nothing here measures. Figures are built with matplotlib's object API on the Agg canvas,
never pyplot: pyplot keeps global state and picks a GUI backend when a display is present, and a report
written at the end of a pytest session must do neither. Each file is written atomically: a reader (a CI
artifact upload, a browser refresh) sees the old figure or the new one, never half a PNG.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

# Drawn dashed: the reference every variant is compared against.
BASELINES = ("pytorch", "baseline")
PANEL_SIZE = (4.2, 3.6)  # inches per subplot
DPI = 120


def plot_shapes(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Samples/s over sequence length, one subplot per batch size side by side, one line per variant."""
    return save_figure(shapes_figure(rows, title), path)


def plot_threads(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Samples/s over intra-op thread count, one line per variant, each variant's best count starred."""
    return save_figure(threads_figure(rows, title), path)


def shapes_figure(rows: Sequence[dict], title: str):
    from matplotlib.figure import Figure

    rows = _measured(rows)
    batches = sorted({r["batch"] for r in rows})
    colors = _colors(rows)
    label_threads = len({r.get("threads") for r in rows}) > 1  # otherwise one line would hide another
    variants = len(colors)
    figure = Figure(figsize=(PANEL_SIZE[0] * len(batches) + 1.6, PANEL_SIZE[1] + 0.25 * -(-variants // 3)), dpi=DPI,
                    layout="constrained")
    axes = figure.subplots(1, len(batches), sharey=True, squeeze=False)[0]
    for ax, batch in zip(axes, batches, strict=True):
        in_panel = [r for r in rows if r["batch"] == batch]
        for (variant, threads), points in _lines(in_panel, "seq_len", label_threads).items():
            label = variant if threads is None else f"{variant} ({threads} threads)"
            _draw(ax, points, "seq_len", label, colors[variant], variant in BASELINES)
        _log2_ticks(ax, sorted({r["seq_len"] for r in in_panel}))
        _log_y(ax)
        ax.set(title=f"batch {batch}", xlabel="sequence length (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("samples/s")
    _legend(figure, axes, "outside lower center", columns=3)  # below: beside the panels it met the title
    figure.suptitle(_wrapped(title, 45 * len(batches)))
    return figure


def threads_figure(rows: Sequence[dict], title: str):
    from matplotlib.figure import Figure

    rows = _measured(rows)
    colors = _colors(rows)
    figure = Figure(figsize=(PANEL_SIZE[0] + 1.8, PANEL_SIZE[1] + 0.4 + 0.2 * len(colors)), dpi=DPI,
                    layout="constrained")
    ax = figure.subplots()
    for (variant, _), points in _lines(rows, "threads", False).items():
        best = max(points, key=lambda r: r["samples_per_s"])
        # The best count, starred and named in the legend: the finding a threads sweep reports.
        label = f"{variant} (best: {best['threads']} threads, {best['samples_per_s']:,.0f}/s)"
        _draw(ax, points, "threads", label, colors[variant], variant in BASELINES)
        ax.plot([best["threads"]], [best["samples_per_s"]], marker="*", markersize=16, color=colors[variant],
                markeredgecolor="black", linestyle="none")
    _log2_ticks(ax, sorted({r["threads"] for r in rows}))
    _log_y(ax)  # equal relative changes look equal for a fast and a slow variant
    ax.set(xlabel="intra-op threads", ylabel="samples/s")
    ax.grid(True, which="both", alpha=0.3)
    # Below the plot: the labels carry the best count and are too wide to sit beside one panel.
    _legend(figure, [ax], "outside lower center")
    figure.suptitle(_wrapped(_with_shape(title, rows), 60))
    return figure


def save_figure(figure, path: Path) -> Path:
    """Write `figure` to `path` atomically; the format comes from the suffix (png when there is none)."""
    path = Path(path)
    with _atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png")
    return path


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name in `path`'s folder (same filesystem) that replaces `path` when the block succeeds; on
    any error it is removed and `path` is left as it was (as `files.atomic_write_text`, for writers that take
    a file name rather than text)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _measured(rows: Sequence[dict]) -> list[dict]:
    # A shape that failed or was skipped has no speed; a log axis cannot show zero either.
    measured = [r for r in rows if (r.get("samples_per_s") or 0) > 0]
    if not measured:
        raise ValueError("no measured rows to plot (every samples_per_s is missing or zero)")
    return measured


def _colors(rows: Sequence[dict]) -> dict[str, str]:
    """One color per variant, the same in every subplot, in the order variants first appear: the default cycle's 10,
    or tab20's 20 for more variants (the `reference` preset has 15 distinct graphs); repeats only beyond 20."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    if len(variants) <= 10:
        return {v: f"C{i}" for i, v in enumerate(variants)}
    return {v: to_hex(colormaps["tab20"](i % 20)) for i, v in enumerate(variants)}


def _lines(rows: Sequence[dict], x: str, by_threads: bool) -> dict[tuple, list[dict]]:
    """Rows grouped into lines keyed (variant, threads or None), each sorted along `x`."""
    lines: dict[tuple, list[dict]] = {}
    for r in rows:
        lines.setdefault((r["variant"], r.get("threads") if by_threads else None), []).append(r)
    return {key: sorted(points, key=lambda r: r[x]) for key, points in lines.items()}


def _draw(ax, points: list[dict], x: str, label: str, color: str, dashed: bool) -> None:
    ax.plot([r[x] for r in points], [r["samples_per_s"] for r in points], marker="o", label=label, color=color,
            linestyle="--" if dashed else "-")


def _log2_ticks(ax, values: list[int]) -> None:
    # Lengths and thread counts are mostly powers of two: even spacing, labelled at what was measured only.
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())


def _log_y(ax) -> None:
    # Plain numbers (400, 2,000), not 4x10^2: a speed is read as a number, not an order of magnitude.
    from matplotlib.ticker import LogFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _legend(figure, axes, loc: str, columns: int = 1) -> None:
    # Outside the plots: a legend inside would hide the points it names.
    handles: dict[str, object] = {}  # by label: every subplot draws the same variants
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc=loc, fontsize="small", ncols=columns)


def _with_shape(title: str, rows: Sequence[dict]) -> str:
    """The title with the fixed shape a threads sweep ran at, when the rows say it and the title does not."""
    batches, lengths = {r.get("batch") for r in rows}, {r.get("seq_len") for r in rows}
    if len(batches) == 1 and len(lengths) == 1 and None not in batches | lengths and "batch" not in title:
        return f"{title} (batch {batches.pop()}, {lengths.pop()} tokens)"
    return title


def _wrapped(title: str, width: int) -> str:
    """The title over lines of at most `width` characters: a model's long description would run off the figure."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) or title

