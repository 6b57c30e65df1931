from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ortgate.errors import ConfigError
from ortgate.measure.metrics import f1_score_fast
from ortgate.measure.speed import SameRunRatio
from ortgate.spec.thresholds import (
    SpeedFloor,
    Tolerance,
    parse_speed_floors,
    parse_tolerance,
    parse_tolerance_table,
    speed_floor_for,
)
from ortgate.verdict.checks import AccuracyGates
from ortgate.verdict.gate import GateResult, SpeedCheck


def result(baseline, value, tolerance, differing=3, total=100):
    return GateResult("accuracy", "int8", "pytorch", baseline, value, tolerance, differing, total)


@pytest.mark.parametrize(
    "text, expected",
    [("1.0", Tolerance(1.0)), ("1pp", Tolerance(1.0)), ("0.5pp", Tolerance(0.5)), ("2%", Tolerance(2.0, True)),
     (0, Tolerance(0.0)), (1.5, Tolerance(1.5))],
)
def test_parse_tolerance(text, expected):
    assert parse_tolerance(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1", "-0.5pp", "nan", "inf", "1.0x", "", True])
def test_invalid_tolerance_is_a_config_error(text):
    with pytest.raises(ConfigError, match="tolerance"):
        parse_tolerance(text)


def test_table_per_variant_globs_first_match_wins():
    table = parse_tolerance_table("0.5pp,static-int8=3pp,O99-*=2%,O99-dynamic-int8-arm64=9pp")
    assert table.default == Tolerance(0.5)
    assert table.for_variant("static-int8") == Tolerance(3.0)
    assert table.for_variant("O99-dynamic-int8-arm64") == Tolerance(2.0, True)
    assert table.for_variant("onnx") == Tolerance(0.5)


def test_table_from_pyproject_mapping_and_default():
    table = parse_tolerance_table({"default": "2pp", "static-int8": 5})
    assert table.default == Tolerance(2.0) and table.for_variant("static-int8") == Tolerance(5.0)
    assert parse_tolerance_table(None).default == Tolerance(1.0)


def test_table_entry_with_bad_value_names_it():
    with pytest.raises(ConfigError, match="'x'"):
        parse_tolerance_table("1pp,static-int8=x")


def test_absolute_gate_arithmetic():
    assert result(0.889, 0.880, Tolerance(1.0)).passed  # 0.9pp drop
    assert not result(0.889, 0.878, Tolerance(1.0)).passed  # 1.1pp drop
    assert result(0.889, 0.879, Tolerance(1.0)).passed  # exactly 1.0pp passes
    assert result(0.80, 0.95, Tolerance(0.0)).passed  # an improvement always passes


def test_relative_gate_is_a_share_of_the_baseline():
    # 2% of 0.5 is 1pp: a 0.9pp drop passes, a 1.1pp drop fails.
    assert result(0.5, 0.491, Tolerance(2.0, True)).passed
    assert not result(0.5, 0.489, Tolerance(2.0, True)).passed


def test_failure_message_gives_figures_tolerance_and_flips():
    message = result(0.8887, 0.532, Tolerance(1.0), differing=1071, total=3000).message
    for part in ("0.5320", "0.8887", "a drop of 35.67pp", "OUTSIDE", "1pp", "1071 of 3000 predictions differ"):
        assert part in message


@given(
    base=st.floats(0, 1),
    value=st.floats(0, 1),
    tol=st.floats(0, 100),
    relative=st.booleans(),
)
def test_passes_exactly_when_the_drop_is_within_the_allowed_drop(base, value, tol, relative):
    tolerance = Tolerance(tol, relative)
    allowed = tol / 100 * (base if relative else 1)
    r = result(base, value, tolerance)
    if base - value <= allowed:
        assert r.passed
    elif base - value > allowed + 1e-9:
        assert not r.passed


def test_noninferiority_judges_the_upper_bound_of_the_drop():
    # Point estimate: a 0.5pp drop, within 1pp. Interval [-1.4, +0.4]pp: the drop may be 1.4pp.
    point = GateResult("accuracy", "int8", "pytorch", 0.80, 0.795, Tolerance(1.0), 40, 3000,
                       interval=(-0.014, 0.004))
    strict = GateResult("accuracy", "int8", "pytorch", 0.80, 0.795, Tolerance(1.0), 40, 3000,
                        mode="noninferiority", interval=(-0.014, 0.004), mcnemar_p=0.21, mcnemar_mid_p=0.18)
    assert point.passed and not strict.passed
    assert "may be up to 1.40pp at 95% confidence" in strict.message
    assert "95% interval of the difference [-1.40, +0.40]pp" in strict.message
    assert "McNemar exact p=0.21 (mid-p 0.18)" in strict.message
    tight = GateResult("accuracy", "int8", "pytorch", 0.80, 0.795, Tolerance(1.0), 40, 3000,
                       mode="noninferiority", interval=(-0.009, 0.001))
    assert tight.passed


def test_gate_mode_is_checked():
    with pytest.raises(ConfigError, match="gate mode"):
        GateResult("accuracy", "x", "b", 0.8, 0.8, Tolerance(1.0), 0, 10, mode="strict")


# ---------------------------------------------------------------- inconclusive gates


def judged(drop, interval_of_drop, tolerance=1.5, mode="point"):
    """A gate of a given drop whose confidence interval of the drop is `interval_of_drop` (all in pp)."""
    low, high = interval_of_drop
    return GateResult("accuracy", "int8", "pytorch", 0.80, 0.80 - drop / 100, Tolerance(tolerance), 30, 372,
                      mode=mode, interval=(-high / 100, -low / 100))


def test_a_drop_the_rows_cannot_tell_from_the_tolerance_is_inconclusive_either_way():
    # The DistilBERT case: -1.6pp on 372 rows, McNemar p = 0.33; with other rows it reads -1.2pp and passes.
    fails, passes = judged(1.6, (-0.9, 4.1)), judged(1.2, (-1.3, 3.7))
    assert not fails.passed and passes.passed  # what the point gate alone says
    assert fails.inconclusive and passes.inconclusive
    assert fails.outcome == passes.outcome == "inconclusive"
    assert [fails.action(policy) for policy in ("warn", "fail", "pass")] == ["warn", "fail", "pass"]
    assert judged(-0.5, (-4.0, 3.0)).outcome == "inconclusive"  # a gain on too few rows shows nothing either


@pytest.mark.parametrize("mode", ["point", "noninferiority"])
def test_a_clear_pass_and_a_clear_fail_are_unchanged(mode):
    clear_pass, clear_fail = judged(0.3, (-0.4, 1.2), mode=mode), judged(3.0, (1.8, 4.2), mode=mode)
    assert (clear_pass.outcome, clear_fail.outcome) == ("pass", "FAIL")
    for policy in ("warn", "fail", "pass"):
        assert (clear_pass.action(policy), clear_fail.action(policy)) == ("pass", "fail")


def test_a_drop_told_from_none_keeps_the_modes_verdict():
    """The interval excludes 0 (a real drop) and straddles the tolerance: the mode judges its size, as before."""
    assert judged(1.2, (0.3, 2.1)).outcome == "pass"
    assert judged(1.8, (0.6, 3.0)).outcome == "FAIL"
    assert judged(1.2, (0.3, 2.1), mode="noninferiority").outcome == "FAIL"


@given(low=st.floats(-5, 5), width=st.floats(0, 8), where=st.floats(0, 1), tol=st.floats(0, 3),
       mode=st.sampled_from(["point", "noninferiority"]))
def test_inconclusive_exactly_when_the_interval_holds_no_drop_and_more_than_allowed(low, width, where, tol, mode):
    gate = judged(low + where * width, (low, low + width), tolerance=tol, mode=mode)  # the estimate in its interval
    d_low, d_high = (x * 100 for x in gate.drop_interval)
    if abs(d_high - tol) > 1e-6:  # away from a float tie with the tolerance
        assert gate.inconclusive == (d_low <= 0 and d_high > tol)
    if d_high < tol - 1e-6:  # the whole interval within the tolerance: a clear pass in both modes
        assert gate.outcome == "pass" and gate.action("fail") == "pass"
    if d_low > tol + 1e-6:  # the whole interval beyond it: a clear fail
        assert gate.outcome == "FAIL" and gate.action("pass") == "fail"
    if mode == "noninferiority":  # treated as a failure, an inconclusive gate is the non-inferiority verdict
        assert (gate.action("fail") == "pass") == gate.passed
    assert (gate.action("fail") == "pass") == (gate.passed and not gate.inconclusive)
    assert (gate.action("pass") == "fail") == (not gate.passed and not gate.inconclusive)


def test_an_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="inconclusive"):
        judged(1.6, (-0.9, 4.1)).action("maybe")


