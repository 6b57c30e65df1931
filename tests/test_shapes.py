"""Shape and thread sweeps: exact-length inputs for every tokenizer kind, the timing rounds, the option parsers."""

import numpy as np
import pytest

from ortgate.build.runtime import OnnxPredictor, TorchPredictor
from ortgate.errors import ConfigError
from ortgate.measure import shapes
from ortgate.measure.shapes import ShapeSpeed, calls_lasting, exact_length_batch, exact_length_texts, shape_features
from ortgate.sources.tiny_models import ARCHITECTURES, TOKENIZERS
from ortgate.spec.parsers import int_list

# Rows must differ from their first tokens on: tiny sentences all start "the movie was".
TEXTS = ["good movie , i love it .", "awful product !", "the worst thing i ever bought and it broke .",
         "really nice and fine", "sad . bad . poor ."]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tokenizer(request, tmp_path_factory):
    return TOKENIZERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("seq_len", [8, 16, 37])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_tokenizer_kind_gives_exactly_seq_len_tokens(tokenizer, seq_len, batch):
    features = exact_length_batch(tokenizer, TEXTS, seq_len, batch, max_length=64)
    assert features["input_ids"].shape == (batch, seq_len) and features["input_ids"].dtype == np.int64
    assert (features["attention_mask"] == 1).all()  # no padding
    assert tokenizer.pad_token_id not in features["input_ids"]
    assert len({tuple(row) for row in features["input_ids"]}) == batch  # each row starts at another text
    ids = features["input_ids"][0].tolist()
    assert ids[-1] in tokenizer.all_special_ids  # truncation kept the closing special token


def test_rows_join_texts_in_order_starting_at_a_different_text(tokenizer):
    rows = exact_length_texts(tokenizer, TEXTS, 12, 3)
    assert [rows[r].startswith(TEXTS[r]) for r in range(3)] == [True] * 3
    assert rows[0].startswith(f"{TEXTS[0]} {TEXTS[1]}")  # joined with a space, cycling on


def test_lengths_past_the_limit_or_below_the_special_tokens_are_refused(tokenizer):
    with pytest.raises(ValueError, match="limit of 64 tokens"):
        exact_length_batch(tokenizer, TEXTS, 65, 1, max_length=64)
    with pytest.raises(ValueError, match="special tokens"):
        exact_length_batch(tokenizer, TEXTS, 2, 1, max_length=64)
    with pytest.raises(ValueError, match="no tokens"):
        exact_length_texts(tokenizer, ["", ""], 8, 1)
    with pytest.raises(ValueError, match="at least one text"):
        exact_length_texts(tokenizer, [], 8, 1)


def test_one_text_is_repeated_until_long_enough(tokenizer):
    features = exact_length_batch(tokenizer, ["good"], 40, 2, max_length=None)
    assert features["input_ids"].shape == (2, 40)


def test_input_names_pick_and_fill_the_graphs_inputs(tokenizer):
    features = exact_length_batch(tokenizer, TEXTS, 10, 2, 64, input_names=["input_ids", "token_type_ids"])
    assert list(features) == ["input_ids", "token_type_ids"]
    assert features["token_type_ids"].shape == (2, 10) and not features["token_type_ids"].any()


@pytest.fixture(scope="module")
def onnx_model(tiny_model, tmp_path_factory):
    from ortgate.build.steps import export

    out = tmp_path_factory.mktemp("shapes-onnx")
    export(tiny_model, out)
    return out


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_shape_features_feed_either_predictor(kind, tiny_model, onnx_model):
    predictor = OnnxPredictor(onnx_model, 1, 32) if kind == "onnx" else TorchPredictor(tiny_model, 1, 32)
    features = shape_features(predictor, TEXTS, 24, 3)
    assert list(features) == list(predictor.input_names)
    assert all(tuple(value.shape) == (3, 24) for value in features.values())
    assert predictor.run(features).shape == (3, 2)
    with pytest.raises(ValueError, match="limit of 32 tokens"):
        shape_features(predictor, TEXTS, 40, 1)
    assert shape_features(predictor, TEXTS, 40, 1, max_length=64)["input_ids"].shape == (1, 40)


def test_shape_features_are_what_encode_gives_the_joined_text_truncated_to_seq_len(onnx_model):
    features = shape_features(OnnxPredictor(onnx_model, 1, 32), TEXTS, 9, 1)
    truncating = OnnxPredictor(onnx_model, 1, 9)
    encoded = truncating.encode(exact_length_texts(truncating.tokenizer, TEXTS, 9, 1))
    assert list(encoded) == list(features)
    for name in features:
        np.testing.assert_array_equal(encoded[name], features[name])


def test_calls_lasting_grows_the_count_until_a_run_of_calls_lasts_long_enough(monkeypatch):
    clock = [0.0]  # a fake clock: each call of the run takes 2 ms

    def run():
        clock[0] += 0.002

    monkeypatch.setattr(shapes.time, "perf_counter", lambda: clock[0])
    assert calls_lasting(run, 0.02) == 10
    assert calls_lasting(lambda: clock.__setitem__(0, clock[0] + 0.05), 0.02) == 1  # one long call is enough


def test_shape_speed_is_a_flat_record():
    speed = ShapeSpeed("onnx", 8, 64, 2, 123.0, 40, 0.5)
    assert speed.as_dict() == {"variant": "onnx", "batch": 8, "seq_len": 64, "threads": 2,
                               "samples_per_s": 123.0, "calls": 40, "seconds": 0.5}


@pytest.mark.parametrize(("raw", "expected"), [
    ("1,8,32", (1, 8, 32)),
    ("32, 8,1,8", (1, 8, 32)),
    ([32, 1, 8], (1, 8, 32)),
    (["1,2", "4"], (1, 2, 4)),  # the option given twice
    (16, (16,)),
    (None, None),
])
def test_int_list_sorts_and_deduplicates(raw, expected):
    assert int_list(1)(raw, "batch_sizes") == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("0,8", ">= 1, got 0"),
    ("1,x", "must list integers.*'x'"),
    ([1.5], "must list integers"),
    ([True], "must list integers"),
    (" , ", "is empty"),
    ([], "is empty"),
])
def test_int_list_names_the_setting_in_errors(raw, message):
    with pytest.raises(ConfigError, match=f"'seq_lengths'.*{message}"):
        int_list(1)(raw, "seq_lengths")
