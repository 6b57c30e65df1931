import json
import re
from pathlib import Path

import pytest

from ortgate.cli import main
from ortgate.errors import ConfigError
from ortgate.spec.options import OPTIONS, OPTIONS_BY_NAME, help_text, parse_option
from ortgate.spec.settings import Settings, read_pyproject, resolve_settings
from ortgate.spec.thresholds import Tolerance

pytest_plugins = ["pytester"]
NAMES = {option.name for option in OPTIONS}


def test_command_line_wins_over_pyproject_over_defaults(tmp_path):
    pyproject = {"tolerance": "2pp", "threads": 3, "limit": 500, "variants": ["onnx", "O99"]}
    s = resolve_settings({"threads": "1", "text_column": ["title,content"]}, pyproject, tmp_path)
    assert s.threads == 1 and s.limit == 500 and s.variants == ("onnx", "O99")
    assert s.tolerance.default == Tolerance(2.0)
    assert s.text_columns == ("title", "content")
    assert s.max_length == OPTIONS_BY_NAME["max_length"].default
    assert s.results_dir == tmp_path / "ortgate-results"


def test_text_column_given_twice(tmp_path):
    s = resolve_settings({"text_column": ["title", "content"]}, {}, tmp_path)
    assert s.text_columns == ("title", "content")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ORTGATE_CACHE_DIR", str(tmp_path / "c"))
    assert resolve_settings({}, {}, tmp_path).cache_dir == tmp_path / "c"
    assert Settings().cache_dir == tmp_path / "c"
    assert resolve_settings({"cache_dir": "~/elsewhere"}, {}, tmp_path).cache_dir == Path("~/elsewhere").expanduser()


def test_bare_settings_hold_the_parsed_table_defaults(tmp_path):
    bare, resolved = Settings(), resolve_settings({}, {}, tmp_path)
    for option in OPTIONS:
        assert getattr(bare, option.attr) == parse_option(option, option.default), option.name
        assert getattr(resolved, option.attr) == parse_option(option, option.default, tmp_path), option.name
    assert bare.structure_dir == Path("ortgate-structure") and resolved.structure_dir == tmp_path / "ortgate-structure"
    assert bare.threads >= 1 and bare.tolerance.default == Tolerance(1.0) and bare.speed_floors == ()
    assert bare.user_variant_ids == () and list(bare.variant_set.specs) == list(resolved.variant_set.specs)


@pytest.mark.parametrize(
    "cli, match",
    [
        ({"tolerance": "-1"}, "tolerance"),
        ({"tolerance": "lots"}, "tolerance"),
        ({"threads": "0"}, "'threads' must be >= 1"),
        ({"limit": "ten"}, "'limit' must be an integer"),
        ({"label_map": "positive"}, "DATASET_VALUE=MODEL_LABEL"),
        ({"variants": [" , "]}, "'variants' is empty"),
    ],
)
def test_invalid_settings_name_the_setting(tmp_path, cli, match):
    with pytest.raises(ConfigError, match=match):
        resolve_settings(cli, {}, tmp_path)


# A valid value of every option other than its default, as [tool.ortgate] and the command line take it.
GOOD = {
    "model": "models/mine", "dataset": "data.csv", "split": "test[:10]", "text_column": "title,content",
    "label_column": "sentiment", "label_map": "pos=POSITIVE,neg=NEGATIVE", "max_length": 64, "limit": 100,
    "variants": "onnx,O99", "preset": "quick", "matrix": "m.toml", "strict": True, "known_good": "main/summary.json",
    "build_jobs": 2,
    "structure_dir": "structure", "update_structure": True, "int8_min_weight_share": 0.9, "tolerance": "2pp",
    "gate_mode": "noninferiority", "inconclusive": "fail", "confidence": 0.9, "speed_floor": "*int8*=1.2:parent",
    "threads": 3,
    "cache_dir": "/tmp/ortgate-test-cache", "results_dir": "out", "eval_batch_size": 8, "bench_samples": 16,
    "bench_rounds": 2, "warmup_rounds": 0, "cycles": 4, "repeat": 2, "cross_machine": True, "repair": True,
    "latency_precision": 0.1, "latency_min_calls": 50, "latency_max_calls": 500, "latency_max_seconds": 30,
    "footprint_rounds": 2, "batch_sizes": "1,4", "seq_lengths": "32,64", "threads_sweep": "1,2",
    "budgets": "*int8*=p99_ms:15;memory_mb:300", "cycle_precision": "off", "min_cycles": 4,
    "store": "sqlite:///history/runs.db",
}
MATRIX = '[variants.mine]\nparent = "onnx"\noptimize = { level = 2 }\n'


def _toml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)  # a JSON string is TOML too


