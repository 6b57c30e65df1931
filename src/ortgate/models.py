"""Resolve the model under test: a local directory, a hub id (with network), or the default model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ortgate.errors import ModelError

# Files that define a model's behaviour; their bytes make its fingerprint.
FINGERPRINT_GLOBS = ("config.json", "*.safetensors", "*.bin", "tokenizer*.json", "vocab.txt", "*.model",
                     "special_tokens_map.json", "merges.txt", "vocab.json")


@dataclass(frozen=True)
class ModelSource:
    path: Path
    fingerprint: str
    id2label: dict[int, str]
    description: str


def model_fingerprint(path: Path) -> str:
    from ortgate.pypi import sha256_file

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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(
            f"{name!r} is not a local directory, and downloading it from the Hugging Face Hub failed "
            f"({type(exc).__name__}: {first}). Without network access, pass a local model directory to "
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
    raw_labels = config.get("id2label") or {}
    id2label = {int(k): str(v) for k, v in raw_labels.items()}
    if not id2label:
        raise ModelError(f"{config_path} has no id2label; add the label names to the model's config")
    return ModelSource(path, model_fingerprint(path), id2label, description or str(name))
