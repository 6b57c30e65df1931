import json

import pytest

from ortgate.errors import ModelError
from ortgate.models import load_model_source


def test_tiny_model_loads_with_labels_and_fingerprint(tiny_model):
    source = load_model_source(str(tiny_model))
    assert source.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert len(source.fingerprint) == 64 and source.fingerprint == load_model_source(str(tiny_model)).fingerprint


def test_fingerprint_changes_with_the_weights(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert load_model_source(str(copy)).fingerprint != load_model_source(str(tiny_model)).fingerprint


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="model directory .*missing does not exist"):
        load_model_source(str(tmp_path / "missing"))


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file; give the model's directory"):
        load_model_source(str(tmp_path / "model.onnx"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_model_source(str(tmp_path))


def test_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ModelError, match="cannot read"):
        load_model_source(str(tmp_path))


def test_not_a_sequence_classifier(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(ModelError, match=r"not a sequence classifier \(architectures: \['BertModel'\]\)"):
        load_model_source(str(tmp_path))


def test_hub_id_without_network_says_what_to_do():
    with pytest.raises(ModelError, match="not a local directory.*Hugging Face Hub failed.*local model directory"):
        load_model_source("distilbert-base-uncased-finetuned-sst-2-english")
