"""Resolve the model under test: a local directory, a hub id (with network), or the default model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ortgate.errors import ModelError, first_line
from ortgate.files import sha256_file

# Files that define a model's behaviour; their bytes make its fingerprint.
FINGERPRINT_GLOBS = ("config.json", "*.safetensors", "*.bin", "tokenizer*.json", "vocab.txt", "*.model",
                     "special_tokens_map.json", "merges.txt", "vocab.json")


# Model types whose position ids start after the padding index (RoBERTa's scheme): max_position_embeddings
# counts pad_token_id + 1 positions no token can use.
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text", "xmod")
# transformers writes this when a tokenizer has no limit of its own (VERY_LARGE_INTEGER).
_NO_LIMIT = 10**12


@dataclass(frozen=True)
class ModelSource:
    path: Path
    fingerprint: str
    id2label: dict[int, str]
    description: str
    model_type: str = ""
    max_length: int | None = None  # the model's own limit on tokens per text (None: it states none)
    max_positions: int | None = None  # what its position table holds: a hard limit, unlike the tokenizer's


def model_fingerprint(path: Path) -> str:
    files = sorted({p for pattern in FINGERPRINT_GLOBS for p in path.glob(pattern) if p.is_file()})
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return digest.hexdigest()


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


def resolve_hub_id(name: str) -> Path:
    """Download (or reuse from the HF cache) a hub model snapshot; fail clearly without network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:
        raise ModelError(
            f"{name!r} is not a local directory, and downloading it from the Hugging Face Hub failed "
            f"({type(exc).__name__}: {first_line(exc)}). Without network access, pass a local model directory to "
            "--ortgate-model (or leave it unset for the default model)."
        ) from None


def load_model_source(name: str, description: str | None = None) -> ModelSource:
    """Check that `name` is a usable sequence classifier and fingerprint it."""
    path = Path(name).expanduser()
    if not path.exists():
        if _looks_like_path(name):
            raise ModelError(f"model directory {path} does not exist; check --ortgate-model")
        path = resolve_hub_id(name)
    if not path.is_dir():
        raise ModelError(f"--ortgate-model {path} is a file; give the model's directory (with config.json)")
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} has no config.json: it is not a Hugging Face model directory") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_path}: {exc}") from None
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"{path} is not a sequence classifier (architectures: {architectures or 'none'}); "
            "ortgate needs an *ForSequenceClassification model with a trained classification head"
        )
    id2label = _single_label_classes(config, config_path)
    return ModelSource(path, model_fingerprint(path), id2label, description or str(name),
                       str(config.get("model_type", "")), model_max_length(path, config), position_limit(config))


def _single_label_classes(config: dict, config_path: Path) -> dict[int, str]:
    """The model's classes, after refusing heads whose predictions are not one class per text."""
    problem_type = config.get("problem_type")
    raw_labels = config.get("id2label") or {}
    num_labels = len(raw_labels) or config.get("num_labels")
    if problem_type == "regression" or num_labels == 1:
        raise ModelError(
            f"{config_path} describes a regression head (problem_type {problem_type!r}, {num_labels} label): it "
            "predicts a score, not a class, so accuracy and F1 against labels do not apply; ortgate gates "
            "single-label classifiers (num_labels >= 2)"
        )
    if problem_type == "multi_label_classification":
        raise ModelError(
            f"{config_path} describes a multi-label head (problem_type 'multi_label_classification'): each label "
            "is a separate yes/no decision with its own threshold, which ortgate's one-class-per-text accuracy "
            "and F1 would misjudge; ortgate gates single-label classifiers"
        )
    try:
        id2label = {int(k): str(v) for k, v in raw_labels.items()}
    except ValueError:
        raise ModelError(f"{config_path}: id2label keys must be class ids (0, 1, ...), "
                         f"got {list(raw_labels)}") from None
    if not id2label:
        raise ModelError(f"{config_path} has no id2label; add the label names to the model's config")
    if sorted(id2label) != list(range(len(id2label))):
        raise ModelError(f"{config_path}: id2label must number the classes 0..{len(id2label) - 1}, "
                         f"got {sorted(id2label)}")
    return id2label


def position_limit(config: dict) -> int | None:
    """The tokens per text the position table holds (less RoBERTa's padding offset); None for relative-position
    models (DeBERTa-v2 without absolute positions), which the table's size does not bound."""
    positions = config.get("max_position_embeddings")
    if not (isinstance(positions, int) and positions > 0 and config.get("position_biased_input", True)):
        return None
    if config.get("model_type") in PADDING_OFFSET_TYPES:
        positions -= int(config.get("pad_token_id") or 0) + 1
    return positions


def model_max_length(path: Path, config: dict) -> int | None:
    """The most tokens per text the model takes: its tokenizer's `model_max_length` where it states one, and
    its position table's size; the smaller of the two."""
    limits = []
    try:
        stated = json.loads((path / "tokenizer_config.json").read_text()).get("model_max_length")
    except (OSError, ValueError):
        stated = None
    if isinstance(stated, int | float) and 0 < stated < _NO_LIMIT:
        limits.append(int(stated))
    if (positions := position_limit(config)) is not None:
        limits.append(positions)
    return min(limits) if limits else None


def load_tokenizer(path: Path):
    """The model's tokenizer, or a ModelError that says it is missing (a model saved without it is common)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot load the tokenizer of {path} ({type(exc).__name__}: {first_line(exc)}); save the "
                         "model with its tokenizer (tokenizer.save_pretrained(DIR))") from None
