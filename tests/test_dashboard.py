"""The history dashboard from synthetic series: every variant × machine has its block and figure, the links
resolve, the plots show in a real browser, and a failed build leaves nothing half-written."""

import html
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from ortgate.errors import OrtgateError
from ortgate.history.series import METRICS, Point, RunInfo, Series, Step
from ortgate.report.dashboard import (
    IMPROVEMENT_COLOR,
    REGRESSION_COLOR,
    VALUE_COLOR,
    DashboardError,
    write_dashboard,
)

MACHINES = {"m1": "AMD EPYC 7B13 (synthetic)", "m2": "Intel Xeon 8375C <synthetic & odd>"}
START = datetime(2025, 1, 1, 10)
VARIANTS = {"onnx": None, "O2": "onnx", "O2-int8/avx2": "O2"}  # the / and the <&> check the safe names


def make_series(variants=VARIANTS, machines=MACHINES, n=40, metrics=tuple(METRICS), step_at=None,
                fail_at=(), seed=0) -> list[Series]:
    """Series for each variant × machine × metric; `step_at` puts a ratio regression (-20%) in the last
    variant on the first machine at that point, `fail_at` fails its accuracy gate at those points."""
    rng = np.random.default_rng(seed)
    out = []
    last = list(variants)[-1]
    for mi, (mid, cpu) in enumerate(machines.items()):
        runs = [RunInfo(mi * 100_000 + i, (START + timedelta(hours=7 * i)).isoformat(timespec="seconds"), mid, cpu,
                        commit=f"{i:04x}abcdef0123", versions={"onnxruntime": "1.20.0"}) for i in range(n)]
        for variant, parent in variants.items():
            stepped = variant == last and mi == 0 and step_at is not None
            for name in metrics:
                base = {"ratio": 1.5, "accuracy": 0.85, "p99_ms": 12.0, "peak_rss_mb": 450.0}[name]
                values = base * (1 + 0.01 * rng.standard_normal(n))
                if stepped and name == "ratio":
                    values[step_at:] *= 0.8
                points = [Point(run, float(v), float(v) * 0.98 if name == "ratio" else None,
                                float(v) * 1.02 if name == "ratio" else None,
                                gate="FAIL" if stepped and i in fail_at else "pass")
                          for i, (run, v) in enumerate(zip(runs, values, strict=True))]
                steps = []
                if stepped and name == "ratio":
                    before, after = float(values[:step_at].mean()), float(values[step_at:].mean())
                    steps = [Step(step_at, before, after, "regression", f"{(after / before - 1) * 100:+.1f}%",
                                  runs[step_at], "commit 0014abcdef: onnxruntime 1.20.0 -> 1.21.0")]
                out.append(Series(variant, mid, METRICS[name], points, steps, parent=parent))
    return out


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.images = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("dash") / "site"
    lines = []
    index = write_dashboard(make_series(step_at=25, fail_at=(10, 30)), out, title="test history", log=lines.append)
    return index, lines


def _anchors_by_text(page: str) -> dict[str, str]:
    """Each block's heading `variant on cpu [machine]` -> its id."""
    return {f"{v}@{m}": a for a, v, m in re.findall(
        r'<section class="block" id="([^"]+)"><h3>(.*?) on .*?\[(.*?)\]', page)}


