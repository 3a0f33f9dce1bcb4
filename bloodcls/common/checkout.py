"""Which code this process runs: the checkout's commit, read once (no torch here: a run's status.json records it
before anything heavy is imported)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from bloodcls.common.files import REPO


def git_commit(repo: Path = REPO) -> str | None:
    """The commit of the code this process runs: the checkout's (``-dirty`` with local changes) when the process
    first asks, so a checkout that moves on during a long run is not credited with it; ``BLOODCLS_COMMIT``
    where there is no .git."""
    if os.environ.get("BLOODCLS_COMMIT"):
        return os.environ["BLOODCLS_COMMIT"]
    return _checkout_commit(Path(repo).resolve())


@functools.cache
def _checkout_commit(repo: Path) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
