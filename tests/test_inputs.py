"""Inputs by what the model takes, whatever the tokenizer emits."""

import numpy as np
import pytest

from ortgate.errors import ModelError
from ortgate.sources.inputs import describe_inputs, forward_inputs, select_inputs


def test_forward_inputs_follow_the_signature():
    def distilbert_forward(input_ids=None, attention_mask=None, head_mask=None, labels=None):
        pass

    def newer_distilbert_forward(input_ids=None, attention_mask=None, **kwargs):
        pass

    def bare_forward(**kwargs):
        pass

    emitted = ["input_ids", "token_type_ids", "attention_mask"]
    assert forward_inputs(distilbert_forward, emitted) == ("input_ids", "attention_mask")
    assert forward_inputs(newer_distilbert_forward, emitted) == ("input_ids", "attention_mask")
    assert forward_inputs(bare_forward, emitted) == tuple(emitted)


def test_select_drops_extra_inputs_and_fills_neutral_ones():
    encoded = {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.array([[1, 1, 1]]),
               "token_type_ids": np.array([[0, 0, 0]])}
    assert list(select_inputs(encoded, ["input_ids", "attention_mask"])) == ["input_ids", "attention_mask"]
    roberta_like = {"input_ids": np.array([[0, 7, 2]]), "attention_mask": np.array([[1, 1, 1]])}
    filled = select_inputs(roberta_like, ["input_ids", "attention_mask", "token_type_ids"])
    np.testing.assert_array_equal(filled["token_type_ids"], [[0, 0, 0]])
    lists = select_inputs({"input_ids": [[5, 6], [7]]}, ["input_ids", "token_type_ids"])  # calibration rows
    assert lists["token_type_ids"] == [[0, 0], [0]]


def test_an_input_without_a_neutral_value_is_a_clear_error():
    with pytest.raises(ModelError, match="needs the input 'attention_mask'"):  # ones would be wrong when padded
        select_inputs({"input_ids": np.array([[1, 0]])}, ["input_ids", "attention_mask"])
    with pytest.raises(ModelError, match=r"the ONNX graph needs the input 'position_ids', which the tokenizer does "
                                         r"not produce \(it produces \['input_ids'\]\)"):
        select_inputs({"input_ids": np.array([[1]])}, ["input_ids", "position_ids"], "the ONNX graph")


def test_describe_names_what_is_dropped_and_filled():
    text = describe_inputs(["input_ids", "token_type_ids"], ["input_ids", "attention_mask"])
    assert "dropped: token_type_ids" in text and "filled with neutral values: attention_mask" in text
    assert "dropped" not in describe_inputs(["input_ids"], ["input_ids", "token_type_ids"])
