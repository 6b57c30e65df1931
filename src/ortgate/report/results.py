"""Reading the files a run writes (summary.json, pytest-benchmark JSON), with errors that say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

from ortgate.errors import OrtgateError


def read_results_file(path: Path, kind: str, required_key: str, hint: str) -> dict:
    """The JSON document at `path`, which must hold `required_key`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise OrtgateError(f"cannot read {path} as {kind}: {exc}") from None
    if not isinstance(doc, dict) or required_key not in doc:
        raise OrtgateError(f"{path} has no {required_key!r}: {hint}")
    return doc
