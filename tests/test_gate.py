import pytest
from hypothesis import given
from hypothesis import strategies as st

from ortgate.errors import ConfigError
from ortgate.measure.speed import SameRunRatio
from ortgate.spec.thresholds import (
    SpeedFloor,
    Tolerance,
    parse_speed_floors,
    parse_tolerance,
    parse_tolerance_table,
    speed_floor_for,
)
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
