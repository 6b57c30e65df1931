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
