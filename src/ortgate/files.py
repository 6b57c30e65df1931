"""Small file helpers shared by the cache, the structure records and the reports: atomic writes and digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a partial one.

    The text goes to a uniquely named temporary file in the same folder (same filesystem), which then
    replaces `path`; on any error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def append_text(path: Path | str, text: str) -> None:
    """Add `text` at the end of a file that others append to as well (e.g. $GITHUB_STEP_SUMMARY)."""
    with open(path, "a") as handle:
        handle.write(text)


def json_digest(value: object, *, compact: bool = False) -> str:
    """sha256 hex digest of `value` as JSON with sorted keys (`compact`: without spaces after , and :).

    Cache keys are made of these: the serialization must stay exactly as it is, or every cache entry
    built before is orphaned.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":") if compact else None)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
