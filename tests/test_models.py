import json

import pytest

from ortgate.errors import ModelError
from ortgate.sources.models import load_model_source


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


def _config_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                      "model_type": "bert", **config}))
    return tmp_path


@pytest.mark.parametrize("config, message", [
    ({"id2label": {"0": "score"}}, "regression head.*predicts a score, not a class"),
    ({"problem_type": "regression", "id2label": {"0": "a", "1": "b"}}, "regression head"),
    ({"problem_type": "multi_label_classification", "id2label": {"0": "a", "1": "b", "2": "c"}},
     "multi-label head.*its own threshold"),
    ({"id2label": {"0": "a", "2": "b"}}, r"number the classes 0..1, got \[0, 2\]"),
])
def test_heads_that_do_not_predict_one_class_per_text_are_refused(tmp_path, config, message):
    with pytest.raises(ModelError, match=message):
        load_model_source(str(_config_dir(tmp_path, **config)))


def test_generic_label_names_and_many_classes_load(tmp_path):
    labels = {str(i): f"LABEL_{i}" for i in range(3)}
    source = load_model_source(str(_config_dir(tmp_path, id2label=labels)))
    assert source.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and source.model_type == "bert"


@pytest.mark.parametrize("config, tokenizer_limit, expected", [
    ({"model_type": "bert", "max_position_embeddings": 512}, 512, 512),
    ({"model_type": "bert", "max_position_embeddings": 512}, None, 512),
    ({"model_type": "bert", "max_position_embeddings": 512}, 10**30, 512),  # transformers' "no limit"
    ({"model_type": "bert", "max_position_embeddings": 512}, 256, 256),  # the tokenizer's own limit is lower
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, None, 512),
    ({"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False}, None, None),
    ({"model_type": "bert"}, None, None),
])
def test_the_models_own_length_limit(tmp_path, config, tokenizer_limit, expected):
    from ortgate.sources.models import model_max_length

    if tokenizer_limit is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": tokenizer_limit}))
    assert model_max_length(tmp_path, config) == expected


def test_bert_weights_become_a_distilbert_with_the_same_hidden_states(tiny_model, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer, BertModel, DistilBertModel

    from ortgate.sources.default_model import bert_to_distilbert, save_tokenizer

    bert_to_distilbert(tiny_model, tmp_path)
    save_tokenizer(tiny_model, tmp_path, "distilbert")
    distil = AutoModel.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(distil, DistilBertModel) and tokenizer.model_input_names == ["input_ids", "attention_mask"]
    encoded = tokenizer(["the movie was great !", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = BertModel.from_pretrained(tiny_model).eval()(**encoded).last_hidden_state
        got = distil(**encoded).last_hidden_state
    mask = encoded["attention_mask"].bool()
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_builtin_model_names():
    from ortgate.sources.default_model import builtin_model

    assert builtin_model("builtin:distilbert").architecture == "distilbert"
    assert builtin_model("builtin:distilbert-bert-tokenizer").tokenizer == "bert"
    with pytest.raises(ModelError, match="unknown built-in model 'builtin:gpt2'; choose one of builtin:minilm"):
        builtin_model("builtin:gpt2")


def test_a_model_without_its_tokenizer_is_named(tiny_model, tmp_path):
    import shutil

    from ortgate.sources.models import load_tokenizer

    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, tmp_path / name)
    source = load_model_source(str(tmp_path))
    assert source.max_positions == 64 and source.max_length == 64
    with pytest.raises(ModelError, match="cannot load the tokenizer of .*save the model with its tokenizer"):
        load_tokenizer(source.path)
