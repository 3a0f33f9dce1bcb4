"""Upload a sweep's offline W&B runs: one ``wandb sync`` per run, several at a time.

Compute nodes without internet leave ``wandb/offline-run-*`` folders in every run folder (and the sweep's
report run in the sweep folder); W&B's own ``--sync-all`` uploads them one by one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bloodcls.errors import UserError

SYNC_TIMEOUT_S = 1800


@dataclass
class SyncResult:
    run: Path
    ok: bool
    message: str = ""


def is_synced(run: Path) -> bool:
    """W&B marks an uploaded run with a ``run-<id>.wandb.synced`` file beside its ``.wandb`` log."""
    return any(run.glob("*.wandb.synced"))


def offline_runs(folder: Path, include_synced: bool = False) -> list[Path]:
    """Every offline run under ``folder`` (a sweep, a multirun or a single run folder), oldest first."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder. Give a sweep folder (outputs/sweeps/<name>), a multirun "
                        "folder or a run folder.")
    runs = sorted((p for p in folder.rglob("offline-run-*") if p.is_dir() and p.parent.name == "wandb"),
                  key=lambda p: p.name)
    return [r for r in runs if include_synced or not is_synced(r)]


def wandb_command() -> list[str]:
    """The ``wandb`` CLI of this environment (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("wandb")
    found = str(beside) if beside.is_file() else shutil.which("wandb")
    return [found] if found else [sys.executable, "-m", "wandb"]


def sync_one(run: Path, extra: list[str]) -> SyncResult:
    cmd = [*wandb_command(), "sync", *extra, str(run)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SYNC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return SyncResult(run, False, f"timed out after {SYNC_TIMEOUT_S} s")
    except OSError as err:
        return SyncResult(run, False, str(err))
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return SyncResult(run, proc.returncode == 0, lines[-1].strip() if lines else f"exit status {proc.returncode}")


def sync_runs(runs: list[Path], jobs: int = 4, entity: str | None = None, project: str | None = None) -> list[SyncResult]:
    """``wandb sync`` every run, ``jobs`` at a time; results in the order of ``runs``."""
    extra = [*(["--entity", entity] if entity else []), *(["--project", project] if project else [])]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda r: sync_one(r, extra), runs))
