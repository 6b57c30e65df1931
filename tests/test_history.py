"""`ortgate history` on a SQLite store of synthetic runs (seeded noise): steps named by the commit or library
version that moved, exit 1 when a series' newest step is a regression, import/export, report --store."""

import json
from dataclasses import replace

import numpy as np
import pytest

from ortgate.cli import main
from ortgate.history.analysis import cause, cause_near, failing, load_series, shrunk_noise
from ortgate.history.series import METRICS, Point, RunInfo
from ortgate.history.store import Provenance, Selection, Store
from test_store import run_of

NOISE = 0.031  # the median spread between runs of a same-run ratio, measured on 8 saved runs (README)


def _fill(path, ratios, *, cpu="epyc", versions_from=None, accuracy=None):
    with Store(str(path)) as store:
        for i, ratio in enumerate(ratios):
            run = run_of(i, cpu=cpu, ratio=float(ratio), accuracy=accuracy[i] if accuracy else 0.9)
            if versions_from is not None and i >= versions_from:
                run = replace(run, versions={"onnxruntime": "1.33.0"})
            store.append(run, Provenance("test"))


def _noisy(n, level, seed, step_at=None, step=1.0):
    rng = np.random.default_rng(seed)
    values = level * np.exp(rng.normal(0, NOISE, n))
    if step_at is not None:
        values[step_at:] *= step
    return values


def test_a_regression_step_is_found_named_and_fails_the_command(tmp_path, capsys):
    db = tmp_path / "h.db"
    _fill(db, _noisy(60, 4.0, seed=1, step_at=50, step=0.85), versions_from=50)
    assert main(["history", "--store", str(db), "--metric", "ratio", "--json", str(tmp_path / "h.json")]) == 1
    out = capsys.readouterr().out
    assert "Newest step is a regression" in out and "`int8` ratio on epyc" in out
    doc = json.loads((tmp_path / "h.json").read_text())
    [series] = [s for s in doc["series"] if s["steps"]]
    [step] = series["steps"]
    assert abs(step["index"] - 50) <= 2 and step["kind"] == "regression"
    assert "onnxruntime 1.32.0 → 1.33.0" in step["cause"] and "commit" in step["cause"]
    assert float(step["change"].rstrip("%")) == pytest.approx(-15, abs=3)
    # --recent: a regression older than the newest 5 runs of its series no longer fails the job
    assert main(["history", "--store", str(db), "--metric", "ratio", "--recent", "5"]) == 0


def test_an_improvement_or_a_flat_history_passes(tmp_path, capsys):
    up, flat = tmp_path / "up.db", tmp_path / "flat.db"
    _fill(up, _noisy(40, 4.0, seed=2, step_at=30, step=1.2))
    _fill(flat, _noisy(40, 4.0, seed=3))
    assert main(["history", "--store", str(up), "--metric", "ratio"]) == 0
    assert "improvement +" in capsys.readouterr().out
    assert main(["history", "--store", str(flat)]) == 0
    assert "No steps detected" in capsys.readouterr().out


def test_an_accuracy_drop_is_a_step_however_quiet_the_series(tmp_path):
    db = tmp_path / "acc.db"
    accuracy = [0.9] * 20 + [0.895] * 6  # exactly reproducible, then 0.5pp lower
    _fill(db, [4.0] * 26, accuracy=accuracy)
    with Store(str(db)) as store:
        series = load_series(store, Selection(variants=("int8",)), ("accuracy",))
    [s] = series
    assert [(st.index, st.kind, st.change) for st in s.steps] == [(20, "regression", "-0.50pp")]
    assert failing(series) == series


def test_the_table_draws_the_newest_runs_as_a_sparkline():
    from ortgate.history.series import Series
    from ortgate.report.history import sparkline

    run = RunInfo(1, "2026-11-01T00:00:00", "m", "cpu")
    rising = Series("v", "m", METRICS["ratio"], [Point(run, 1.0 + i) for i in range(30)])
    assert sparkline(rising) == "".join(sorted(sparkline(rising))) and len(sparkline(rising)) == 24
    assert sparkline(rising)[0] == "▁" and sparkline(rising)[-1] == "█"
    assert sparkline(Series("v", "m", METRICS["ratio"], [Point(run, 2.0)] * 5)) == "▄" * 5


def test_noise_is_pooled_for_short_series_and_small_memory_steps_are_dropped():
    assert shrunk_noise(0.009, 8, 0.031) == pytest.approx(((8 * 0.009**2 + 20 * 0.031**2) / 28) ** 0.5)
    assert shrunk_noise(0.03, 1000, 0.01) == pytest.approx(0.03, rel=0.01) and shrunk_noise(0.02, 5, None) == 0.02
    before = RunInfo(1, "2026-11-01T00:00:00", "m", "cpu", "a" * 40, "main", {"onnxruntime": "1.32.0", "torch": "2"})
    after = RunInfo(2, "2026-11-02T00:00:00", "m", "cpu", "b" * 40, "main", {"onnxruntime": "1.33.0", "torch": "2"})
    assert cause(before, after) == f"commit {'a' * 10} → {'b' * 10}; onnxruntime 1.32.0 → 1.33.0"
    assert cause(before, before) == ""
    runs = [replace(before, run_id=i, commit=f"{i:x}" * 40, versions={"onnxruntime": "1.33.0" if i >= 4 else "1.32.0"})
            for i in range(8)]
    points = [Point(r, 1.0) for r in runs]
    assert cause_near(points, 5) == (f"commit {'4' * 10} → {'5' * 10}; "
                                     "nearby: onnxruntime 1.32.0 → 1.33.0 (1 run before, run 4)")
    assert cause_near(points, 4) == f"commit {'3' * 10} → {'4' * 10}; onnxruntime 1.32.0 → 1.33.0"
    assert "nearby" not in cause_near(points, 7)  # 3 runs after the upgrade: not named
    assert METRICS["peak_rss_mb"].min_change == 0.02


