"""A tiny BERT sentiment classifier with a hand-written vocabulary, and labeled data, built from a config in
seconds (no downloads). The tests' common model; `ortgate.sources.tiny_models` has one of every architecture."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ortgate.sources.tiny_models import NEGATIVE, OTHER, POSITIVE, sentences

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "!", "?", *OTHER, *POSITIVE, *NEGATIVE]


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """Random weights, but a head trained for a few steps so predictions follow the sentiment words."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model = BertForSequenceClassification(config)
    texts, labels = sentences(64, seed=seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    target = torch.tensor(labels)
    model.train()
    for _ in range(40):
        loss = model(**batch, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_dataset(path: Path, n: int = 40, label_names: tuple[str, str] = ("negative", "positive"),
                  text_column: str = "text", label_column: str = "label") -> Path:
    """csv, tsv, jsonl or parquet by the suffix of `path`."""
    texts, labels = sentences(n, seed=7)
    rows = [{text_column: t, label_column: label_names[y]} for t, y in zip(texts, labels, strict=True)]
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[text_column, label_column],
                                    delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        raise ValueError(path)
    return path


def build_fragile_model(out: Path, n: int = 400) -> tuple[Path, Path]:
    """The tiny model with its head moved so that many rows lie near the decision boundary (|logit margin| from
    0.002 up, median about 0.05), and a dataset labeled with its own PyTorch predictions: the baseline is right on
    every row, and int8 noise flips some of them, so a quantized variant fails a 0pp gate while an fp32 graph passes.
    What a repair test needs, deterministically."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    model_dir = build_tiny_model(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    texts, _ = sentences(n, seed=11)

    def margins() -> np.ndarray:
        with torch.no_grad():
            logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        return (logits[:, 1] - logits[:, 0]).numpy()

    with torch.no_grad():
        model.classifier.bias[1] -= float(np.median(margins()))
        scale = 0.05 / float(np.median(np.abs(margins())))
        model.classifier.weight *= scale
        model.classifier.bias *= scale
    margin = margins()
    model.save_pretrained(model_dir)
    rows = [{"text": t, "label": "positive" if m > 0 else "negative"}
            for t, m in zip(texts, margin, strict=True) if abs(m) > 0.002]  # fp32 rounding never flips these
    path = out / "fragile.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return model_dir, path
