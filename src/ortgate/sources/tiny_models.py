"""Tiny random-weight sequence classifiers of eight architectures, each with the tokenizer kind it really uses.

Toy models for smoke tests: they take every architecture through export, graph optimization and
quantization (its graph inputs, fusions and tokenizer outputs) in seconds, with no downloads. Their
weights are random plus 40 to 200 training steps on template sentences, so predictions follow the
sentiment words; their accuracy says nothing about a real model's, so never use them for accuracy figures.

Tokenizers are built with the `tokenizers` library from a small in-code corpus (sentencepiece is not
needed): WordPiece vocabularies, a byte-level BPE trained on the corpus, and Unigram models whose
scores are the corpus's word log-frequencies.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ortgate.sources.inputs import forward_inputs

ARCHITECTURES: tuple[str, ...] = (
    "bert", "distilbert", "roberta", "xlm-roberta", "electra", "albert", "mpnet", "deberta-v2",
)

POSITIVE = ["good", "great", "love", "excellent", "fine", "happy", "best", "nice"]
NEGATIVE = ["bad", "terrible", "hate", "awful", "poor", "sad", "worst", "broken"]
NEUTRAL = ["okay", "average", "ordinary", "plain", "standard", "usual"]
OTHER = ["the", "movie", "product", "is", "was", "a", "very", "really", "not", "it", "this", "and", "i"]
PUNCTUATION = [".", "!", "?"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz"

HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 64, 64
TRAIN_STEPS, MAX_TRAIN_STEPS, CHECK_EVERY, TRAIN_ROWS, LEARNING_RATE = 40, 200, 20, 64, 3e-3
# Wider than transformers' 0.02: at 0.02 attention starts near-uniform and 3-class training often
# stalled with two classes merged; at 0.05 it fit in 40 steps for most seeds.
INITIALIZER_RANGE = 0.05


# ------------------------------------------------------------------ labeled sentences

def _sentence(rng: random.Random, words: list[str]) -> str:
    # Argument order matters: it fixes the draws, so `sentences` matches tests/tiny.py exactly.
    return (f"the {rng.choice(['movie', 'product'])} was {rng.choice(['very ', 'really ', ''])}"
            f"{rng.choice(words)} {rng.choice(['.', '!', 'and ' + rng.choice(words) + ' .'])}")


def sentences(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Two-class sentiment sentences (0 negative, 1 positive), the same as tests/tiny.py's."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        texts.append(_sentence(rng, POSITIVE if label else NEGATIVE))
        labels.append(label)
    return texts, labels


def labeled_sentences(n: int, num_labels: int = 2, seed: int = 0) -> tuple[list[str], list[int]]:
    """`sentences` for two labels; with three, label 2 is a neutral sentence ("the movie was okay .")."""
    if num_labels == 2:
        return sentences(n, seed)
    if num_labels != 3:
        raise ValueError(f"num_labels must be 2 or 3 (negative, positive, neutral), got {num_labels}")
    rng = random.Random(seed)
    groups = (NEGATIVE, POSITIVE, NEUTRAL)
    labels = [rng.randint(0, 2) for _ in range(n)]
    return [_sentence(rng, groups[y]) for y in labels], labels


def _corpus() -> list[str]:
    """What the tokenizers learn from: every class's sentences, and each word at least once."""
    texts, _ = labeled_sentences(300, num_labels=3, seed=12345)
    return [*texts, " ".join(OTHER + POSITIVE + NEGATIVE + NEUTRAL + PUNCTUATION)]


def _word_counts() -> Counter:
    return Counter(word for text in _corpus() for word in text.split())


# ------------------------------------------------------------------ tokenizers, one per kind

def _wordpiece(cls_name: str, specials: list[str]) -> Callable[[Path], object]:
    """A WordPiece vocab.txt: the specials, the corpus words by frequency, and characters (with ## forms)
    so words outside the corpus still tokenize."""

    def build(work: Path):
        import transformers

        words = [w for w, _ in sorted(_word_counts().items(), key=lambda kv: (-kv[1], kv[0]))]
        vocab = [*specials, *words, *(c for c in ALPHABET if c not in words), *(f"##{c}" for c in ALPHABET)]
        (work / "vocab.txt").write_text("\n".join(vocab) + "\n")
        return getattr(transformers, cls_name)(vocab_file=str(work / "vocab.txt"), do_lower_case=True)

    return build


