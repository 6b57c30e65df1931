"""Model inputs by what the model takes, whatever its tokenizer emits.

A tokenizer and a model often disagree: a DistilBERT classifier saved with the BERT WordPiece tokenizer it
was trained with (common on the Hub) gets `token_type_ids` it has no argument for; a BERT graph asks for
`token_type_ids` that a RoBERTa-style tokenizer never emits. Every place that feeds a model (the PyTorch
baseline, ONNX predictors, static calibration, benchmarks) goes through `select_inputs`, so each feeds
exactly the inputs the model accepts: extra keys are dropped, and `token_type_ids` (0: one segment) is
filled in when a graph asks for it and the tokenizer does not emit it. (The attention mask is never
invented: callers ask the tokenizer for it, since ones would be wrong for a padded batch.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ortgate.errors import ModelError

# Inputs whose value is implied for a single text: one segment.
NEUTRAL_VALUES = {"token_type_ids": 0}


def forward_inputs(forward: Callable, emitted: Sequence[str]) -> tuple[str, ...]:
    """Which of the tokenizer's outputs `forward` names as parameters. Only a forward that names none of them
    (a bare **kwargs) gets them all: newer transformers add `**kwargs` beside the named inputs, and those
    would swallow a DistilBERT's unwanted token_type_ids again."""
    parameters = inspect.signature(forward).parameters
    named = tuple(name for name in emitted if name in parameters)
    if not named and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return tuple(emitted)
    return named


def select_inputs(encoded: Mapping[str, Any], wanted: Sequence[str], what: str = "the model") -> dict[str, Any]:
    """`encoded` reduced to the inputs in `wanted`, in that order; neutral inputs the tokenizer did not emit
    are filled in (numpy arrays or lists of lists, shaped like `input_ids`). Anything else missing is a
    ModelError that names the input."""
    selected = {}
    for name in wanted:
        if name in encoded:
            selected[name] = encoded[name]
        elif name in NEUTRAL_VALUES and "input_ids" in encoded:
            selected[name] = _filled_like(encoded["input_ids"], NEUTRAL_VALUES[name])
        else:
            raise ModelError(
                f"{what} needs the input {name!r}, which the tokenizer does not produce (it produces "
                f"{sorted(encoded)}); save the model with the tokenizer it was trained with"
            )
    return selected


def _filled_like(ids: Any, value: int) -> Any:
    if isinstance(ids, np.ndarray):
        return np.full_like(ids, value)
    if hasattr(ids, "new_full"):  # a torch tensor
        return ids.new_full(ids.shape, value)
    return [[value] * len(row) for row in ids]


def describe_inputs(emitted: Sequence[str], taken: Sequence[str]) -> str:
    """One line for the log: what the tokenizer emits, what the model takes, what is dropped or filled."""
    dropped = [n for n in emitted if n not in taken]
    filled = [n for n in taken if n not in emitted]
    parts = [f"tokenizer emits {', '.join(emitted)}; model takes {', '.join(taken)}"]
    if dropped:
        parts.append(f"dropped: {', '.join(dropped)}")
    if filled:
        parts.append(f"filled with neutral values: {', '.join(filled)}")
    return "; ".join(parts)