def rows_372(baseline_only=20, variant_only=14):
    """372 rows labelled 1: 300 both right, 38 both wrong, and the discordant ones."""
    labels = np.ones(372, dtype=int)
    rest = 372 - 300 - baseline_only - variant_only
    base = np.array([1] * 300 + [0] * rest + [1] * baseline_only + [0] * variant_only)
    var = np.array([1] * 300 + [0] * rest + [0] * baseline_only + [1] * variant_only)
    return labels, base, var


def accuracy_gates(labels, predictions, tolerance="1.5pp"):
    def evaluation(p):
        metrics = SimpleNamespace(accuracy=float(np.mean(p == labels)), f1=f1_score_fast(labels, p, 2))
        return SimpleNamespace(predictions=p, metrics=metrics, logits=np.stack([1 - p, p], axis=1).astype(float))

    evaluator = SimpleNamespace(data=SimpleNamespace(labels=labels), num_labels=2,
                                evaluate=lambda vid: evaluation(predictions[vid]))
    return AccuracyGates(evaluator, parse_tolerance_table(tolerance))


def test_the_run_gates_carry_what_the_rows_can_detect_and_say_it():
    labels, base, var = rows_372()  # -1.61pp, 34 discordant rows, McNemar exact p ≈ 0.39
    gates = accuracy_gates(labels, {"pytorch": base, "int8": var})
    gate = gates.gate("int8", "accuracy")
    assert gate.outcome == "inconclusive" and gate.mcnemar_p > 0.3
    assert 0.03 < gate.min_detectable_drop < 0.06  # about 4.4pp at 80% power
    assert 2500 < gate.rows_needed < 4500  # to detect a 1.5pp drop among 9% discordant rows
    message = gate.message
    low, high = (x * 100 for x in gate.drop_interval)
    for part in ("INCONCLUSIVE", "a drop of 1.61pp", f"interval [{low:+.2f}, {high:+.2f}]pp", "tolerance of 1.5pp",
                 f"drop of {gate.min_detectable_drop * 100:.2f}pp or more (80% power at 95% confidence)",
                 f"{gate.rows_needed:,} rows would detect one of 1.50pp"):
        assert part in message
    assert gates.gate("int8", "f1").rows_needed == gate.rows_needed  # the paired accuracy figures
    # Ten times the rows with the same shares: the drop is told from none, and judged as a drop beyond 1.5pp.
    many = [np.tile(x, 10) for x in rows_372()]
    big = accuracy_gates(many[0], {"pytorch": many[1], "int8": many[2]}).gate("int8", "accuracy")
    assert big.min_detectable_drop < gate.min_detectable_drop and big.rows_needed == gate.rows_needed
    assert big.drop_interval[0] > 0 and big.drop_interval[1] > 0.015 and big.outcome == "FAIL"