def _byte_level_bpe(work: Path):
    """RoBERTa's kind: byte-level BPE trained on the corpus, saved as vocab.json + merges.txt."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    # 256 byte symbols + 5 specials + enough merges for every corpus word to become one token.
    bpe.train_from_iterator(_corpus(), vocab_size=512, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(work))
    return RobertaTokenizerFast(vocab_file=str(work / "vocab.json"), merges_file=str(work / "merges.txt"))


def _unigram_model(head: list[str], tail: list[str], unk: str):
    """A sentencepiece-style Unigram model: "▁word" pieces scored by corpus log-frequency, then single
    characters scored lower, so unseen words fall back to characters. Built, not trained:
    tokenizers' UnigramTrainer is not deterministic."""
    from tokenizers import models

    counts = _word_counts()
    total = sum(counts.values())
    pieces = [(p, 0.0) for p in head]
    pieces += [(f"▁{w}", math.log(n / total)) for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    floor = math.log(1 / total) - 2.0
    pieces += [("▁", floor)] + [(c, floor - 1.0) for c in ALPHABET + "".join(PUNCTUATION)]
    pieces += [(p, 0.0) for p in tail]
    names = [p for p, _ in pieces]
    return models.Unigram(pieces, unk_id=names.index(unk), byte_fallback=False)


def _sentencepiece_like(model, normalizer, template: tuple[str, str], specials: list[str]):
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors

    tok = Tokenizer(model)
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single=template[0], pair=template[1], special_tokens=[(s, tok.token_to_id(s)) for s in specials])
    return tok


def _xlm_roberta(work: Path):
    """XLM-R's kind: Unigram, <s>/<pad>/</s>/<unk> first and <mask> last (as in its vocab), no type ids."""
    from tokenizers import normalizers
    from transformers import XLMRobertaTokenizerFast

    model = _unigram_model(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"], "<unk>")
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok = _sentencepiece_like(model, norm, ("<s> $A </s>", "<s> $A </s> </s> $B </s>"), ["<s>", "</s>"])
    return XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def _albert(work: Path):
    """ALBERT's kind: Unigram with lower-casing and accent stripping, [CLS]/[SEP] with type ids."""
    from tokenizers import normalizers
    from transformers import AlbertTokenizerFast

    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    norm = normalizers.Sequence([normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
                                 normalizers.StripAccents(), normalizers.Lowercase(),
                                 normalizers.Replace(" {2,}", " ")])
    tok = _sentencepiece_like(_unigram_model(specials, [], "<unk>"), norm,
                              ("[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"), ["[CLS]", "[SEP]"])
    return AlbertTokenizerFast(tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]",
                               cls_token="[CLS]", unk_token="<unk>", pad_token="<pad>", mask_token="[MASK]")


def _deberta_v2(work: Path):
    """DeBERTa-v2/v3's kind: Unigram, [PAD]/[CLS]/[SEP]/[UNK] first and [MASK] last, with type ids."""
    from tokenizers import normalizers
    from transformers import DebertaV2TokenizerFast

    model = _unigram_model(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], ["[MASK]"], "[UNK]")
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok = _sentencepiece_like(model, norm, ("[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"),
                              ["[CLS]", "[SEP]"])
    return DebertaV2TokenizerFast(tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]",
                                  cls_token="[CLS]", unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]")


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZERS: dict[str, Callable[[Path], object]] = {
    "bert": _wordpiece("BertTokenizerFast", BERT_SPECIALS),
    "distilbert": _wordpiece("DistilBertTokenizerFast", BERT_SPECIALS),
    "roberta": _byte_level_bpe,
    "xlm-roberta": _xlm_roberta,
    "electra": _wordpiece("ElectraTokenizerFast", BERT_SPECIALS),
    "albert": _albert,
    # MPNet's vocab.txt starts <s> <pad> </s>; its unknown token is [UNK] and its mask <mask>.
    "mpnet": _wordpiece("MPNetTokenizerFast", ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]),
    "deberta-v2": _deberta_v2,
}


# ------------------------------------------------------------------ model configs