def test_every_option_is_accepted_in_pyproject_and_on_the_command_line(pytester):
    assert set(GOOD) == NAMES
    (pytester.path / "m.toml").write_text(MATRIX)
    args = [f"--ortgate-{name.replace('_', '-')}" + ("" if value is True else f"={value}")
            for name, value in GOOD.items()]
    from_command_line = pytester.parseconfigure(*args).stash[_settings_key()]
    pytester.makepyprojecttoml("[tool.ortgate]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in GOOD.items()))
    assert set(read_pyproject(pytester.path)) == NAMES
    from_pyproject = resolve_settings({}, read_pyproject(pytester.path), pytester.path)
    assert from_pyproject == from_command_line
    for option in OPTIONS:  # every value above took effect
        assert getattr(from_pyproject, option.attr) != parse_option(option, option.default, pytester.path)
    assert from_pyproject.user_variant_ids == ("mine",) and from_pyproject.text_columns == ("title", "content")


def _settings_key():
    from ortgate.plugin import SETTINGS_KEY

    return SETTINGS_KEY


def _squeezed(text: str) -> str:
    return "".join(text.split())  # help is wrapped, at spaces and after hyphens


def test_help_shows_the_tables_default_on_pytest_and_the_cli(pytester, capsys):
    for option in OPTIONS:
        assert "(default" not in option.help and "(default: None)" not in help_text(option), option.name
    out = _squeezed(pytester.runpytest_inprocess("--help").stdout.str())
    for option in OPTIONS:
        assert "--ortgate-" + option.name.replace("_", "-") in out
        assert _squeezed(help_text(option).replace("%%", "%")) in out, option.name
    assert "(default:1.0pp)" in out and "2%(relative)" in out
    cli = {"variants": ["preset", "matrix", "variants"], "compare": ["tolerance", "cross_machine"],
           "build": ["preset", "matrix", "variants", "model", "dataset", "build_jobs", "cache_dir"]}
    for command, names in cli.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = _squeezed(capsys.readouterr().out)
        for name in names:
            assert _squeezed(help_text(OPTIONS_BY_NAME[name]).replace("%%", "%")) in out, (command, name)


def test_pyproject_table_is_read_and_unknown_keys_rejected(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ortgate]\ntolerance = "0.5pp"\nlimit = 100\n')
    assert read_pyproject(tmp_path) == {"tolerance": "0.5pp", "limit": 100}
    (tmp_path / "pyproject.toml").write_text('[tool.ortgate]\ntolerence = "0.5pp"\n')
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['tolerence'\]") as error:
        read_pyproject(tmp_path)
    assert str(error.value).endswith(f"known: {sorted(NAMES)}")
    assert read_pyproject(Path(tmp_path / "nowhere")) == {}


# An invalid value of every option that takes more than any text, as [tool.ortgate] could hold it.
BAD = {
    "text_column": " , ", "label_map": "positive", "max_length": "0", "limit": "ten", "variants": [" , "],
    "preset": "huge", "matrix": "nope.toml", "strict": "yes", "build_jobs": 0, "update_structure": 1,
    "int8_min_weight_share": 1.5, "tolerance": "lots", "gate_mode": "strict", "inconclusive": "maybe", "confidence": 1,
    "speed_floor": "O99", "threads": 0, "eval_batch_size": "x", "bench_samples": 0, "bench_rounds": True,
    "warmup_rounds": -1, "cycles": 0, "repeat": 0, "cross_machine": "maybe", "repair": "perhaps",
    "latency_precision": 0,
    "latency_min_calls": 5, "latency_max_calls": "many", "latency_max_seconds": -1, "footprint_rounds": 0,
    "batch_sizes": "1,0", "seq_lengths": "2", "threads_sweep": "two", "budgets": "*int8*=p95_ms:15",
    "cycle_precision": 2, "min_cycles": 1, "store": "mysql://ci@db/runs",
}
ANY_TEXT = {"model", "dataset", "split", "label_column", "structure_dir", "cache_dir", "results_dir", "known_good"}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_names_the_setting(tmp_path, name):
    assert set(BAD) | ANY_TEXT == NAMES
    with pytest.raises(ConfigError) as error:
        resolve_settings({}, {name: BAD[name]}, tmp_path)
    assert re.search(name.replace("_", "[_-]"), str(error.value)), str(error.value)


def test_the_removed_size_rule_names_its_replacement_and_the_share_accepts_one(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.ortgate]\nint8_max_size_fraction = 0.9\n")
    with pytest.raises(ConfigError, match="int8_max_size_fraction .* is gone.*int8_min_weight_share.*default 0.99"):
        read_pyproject(tmp_path)
    assert resolve_settings({"int8_min_weight_share": "1"}, {}, tmp_path).int8_min_weight_share == 1.0
    with pytest.raises(ConfigError, match="'int8_min_weight_share' must be between 0 and 1"):
        resolve_settings({"int8_min_weight_share": "1.5"}, {}, tmp_path)


def test_a_latency_minimum_above_its_maximum_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'latency_min_calls' \\(500\\) is more than 'latency_max_calls' \\(100\\)"):
        resolve_settings({"latency_min_calls": "500", "latency_max_calls": "100"}, {}, tmp_path)