def test_every_block_link_and_plot_exists(site):
    index, lines = site
    page = index.read_text()
    parser = Links()
    parser.feed(page)
    blocks = {html.unescape(k): a for k, a in _anchors_by_text(page).items()}
    assert set(blocks) == {f"{v}@{m}" for v in VARIANTS for m in MACHINES}
    assert len(lines) == len(blocks) + 1 and lines[0].startswith("dashboard: plot 1/6")
    for href in parser.hrefs:
        assert href.startswith("#") and href[1:] in parser.ids, href
    for anchor in blocks.values():
        assert f'href="#{anchor}"' in page  # each variant in the machine tables links to its block
    assert len(parser.images) == len(blocks)
    for src in parser.images:
        path = index.parent / src
        assert path.parent.name == "plots" and re.fullmatch(r"[A-Za-z0-9._-]+\.png", path.name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html", "plots"]
    assert [p.name for p in index.parent.parent.iterdir()] == ["site"]  # the staging folder is gone


def test_the_page_names_steps_gates_and_parents(site):
    page = site[0].read_text()
    blocks = _anchors_by_text(page)
    stepped = blocks["O2-int8/avx2@m1"]
    block = page[page.index(f'id="{stepped}"'):].split("</section>")[0]
    assert "regression at 0019abcdef (2025" in block and "onnxruntime 1.20.0 -&gt; 1.21.0" in block
    assert f'href="#{blocks["O2@m1"]}">O2</a>' in block  # its parent on the same machine
    assert f'href="#{blocks["O2-int8/avx2@m2"]}">m2</a>' in block  # itself on the other machine
    assert 'class="regression"' in page and re.search(r"newest step: -(19|20|21)\.\d% regression at 0019", page)
    assert "&lt;synthetic &amp; odd&gt;" in page  # the CPU name escaped
    assert '<td class="pass">pass</td>' in page  # the latest gate (runs 10 and 30 failed, not the newest)


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "site"
    target.write_text("not a folder")
    with pytest.raises(DashboardError, match="is a file, not a folder"):
        write_dashboard(make_series(n=5), target)
    assert target.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["site"]

    good = tmp_path / "good"
    index = write_dashboard(make_series(n=5), good)
    before = index.read_bytes()
    bad = make_series(n=5)
    bad[-1].points[2] = "not a point"  # plotting fails at the last figure, after 5 are written
    with pytest.raises(AttributeError):
        write_dashboard(bad, good)
    assert index.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["good", "site"]
    assert len(list((good / "plots").iterdir())) == 6
    write_dashboard(make_series(n=6, variants={"onnx": None}), good)  # a rebuild replaces the plots wholesale
    assert len(list((good / "plots").iterdir())) == 2 and index.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "site"]
    with pytest.raises(OrtgateError, match="no history to show"):
        write_dashboard([], tmp_path / "empty")


def _screenshot(page: Path, shot: Path, profile: Path) -> np.ndarray:
    """The whole page (the window is taller than it: a headless screenshot scrolled to an anchor is not
    repainted), RGB in [0, 1]."""
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={shot}", f"--window-size={SHOT[1]},{SHOT[0]}",
         "--hide-scrollbars", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return matplotlib.image.imread(str(shot))[..., :3]


SHOT = (6000, 1000)  # height, width


def _near(pixels: np.ndarray, color: str, tolerance: float = 0.12) -> np.ndarray:
    """Where pixels are within `tolerance` of `color` on every channel (antialiased edges fall outside)."""
    rgb = np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return (np.abs(pixels - rgb) <= tolerance).all(axis=2)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_plots_render_in_headless_chromium(site, tmp_path):
    """The figures' own colours are on screen, which nothing else on the page uses: the teal values in every
    figure, and one figure's red step line (a tall run of red in one column) and failed-gate crosses; the
    same page with blank plots has none of them, and differs from it only where the figures are."""
    index = site[0]
    with_plots = _screenshot(index, tmp_path / "with.png", tmp_path / "profile")
    blank = tmp_path / "blank"  # the same page and layout, each plot a white image of its size
    shutil.copytree(index.parent, blank)
    for png in (blank / "plots").iterdir():
        matplotlib.image.imsave(png, np.ones_like(matplotlib.image.imread(png)))
    without = _screenshot(blank / "index.html", tmp_path / "without.png", tmp_path / "profile")
    assert with_plots.shape == without.shape == (*SHOT, 3)
    teal, red = _near(with_plots, VALUE_COLOR), _near(with_plots, REGRESSION_COLOR)
    # 6 figures × 4 panels × 40 dots and their lines; the step line spans one panel's height, 2 × 4 crosses.
    assert teal.sum() > 6 * 4 * 40 * 4, teal.sum()
    rows_with_teal = np.flatnonzero(teal.any(axis=1))
    assert len(rows_with_teal) > 6 * 300  # spread over the figures' panels, not one blot
    assert red.sum() > 150 and red.sum(axis=0).max() > 60, (red.sum(), red.sum(axis=0).max())
    assert not _near(with_plots, IMPROVEMENT_COLOR).any()  # no improvement in these series
    assert not _near(without, VALUE_COLOR).any() and not _near(without, REGRESSION_COLOR).any()
    changed = np.abs(with_plots - without).max(axis=2) > 0.05
    assert changed.mean() > 0.02  # the figures' ink: values, axes, ticks, legends
    columns = np.flatnonzero(changed.any(axis=0))
    assert columns.max() - columns.min() < 9 * 80 + 10  # within the figures' width (9 in at 80 dpi)
