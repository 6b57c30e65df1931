"""Throughput per input shape (batch size x sequence length) and per intra-op thread count.

A speed measured on the data set's own texts mixes every length it holds; a sweep fixes the shape instead,
so a variant's curve over sequence length (attention grows with its square) and over batch size can be read
and compared across machines. Inputs are real texts, not random ids: a tokenizer's ids drive the embedding
gathers and, for dynamic int8, the activation ranges, so made-up ids could time a different computation.

Each row of a shaped batch joins the texts (with a space, cycling through them in order, row r starting at
text r) until it tokenizes to at least `seq_len` tokens, then truncates to exactly `seq_len`, special tokens
included: no padding, attention mask all ones.

The best thread count is a finding per machine, not a constant: on a 16-core Xeon a MiniLM-sized int8 model
at batch 1 and 22 tokens ran 341 samples/s at 16 threads and 496 at 2 (waking a big pool costs more than a
tiny matrix gains). `sweep_threads` measures it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ortgate.build.runtime import OnnxPredictor, Predictor, TorchPredictor
from ortgate.measure.throughput import workload
from ortgate.sources.inputs import select_inputs

# ------------------------------------------------------------------ exact-length inputs

def exact_length_texts(tokenizer, texts: Sequence[str], seq_len: int, count: int) -> list[str]:
    """`count` strings, each joining texts until it tokenizes (special tokens included) to >= seq_len tokens;
    row r starts at texts[r % len(texts)], so rows differ wherever the texts do."""
    if not texts:
        raise ValueError("exact-length inputs need at least one text")
    if count < 1:
        raise ValueError(f"need at least one row, got {count}")
    _check_room(tokenizer, seq_len)
    tokens = _TokenCounter(tokenizer, texts)
    rows = [_first_guess(tokens, r, seq_len) for r in range(count)]
    # The per-text counts are only a guess for the joined text (byte-level BPE tokenizes " word" and "word"
    # differently), so check the joined rows and extend any that fall short.
    while short := [r for r, length in enumerate(tokens.lengths(rows, seq_len)) if length < seq_len]:
        for r in short:
            rows[r] = _extend(tokens, rows[r], seq_len)
    return [tokens.join(row) for row in rows]


def exact_length_batch(tokenizer, texts: Sequence[str], seq_len: int, batch: int, max_length: int | None,
                       input_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A batch of `batch` rows of exactly `seq_len` tokens as int64 arrays of shape (batch, seq_len).

    `max_length` is the most tokens the model takes (ModelSource.max_positions, or the predictor's
    max_length); a longer seq_len is a ValueError naming it. `input_names` picks and fills the graph's
    inputs as OnnxPredictor.encode does (None: whatever the tokenizer emits)."""
    if max_length is not None and seq_len > max_length:
        raise ValueError(f"sequence length {seq_len} exceeds the model's limit of {max_length} tokens; "
                         f"measure lengths up to {max_length}")
    joined = exact_length_texts(tokenizer, texts, seq_len, batch)
    encoded = tokenizer(joined, truncation=True, max_length=seq_len, padding=False, return_attention_mask=True)
    lengths = {len(ids) for ids in encoded["input_ids"]}
    if lengths != {seq_len}:  # a tokenizer whose truncation ignores max_length would time another shape
        raise ValueError(f"the tokenizer gave rows of {sorted(lengths)} tokens, not exactly {seq_len}")
    arrays = {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}
    if input_names is None:
        return arrays
    return select_inputs(arrays, input_names, "the ONNX graph")


def shape_features(predictor: Predictor, texts: Sequence[str], seq_len: int, batch: int,
                   max_length: int | None = None) -> Any:
    """What `predictor.run` takes for a (batch, seq_len) batch of real texts: numpy arrays for an
    OnnxPredictor, torch tensors for a TorchPredictor. The limit is `max_length` if given (pass the model's
    position limit to sweep past the predictor's truncation length), else the predictor's own."""
    limit = max_length if max_length is not None else getattr(predictor, "max_length", None)
    arrays = exact_length_batch(predictor.tokenizer, texts, seq_len, batch, limit)
    if isinstance(predictor, TorchPredictor):
        import torch

        tensors = {name: torch.from_numpy(value) for name, value in arrays.items()}
        return select_inputs(tensors, predictor.input_names, "the PyTorch model")
    return select_inputs(arrays, predictor.input_names, "the ONNX graph")


def _check_room(tokenizer, seq_len: int) -> None:
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if seq_len <= specials:
        raise ValueError(f"sequence length {seq_len} leaves no room for text: this tokenizer adds {specials} "
                         f"special tokens, so lengths start at {specials + 1}")


class _TokenCounter:
    """Tokens per text without special tokens, counted once per text and only for texts a row uses.
    A row is a list of text indices, counting on past the end (cycling)."""

    def __init__(self, tokenizer, texts: Sequence[str]) -> None:
        self.tokenizer, self.texts = tokenizer, texts
        self.specials = tokenizer.num_special_tokens_to_add(pair=False)
        self._counts: dict[int, int] = {}

    def __call__(self, i: int) -> int:
        i %= len(self.texts)
        if i not in self._counts:
            self._counts[i] = len(self.tokenizer(self.texts[i], add_special_tokens=False)["input_ids"])
        return self._counts[i]

    def join(self, row: Sequence[int]) -> str:
        return " ".join(self.texts[i % len(self.texts)] for i in row)

    def lengths(self, rows: Sequence[Sequence[int]], seq_len: int) -> list[int]:
        # Truncated to seq_len: a long-enough row reads exactly seq_len, and no "longer than the model's
        # maximum" warning fires for rows far past a real model's limit.
        encoded = self.tokenizer([self.join(row) for row in rows], truncation=True, max_length=seq_len)
        return [len(ids) for ids in encoded["input_ids"]]


