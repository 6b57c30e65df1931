import pytest

from ortgate.errors import ConfigError
from ortgate.spec.settings import resolve_settings
from ortgate.spec.thresholds import budget_for, parse_budgets
from ortgate.verdict.budgets import BudgetChecks, BudgetItem


def test_budgets_parse_from_the_option_and_from_pyproject_alike():
    option = parse_budgets("*int8*=p99_ms:15;memory_mb:300, onnx=size_mb:100")
    table = parse_budgets({"*int8*": {"p99_ms": 15, "memory_mb": 300}, "onnx": {"size_mb": 100}})
    assert option == table
    assert str(option[0][1]) == "p99_ms ≤ 15, memory_mb ≤ 300"
    settings = resolve_settings({}, {"budgets": {"*int8*": {"p99_ms": 15}}}, ".")
    assert budget_for(settings.budgets, "O99-dynamic-int8-avx2") == {"p99_ms": (15.0, "*int8*")}


@pytest.mark.parametrize(("spec", "message"), [
    ("*int8*", "write VARIANT_GLOB=METRIC:LIMIT"),
    ("*int8*=p95_ms:15", "unknown figure 'p95_ms'"),
    ("*int8*=p99_ms:fast", "p99_ms must be a number"),
    ("*int8*=p99_ms:-1", "finite number >= 0"),
    ({"*int8*": 15}, "METRIC:LIMIT pairs"),
    ({"*int8*": {}}, "sets no limit"),
])
def test_a_bad_budget_names_what_to_fix(spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings({"budgets": spec} if isinstance(spec, str) else {}, {} if isinstance(spec, str)
                         else {"budgets": spec}, ".")


def test_each_figure_takes_the_first_pattern_that_bounds_it():
    budgets = parse_budgets({"O99-*": {"p99_ms": 10}, "*int8*": {"p99_ms": 15, "memory_mb": 300}})
    assert budget_for(budgets, "O99-dynamic-int8-arm64") == {"p99_ms": (10.0, "O99-*"), "memory_mb": (300.0, "*int8*")}
    assert budget_for(budgets, "onnx") == {}


@pytest.mark.parametrize(("interval", "outcome"), [
    ((16.0, 18.0), "FAIL"),  # the whole interval above the limit
    ((14.0, 16.0), "inconclusive"),  # straddles it: not shown over budget
    ((12.0, 15.0), "pass"),
])
def test_a_budget_fails_only_when_the_whole_interval_lies_above_it(interval, outcome):
    item = BudgetItem("p99_ms", 15.0, "*int8*", sum(interval) / 2, interval)
    assert item.outcome == outcome
    assert "p99_ms" in item.message and "15" in item.message and f"{interval[0]:.4g}" in item.message


def test_checks_fail_over_budget_and_unmeasured_figures_and_skip_variants_without_a_budget():
    figures = {("a", "p99_ms"): (20.0, (18.0, 22.0)), ("a", "memory_mb"): (100.0, (99.0, 101.0))}
    checks = BudgetChecks(parse_budgets({"a": {"p99_ms": 15, "memory_mb": 300}, "b": {"load_ms": 1}}),
                          lambda v, m: figures.get((v, m)))
    a = checks.check("a")
    assert not a.passed and [i.outcome for i in a.items] == ["FAIL", "pass"]
    assert "over budget" in a.message and "p99_ms = 20 [18, 22]" in a.message
    b = checks.check("b")
    assert not b.passed and "not measured" in b.message  # a budget nobody could check never passes
    assert checks.check("c") is None


def test_an_interval_open_above_never_passes_a_budget():
    item = BudgetItem("p99_ms", 15.0, "*", 12.0, (11.0, float("inf")))  # too few calls to bound the p99
    assert item.outcome == "inconclusive"
    assert BudgetItem("p99_ms", 10.0, "*", 12.0, (11.0, float("inf"))).outcome == "FAIL"
