import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The tests never need the Hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from tiny import build_tiny_model, write_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny-data") / "reviews.csv")


@pytest.fixture(scope="session")
def fragile(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model with many rows near its decision boundary, and data labeled by its own predictions."""
    from tiny import build_fragile_model

    return build_fragile_model(tmp_path_factory.mktemp("fragile"))
