from pathlib import Path

import pytest

from ortgate.errors import ConfigError
from ortgate.spec.settings import DEFAULTS, read_pyproject, resolve_settings
from ortgate.verdict.gate import Tolerance


def test_command_line_wins_over_pyproject_over_defaults(tmp_path):
    pyproject = {"tolerance": "2pp", "threads": 3, "limit": 500, "variants": ["onnx", "O99"]}
    s = resolve_settings({"threads": "1", "text_column": ["title,content"]}, pyproject, tmp_path)
    assert s.threads == 1 and s.limit == 500 and s.variants == ("onnx", "O99")
    assert s.tolerance.default == Tolerance(2.0)
    assert s.text_columns == ("title", "content")
    assert s.max_length == DEFAULTS["max_length"]
    assert s.results_dir == tmp_path / "ortgate-results"


def test_text_column_given_twice(tmp_path):
    s = resolve_settings({"text_column": ["title", "content"]}, {}, tmp_path)
    assert s.text_columns == ("title", "content")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ORTGATE_CACHE_DIR", str(tmp_path / "c"))
    assert resolve_settings({}, {}, tmp_path).cache_dir == tmp_path / "c"


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


def test_pyproject_table_is_read_and_unknown_keys_rejected(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ortgate]\ntolerance = "0.5pp"\nlimit = 100\n')
    assert read_pyproject(tmp_path) == {"tolerance": "0.5pp", "limit": 100}
    (tmp_path / "pyproject.toml").write_text('[tool.ortgate]\ntolerence = "0.5pp"\n')
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['tolerence'\]"):
        read_pyproject(tmp_path)
    assert read_pyproject(Path(tmp_path / "nowhere")) == {}


def test_the_removed_size_rule_names_its_replacement_and_the_share_accepts_one(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.ortgate]\nint8_max_size_fraction = 0.9\n")
    with pytest.raises(ConfigError, match="int8_max_size_fraction .* is gone.*int8_min_weight_share"):
        read_pyproject(tmp_path)
    assert resolve_settings({"int8_min_weight_share": "1"}, {}, tmp_path).int8_min_weight_share == 1.0
    with pytest.raises(ConfigError, match="'int8_min_weight_share' must be between 0 and 1"):
        resolve_settings({"int8_min_weight_share": "1.5"}, {}, tmp_path)