def test_selection_options_and_bad_input(tmp_path, capsys):
    db = tmp_path / "h.db"
    _fill(db, _noisy(12, 4.0, seed=4), cpu="epyc")
    _fill(db, _noisy(12, 3.0, seed=5), cpu="xeon")  # another machine: its own series
    assert main(["history", "--store", str(db), "--all", "--machine", "xeon", "--metric", "ratio"]) == 0
    out = capsys.readouterr().out
    assert "| `int8` | xeon | ratio | 12 | " in out and "epyc" not in out.split("\n", 1)[1]
    assert main(["history", "--store", str(tmp_path / "none.db")]) == 2
    assert "no history store at" in capsys.readouterr().err
    assert main(["history", "--store", str(db), "--since", "yesterday"]) == 2
    assert "--since 'yesterday' is not a time" in capsys.readouterr().err
    assert main(["history", "--store", str(db), "--machine", "arm"]) == 2
    assert "no stored run" in capsys.readouterr().err


def test_import_export_and_report_from_the_store(tmp_path, capsys):
    db = tmp_path / "h.db"
    _fill(db, _noisy(4, 4.0, seed=6), cpu="epyc")
    _fill(db, _noisy(4, 3.0, seed=7), cpu="xeon")
    exported, bmf = tmp_path / "runs.json", tmp_path / "bmf.json"
    assert main(["history", "export", "--store", str(db), "--json", str(exported), "--bmf", str(bmf),
                 "--machine", "xeon"]) == 0
    assert len(json.loads(exported.read_text())["runs"]) == 4 and "speed-ratio" in json.loads(bmf.read_text())["int8"]
    other = tmp_path / "other.db"
    assert main(["history", "import", str(exported), "--store", str(other)]) == 0
    assert "4 run(s) read: 4 stored" in capsys.readouterr().out
    assert main(["history", "--store", str(other), "import", str(exported)]) == 0  # options before the subcommand
    assert "4 stored already" in capsys.readouterr().out
    assert main(["history", "--store", str(db), "--machine", "epyc", "export", "--bmf", str(bmf)]) == 0
    assert json.loads(bmf.read_text())["int8"]["throughput"]["value"] == pytest.approx(50 * 4.0, rel=0.2)
    assert main(["report", "--store", str(db), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "epyc" in text and "xeon" in text
    assert main(["report", str(exported), "--store", str(db)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["history", "export", "--store", str(db)]) == 2


def test_the_compiled_routine_gives_what_ruptures_kernelcpd_gives():
    import ruptures

    from ortgate.history.changepoints import _ekcpd, segment_ends

    assert _ekcpd() is not None  # loaded on its own, without the package's scipy import
    rng = np.random.default_rng(14)
    for trial in range(40):
        z = rng.normal(size=int(rng.integers(6, 300)))
        z[len(z) // 2:] += rng.choice([0.0, 1.0, 3.0])
        for penalty in (4.0, 12.0):
            expected = ruptures.KernelCPD(kernel="linear", min_size=3).fit(z).predict(pen=penalty)
            assert segment_ends(z, penalty, 3) == tuple(int(i) for i in expected), (trial, penalty)


def test_source_control_names_commit_branch_and_a_dirty_tree(tmp_path):
    import subprocess

    from ortgate.record.provenance import source_control

    assert source_control(tmp_path) is None  # not a repository
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q", "-b", "feature"], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert source_control(tmp_path) == {"commit": head, "branch": "feature", "dirty": False}
    (tmp_path / "a.txt").write_text("b")
    assert source_control(tmp_path)["dirty"] is True
    subprocess.run([*git, "checkout", "-q", "--detach"], check=True)
    assert source_control(tmp_path)["branch"] is None  # a CI checkout's detached HEAD


def test_runs_of_two_models_on_one_machine_are_two_series_not_steps(tmp_path, capsys):
    """Found by storing the architecture matrix's runs: DistilBERT, RoBERTa, ... on one machine had been one series."""
    from ortgate.record.result import ModelInfo
    from ortgate.report.dashboard import write_dashboard

    db = tmp_path / "h.db"
    ratios = _noisy(24, 1.0, seed=8)
    with Store(str(db)) as store:
        for i, ratio in enumerate(ratios):
            name, level = ("distilbert", 4.0) if i % 2 else ("roberta", 2.0)  # interleaved: 2x apart
            run = replace(run_of(i, ratio=float(level * ratio)),
                          model=ModelInfo(f"/models/{name}", f"/models/{name}", f"{name}-fp", name, ["N", "P"]))
            store.append(run, Provenance("test"))
        series = load_series(store, Selection(variants=("int8",)), ("ratio",))
        assert sorted((s.model.split(" ")[0], len(s.points)) for s in series) == [
            ("models/distilbert", 12), ("models/roberta", 12)]
        for s in series:  # each series holds its own model's runs only, and no 2x step between models
            level = 4.0 if "distilbert" in s.model else 2.0
            assert all(0.8 * level < p.value < 1.2 * level for p in s.points)
            assert all(0.8 < st.after / st.before < 1.25 for st in s.steps)
        assert len(load_series(store, Selection(model=("roberta",), variants=("int8",)), ("ratio",))) == 1
    index = write_dashboard(series, tmp_path / "dash")
    assert index.read_text().count('class="block"') == 2
    assert main(["history", "--store", str(db), "--metric", "ratio", "--all", "--variant", "int8"]) == 0
    out = capsys.readouterr().out
    assert "| variant | machine | model | metric |" in out and "models/roberta (roberta-" in out