def test_speed_floors_parse_and_match():
    floors = parse_speed_floors("dynamic-int8=1.2:parent, *int8*=2x")
    assert speed_floor_for(floors, "dynamic-int8") == SpeedFloor(1.2, "parent")
    assert speed_floor_for(floors, "O99-dynamic-int8-avx2") == SpeedFloor(2.0, "baseline")
    assert speed_floor_for(floors, "onnx") is None
    assert parse_speed_floors({"*int8*": "1.5:parent"}) == (("*int8*", SpeedFloor(1.5, "parent")),)
    for bad, match in (("x=fast", "must be a number"), ("x=1.2:grandparent", "reference"), ("x", "VARIANT_GLOB"),
                       ("x=-1", "ratio > 0")):
        with pytest.raises(ConfigError, match=match):
            parse_speed_floors(bad)


def test_a_floor_fails_only_when_the_whole_interval_is_below_it():
    def check(low, high):
        measured = SameRunRatio("int8", "onnx", (low + high) / 2, (low, high), 0.95, 10)
        return SpeedCheck(measured, SpeedFloor(1.2, "parent"))

    assert check(1.1, 1.3).passed  # straddles the floor: noise, not a failure
    assert not check(1.0, 1.15).passed
    assert "whole interval lies below the floor" in check(1.0, 1.15).message
    assert SpeedCheck(SameRunRatio("x", "pytorch", 3.0, (2.8, 3.2), 0.95, 10), None).passed
