"""`ortgate compare` on saved runs: synthetic round times with known effects, and the CLI's exit code."""

import json

import numpy as np
import pytest

from ortgate.cli import main
from ortgate.errors import OrtgateError
from ortgate.record.result import VariantResult
from ortgate.report.compare import compare_runs, render_markdown
from records import benchmark_json, make_run


def run(times: dict, cpu="epyc", accuracy=None, predictions=None, labels=None):
    """A run record with these round times per (variant, mode) and these accuracies."""
    names = list(dict.fromkeys([v for v, _ in times] + list(accuracy or {})))
    variants = [VariantResult(v, round_seconds={m: t for (w, m), t in times.items() if w == v} or None,
                              accuracy=(accuracy or {}).get(v)) for v in names]
    return make_run(variants, cpu=cpu, labels=labels, predictions=predictions)


def rounds(center, n=10, seed=0, spread=0.01):
    return list(center * (1 + np.random.default_rng(seed).normal(0, spread, n)))


def test_a_machine_twice_as_slow_is_not_a_regression():
    old = run({("pytorch", "end-to-end"): rounds(1.0), ("int8", "end-to-end"): rounds(0.25, seed=1)})
    new = run({("pytorch", "end-to-end"): rounds(2.0, seed=2), ("int8", "end-to-end"): rounds(0.5, seed=3)})
    [row] = compare_runs(old, new)
    assert row.verdict == "no change" and abs(row.change) < 0.05


def test_a_slower_variant_on_the_same_machine_is_a_regression():
    old = run({("pytorch", "end-to-end"): rounds(1.0), ("int8", "end-to-end"): rounds(0.25, seed=1)})
    new = run({("pytorch", "end-to-end"): rounds(1.0, seed=2), ("int8", "end-to-end"): rounds(0.30, seed=3)})
    [row] = compare_runs(old, new)
    assert row.verdict == "regression" and row.change == pytest.approx(0.2, abs=0.03) and row.p_value < 0.05
    assert "**regression**" in render_markdown([row], "old.json", "new.json")
    [back] = compare_runs(new, old)
    assert back.verdict == "improvement"


def test_without_a_baseline_there_is_no_verdict():
    old = run({("int8", "end-to-end"): rounds(0.25)})
    [row] = compare_runs(old, old)
    assert row.verdict == "insufficient evidence" and "baseline" in row.note


def test_accuracy_drop_beyond_tolerance_with_paired_test():
    labels = [1] * 100
    old = run({}, accuracy={"int8": 0.90}, predictions={"int8": [1] * 90 + [0] * 10}, labels=labels)
    new = run({}, accuracy={"int8": 0.85}, predictions={"int8": [1] * 85 + [0] * 15}, labels=labels)
    [row] = compare_runs(old, new)
    assert row.kind == "accuracy" and row.verdict == "regression" and "5 predictions changed" in row.note
    assert row.p_value == pytest.approx(0.0625)  # McNemar exact on 5 discordant rows
    [same] = compare_runs(old, old)
    assert same.verdict == "no change"


def test_runs_from_different_cpus_need_consent():
    old = run({("pytorch", "end-to-end"): rounds(1.0), ("int8", "end-to-end"): rounds(0.25)}, cpu="epyc")
    new = run({("pytorch", "end-to-end"): rounds(1.0), ("int8", "end-to-end"): rounds(0.25)}, cpu="graviton")
    with pytest.raises(OrtgateError, match="different CPUs.*--cross-machine"):
        compare_runs(old, new)
    assert compare_runs(old, new, cross_machine=True)[0].verdict == "no change"


def test_cli_exit_code_gates_a_shell_script(tmp_path, capsys):
    old = run({("pytorch", "model-only"): rounds(1.0), ("int8", "model-only"): rounds(0.25, seed=1)})
    slow = run({("pytorch", "model-only"): rounds(1.0, seed=2), ("int8", "model-only"): rounds(0.32, seed=3)})
    for name, doc in (("old.json", old), ("new.json", slow)):
        (tmp_path / name).write_text(json.dumps(benchmark_json(doc)))
    summary = tmp_path / "summary.md"
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "old.json")]) == 0
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--markdown", str(summary)]) == 1
    assert "1 regression(s)" in capsys.readouterr().out and "int8 model-only" in summary.read_text()
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "missing.json")]) == 2


def test_a_variant_missing_from_the_new_run_is_a_regression_not_a_silent_pass():
    old = run({("pytorch", "end-to-end"): rounds(1.0), ("int8", "end-to-end"): rounds(0.25, seed=1),
               ("O99", "end-to-end"): rounds(0.5, seed=2)}, accuracy={"int8": 0.9, "O99": 0.9})
    new = run({("pytorch", "end-to-end"): rounds(1.0, seed=3), ("O99", "end-to-end"): rounds(0.5, seed=4)},
              accuracy={"O99": 0.9})
    rows = {(r.kind, r.variant): r for r in compare_runs(old, new)}
    assert rows[("speed", "O99")].verdict == "no change"
    for kind in ("speed", "accuracy"):
        assert rows[(kind, "int8")].verdict == "regression" and "missing in the new run" in rows[(kind, "int8")].note
    assert "int8 end-to-end" in render_markdown(list(rows.values()), "old", "new")


def test_nothing_comparable_is_an_error_and_exit_code_2(tmp_path, capsys):
    old = run({("pytorch", "end-to-end"): rounds(1.0), ("int8", "end-to-end"): rounds(0.25, seed=1)})
    new = run({("pytorch", "end-to-end"): rounds(1.0, seed=2)})
    with pytest.raises(OrtgateError, match="nothing to compare"):
        compare_runs(old, new)
    for name, doc in (("old.json", old), ("new.json", new)):
        (tmp_path / name).write_text(json.dumps(benchmark_json(doc)))
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 2
    assert "nothing to compare" in capsys.readouterr().err
