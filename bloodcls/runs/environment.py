"""Where a result came from: device, library versions, code commit, date."""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
from pathlib import Path

import torch

from bloodcls.common.files import REPO


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when there is a GPU, else the CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def device_name(device: torch.device | str | None = None) -> str:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device | str | None = None) -> dict[str, str | None]:
    import lightning

    return {
        "device": device_name(device),
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }
