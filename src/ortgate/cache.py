"""A content-addressed, locked, atomically written on-disk cache of built directories.

An entry is a folder named `<readable>-<key[:16]>`. It is built in a temporary sibling folder, gets a
manifest (key, file sizes and sha256) written last, and is renamed into place under a file lock, so a
crash never leaves a half-written entry under the final name. On every hit the manifest is checked
against the files; a truncated or corrupt entry is reported and rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ortgate.files import atomic_write_text, sha256_file

MANIFEST = "ortgate-manifest.json"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    manifest: dict
    hit: bool
    rebuilt_because: str | None = None


def file_inventory(folder: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def check_entry(folder: Path, key: str) -> str | None:
    """None when the entry is complete and intact, else why it is not."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "its manifest is missing (an interrupted build)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"its manifest is unreadable ({exc})"
    if manifest.get("key") != key:
        return "its manifest belongs to another key"
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{name} is truncated or changed ({path.stat().st_size} bytes, expected {meta['size']})"
        if sha256_file(path) != meta["sha256"]:
            return f"{name} is corrupt (sha256 mismatch)"
    return None


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def path_for(self, namespace: str, readable: str, key: str) -> Path:
        return self.root / namespace / f"{readable}-{key[:16]}"

    def get_or_build(
        self,
        namespace: str,
        readable: str,
        key: str,
        build: Callable[[Path], dict],
        on_rebuild: Callable[[str], None] | None = None,
    ) -> CacheEntry:
        """Return the intact entry for `key`, or build it with `build(staging_dir) -> metadata`."""
        final = self.path_for(namespace, readable, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        locks = final.parent / ".locks"
        locks.mkdir(exist_ok=True)
        with FileLock(str(locks / f"{final.name}.lock")):
            reason = None
            if final.exists():
                reason = check_entry(final, key)
                if reason is None:
                    return CacheEntry(final, json.loads((final / MANIFEST).read_text()), hit=True)
                if on_rebuild:
                    on_rebuild(f"cache entry {final} is unusable: {reason}; rebuilding it")
            staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                started = time.perf_counter()
                metadata = build(staging)
                manifest = {
                    "key": key,
                    "readable": readable,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "build_seconds": round(time.perf_counter() - started, 3),
                    "metadata": metadata,
                    "files": file_inventory(staging),
                }
                atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
                if final.exists():
                    shutil.rmtree(final)
                os.rename(staging, final)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return CacheEntry(final, manifest, hit=False, rebuilt_because=reason)
