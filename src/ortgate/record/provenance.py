"""Where a run came from in source control: the git commit and branch of the project it ran in, and whether
its tree had uncommitted changes. The history names the commit at which a step happened with it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_control(root: Path) -> dict | None:
    """`{"commit", "branch", "dirty"}` of the git repository `root` lies in; None outside a repository or
    without git. A detached HEAD (CI checkouts) has branch None; $GITHUB_REF_NAME etc. are not guessed."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "branch": None if branch in (None, "HEAD") else branch,
            "dirty": None if status is None else bool(status)}