def _first_guess(tokens: _TokenCounter, start: int, seq_len: int) -> list[int]:
    row, total = [start], tokens.specials + tokens(start)
    while total < seq_len:
        row = _extend(tokens, row, seq_len)
        total += tokens(row[-1])
    return row


def _extend(tokens: _TokenCounter, row: list[int], seq_len: int) -> list[int]:
    # Every text empty to the tokenizer would loop forever; so would a tokenizer that loses what it is given.
    if len(row) >= len(tokens.texts) and not any(tokens(i) for i in range(len(tokens.texts))):
        raise ValueError("the texts tokenize to no tokens; give texts with words in them")
    if len(row) > len(tokens.texts) * (seq_len + 1):
        raise ValueError(f"could not reach {seq_len} tokens by joining the texts")
    return [*row, row[-1] + 1]


# ------------------------------------------------------------------ timing one shape

@dataclass(frozen=True)
class ShapeSpeed:
    variant: str
    batch: int
    seq_len: int
    threads: int
    samples_per_s: float  # batch / the median round's seconds per call: robust to one slowed round
    calls: int  # timed calls, all rounds together
    seconds: float  # timed seconds, all rounds together

    def as_dict(self) -> dict:
        return asdict(self)


def calls_lasting(run: Callable[[], None], seconds: float) -> int:
    """How many calls of `run` last at least `seconds`, found by timing growing runs of calls (as timeit's
    autorange does). Warm `run` up first: the first calls after loading are often several times slower, and
    rounds sized from them came out at a sixth of the time asked for."""
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls
        calls = max(calls + 1, math.ceil(calls * min(10.0, 1.2 * seconds / max(elapsed, 1e-9))))


# ------------------------------------------------------------------ thread counts

def threads_predictor(model_dir: Path, threads: int, max_length: int) -> OnnxPredictor:
    """The variant at `model_dir` in a session of its own with `threads` intra-op threads (inter-op 1,
    sequential: `runtime.session_options`). Keep one such session alive at a time while timing: each owns
    a spinning thread pool, and two pools on the same cores slow each other."""
    return OnnxPredictor(Path(model_dir), threads, max_length)


class ShapeMeter:
    """The run's shape and thread sweeps: model-only workloads of one variant at one shape (or thread count), whose
    rounds pytest-benchmark times (the plugin), and the speeds they gave."""

    def __init__(self, meter, round_seconds: float = 0.1) -> None:
        self.meter = meter  # the run's SpeedMeter: its plan, benchmark texts and rounds
        self.shape_round_seconds = round_seconds  # a round: enough calls of one batch to last this long
        self.shape_speeds: dict[tuple[str, int, int, int], ShapeSpeed] = {}  # (id, batch, seq_len, threads)
        self.thread_speeds: dict[tuple[str, int], ShapeSpeed] = {}  # (id, threads): batch 1, the benchmark texts
        self._calls: dict[tuple, int] = {}
        self._threads_session = None

    def shape_workload(self, variant_id: str, batch: int, seq_len: int) -> tuple[Callable[[], None], int]:
        """A round of model-only calls on one batch of `batch` rows of exactly `seq_len` tokens (real texts joined
        or cut), as many calls as last `shape_round_seconds`; and the rounds to time."""
        predictor = self.meter.plan.predictor(variant_id)
        features = shape_features(predictor, self.meter.texts, seq_len, batch, self.meter.plan.max_length)

        def call() -> None:
            predictor.run(features)

        for _ in range(2):  # warm: a cold first call would size the rounds too short
            call()
        calls = calls_lasting(call, self.shape_round_seconds)
        self._calls[("shape", variant_id, batch, seq_len)] = calls

        def run() -> None:
            for _ in range(calls):
                call()

        return run, self.meter.rounds

    def record_shape(self, variant_id: str, batch: int, seq_len: int, threads: int,
                     round_seconds: Sequence[float]) -> ShapeSpeed:
        calls = self._calls[("shape", variant_id, batch, seq_len)]
        speed = ShapeSpeed(variant_id, batch, seq_len, threads, batch * calls / statistics.median(round_seconds),
                           calls * len(round_seconds), float(sum(round_seconds)))
        self.shape_speeds[(variant_id, batch, seq_len, threads)] = speed
        return speed

    def threads_workload(self, variant_id: str, threads: int) -> tuple[Callable[[], None], int]:
        """A pass over the benchmark texts (batch 1, model only) in a session of the variant with `threads`
        intra-op threads. Only one such extra session is kept (the previous one is dropped first): every spinning
        pool beside the run's own sessions slows the others."""
        self._threads_session = None
        predictor = threads_predictor(self.meter.plan.built(variant_id).path, threads, self.meter.plan.max_length)
        self._threads_session = predictor
        return workload(predictor, self.meter.texts, "model-only"), self.meter.rounds

    def record_threads(self, variant_id: str, threads: int, round_seconds: Sequence[float]) -> ShapeSpeed:
        self._threads_session = None
        speed = ShapeSpeed(variant_id, 1, 0, threads, len(self.meter.texts) / statistics.median(round_seconds),
                           len(self.meter.texts) * len(round_seconds), float(sum(round_seconds)))
        self.thread_speeds[(variant_id, threads)] = speed
        return speed