def _config(arch: str, tokenizer, labels: dict) -> object:
    """A tiny config of `arch`, sized to the tokenizer's vocabulary, with its special ids."""
    import transformers

    special = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    if tokenizer.bos_token_id is not None:
        special.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    sizes = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
             "intermediate_size": INTERMEDIATE, "max_position_embeddings": POSITIONS,
             "initializer_range": INITIALIZER_RANGE}
    if arch in ("roberta", "xlm-roberta", "mpnet"):
        # Position ids start after the padding index (pad_token_id + 1), so the table needs 2 extra rows.
        sizes["max_position_embeddings"] = POSITIONS + 2
    if arch == "distilbert":
        sizes = {"dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "hidden_dim": INTERMEDIATE,
                 "max_position_embeddings": POSITIONS, "initializer_range": INITIALIZER_RANGE}
    if arch in ("electra", "albert"):
        # Both factor the embeddings (embedding_size < hidden_size, as in electra-small and every ALBERT),
        # so the graph keeps their projection MatMul.
        sizes["embedding_size"] = HIDDEN // 2
    if arch in ("roberta", "xlm-roberta"):
        sizes["type_vocab_size"] = 1  # as in the released checkpoints: one all-zero segment
    if arch == "deberta-v2":
        # DeBERTa-v3's settings: relative attention (c2p, p2c) with log buckets, no absolute positions and
        # type_vocab_size=0, so the tokenizer's token_type_ids are not consumed (Optimum drops the input).
        sizes.update(type_vocab_size=0, relative_attention=True, position_biased_input=False,
                     pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=16,
                     norm_rel_ebd="layer_norm", share_att_key=True)
    return transformers.AutoConfig.for_model(arch, **sizes, **special, id2label=labels,
                                             label2id={v: k for k, v in labels.items()})


def _forward_inputs(model, batch: dict) -> dict:
    """The tokenizer's outputs that `model.forward` takes (a mismatched tokenizer emits extra keys)."""
    return {name: batch[name] for name in forward_inputs(model.forward, list(batch))}


def _train(model, tokenizer, num_labels: int, seed: int) -> None:
    """At least TRAIN_STEPS full-batch steps, then more until the batch is fit (at most MAX_TRAIN_STEPS):
    a fixed 40 steps sometimes left a 3-class model with two classes merged (a plateau it leaves later)."""
    import torch

    texts, labels = labeled_sentences(TRAIN_ROWS, num_labels, seed=seed + 1)
    batch = _forward_inputs(model, dict(tokenizer(texts, padding=True, return_tensors="pt")))
    target = torch.tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    # One thread: the matrices are tiny, and on a busy machine OpenMP workers waiting for each other
    # turned a 0.5 s build into 20-40 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(1, MAX_TRAIN_STEPS + 1):
            model.train()
            model(**batch, labels=target).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if step >= TRAIN_STEPS and step % CHECK_EVERY == 0 and _fits(model, batch, target):
                break
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _fits(model, batch: dict, target) -> bool:
    import torch

    model.eval()
    with torch.no_grad():
        return bool((model(**batch).logits.argmax(-1) == target).all())


def build_tiny_classifier(arch: str, out: Path, *, tokenizer: str | None = None, num_labels: int = 2,
                          id2label: dict[int, str] | None = None, seed: int = 0) -> Path:
    """A tiny `arch` sequence classifier saved at `out`, loadable with the Auto classes offline.

    `tokenizer` names another architecture whose tokenizer kind is saved instead: e.g. a distilbert model
    with BERT's tokenizer, which emits token_type_ids that distilbert's forward does not take (common on
    the Hub). Deterministic for a seed.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    for name in (arch, tokenizer or arch):
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    if num_labels not in (2, 3):
        raise ValueError(f"num_labels must be 2 or 3 (negative, positive, neutral), got {num_labels}")
    labels = id2label or ({0: "NEGATIVE", 1: "POSITIVE"} if num_labels == 2
                          else {i: f"LABEL_{i}" for i in range(num_labels)})
    if len(labels) != num_labels:
        raise ValueError(f"id2label has {len(labels)} labels, num_labels is {num_labels}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        tok = TOKENIZERS[tokenizer or arch](Path(work))
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(_config(arch, tok, labels))
    _train(model, tok, num_labels, seed)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out



# The architecture matrix (tests/test_architectures.py, benchmarks/architecture_matrix.py): every architecture
# with its own tokenizer kind, a DistilBERT saved with the BERT tokenizer that emits token_type_ids it has no
# argument for (common on the Hub), and a three-class model with generic LABEL_i names.
# (case id, architecture, tokenizer kind or None for its own, number of labels)
MATRIX_CASES: tuple[tuple[str, str, str | None, int], ...] = (
    *((arch, arch, None, 2) for arch in ARCHITECTURES),
    ("distilbert+bert-tokenizer", "distilbert", "bert", 2),
    ("roberta-3-labels", "roberta", None, 3),
)


def write_labeled_csv(path: Path, n: int, num_labels: int = 2, seed: int = 0) -> Path:
    """`labeled_sentences` as a csv with columns review, sentiment: names (negative, positive) for two labels,
    the class ids for three (as many datasets store them)."""
    import csv

    texts, labels = labeled_sentences(n, num_labels, seed)
    names = ("negative", "positive") if num_labels == 2 else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        writer.writerows((t, names[y] if names else y) for t, y in zip(texts, labels, strict=True))
    return path
