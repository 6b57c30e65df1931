"""Shape and thread sweep figures: valid, non-blank images, written atomically."""

import numpy as np
import pytest

from ortgate.report import plots
from ortgate.report.plots import plot_shapes, plot_threads, shapes_figure, threads_figure

VARIANTS = (("pytorch", 1.0), ("onnx", 1.8), ("dynamic-int8", 3.1))


def shape_rows() -> list[dict]:
    return [{"variant": v, "batch": b, "seq_len": n, "threads": 2, "samples_per_s": f * 2000 * b**0.6 / n**0.8}
            for v, f in VARIANTS for b in (1, 8, 32) for n in (16, 64, 128, 512)]


def thread_rows() -> list[dict]:
    speeds = {1: 300.0, 2: 496.0, 4: 450.0, 8: 400.0, 16: 341.0}
    return [{"variant": v, "batch": 1, "seq_len": 22, "threads": t, "samples_per_s": f * s}
            for v, f in VARIANTS for t, s in speeds.items()]


def read_image(path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


@pytest.mark.parametrize(("plot", "rows"), [(plot_shapes, shape_rows), (plot_threads, thread_rows)])
def test_figures_are_valid_non_blank_pngs(plot, rows, tmp_path):
    path = tmp_path / "figure.png"
    assert plot(rows(), path, "tiny model, 2 cores") == path
    image = read_image(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # lines and text, not one flat colour
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary file left behind


def test_shapes_have_a_panel_per_batch_size_and_a_dashed_baseline():
    figure = shapes_figure(shape_rows(), "t")
    assert [ax.get_title() for ax in figure.axes] == ["batch 1", "batch 8", "batch 32"]
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "128", "512"]
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"pytorch": "--", "onnx": "-", "dynamic-int8": "-"}
    colors = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in figure.axes]
    assert colors[0] == colors[1] == colors[2]  # a variant keeps its colour in every panel
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["pytorch", "onnx", "dynamic-int8"]


def test_shape_lines_name_their_thread_count_when_the_rows_mix_counts():
    rows = [{**r, "threads": t} for r in shape_rows() if r["variant"] == "onnx" for t in (1, 4)]
    labels = {line.get_label() for line in shapes_figure(rows, "t").axes[0].get_lines()}
    assert labels == {"onnx (1 threads)", "onnx (4 threads)"}


def test_threads_figure_marks_the_best_count_and_names_the_shape():
    figure = threads_figure(thread_rows(), "MiniLM int8")
    assert figure.get_suptitle() == "MiniLM int8 (batch 1, 22 tokens)"
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend[2] == "dynamic-int8 (best: 2 threads, 1,538/s)"
    stars = [line for line in figure.axes[0].get_lines() if line.get_marker() == "*"]
    assert [tuple(line.get_xdata()) for line in stars] == [(2,)] * 3


def test_unmeasured_rows_are_left_out_and_no_rows_is_an_error(tmp_path):
    rows = [*thread_rows(), {"variant": "O99", "batch": 1, "seq_len": 22, "threads": 4, "samples_per_s": None}]
    assert "O99" not in {line.get_label() for line in threads_figure(rows, "t").axes[0].get_lines()}
    with pytest.raises(ValueError, match="no measured rows"):
        plot_shapes([{"variant": "onnx", "batch": 1, "seq_len": 8, "samples_per_s": 0.0}], tmp_path / "x.png", "t")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary_one(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def half_written(self, target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_written)
    with pytest.raises(OSError, match="disk full"):
        plot_shapes(shape_rows(), tmp_path / "shapes.png", "t")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = plot_threads(thread_rows(), tmp_path / "threads.png", "t")
    before = path.read_bytes()
    monkeypatch.setattr(Figure, "savefig", lambda self, target, **kwargs: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        plot_threads(thread_rows(), path, "t")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["threads.png"]


def test_the_format_follows_the_suffix(tmp_path):
    path = plots.plot_threads(thread_rows(), tmp_path / "threads.svg", "t")
    assert path.read_text().lstrip().startswith("<?xml") and "<svg" in path.read_text()
