"""Experiment trackers: Weights & Biases (offline when it cannot reach the server) and CSV."""

from __future__ import annotations

import logging
import netrc
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str = WANDB_HOST, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """'auto' -> 'online' only with an API key and a reachable server, else 'offline' (never a prompt)."""
    mode = str(mode).lower()
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if _has_api_key() and _reachable():
        return "online"
    return "offline"


def wandb_logger(
    project: str = "bloodcls",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    save_dir: str = ".",
    mode: str = "auto",
    entity: str | None = None,
    job_type: str = "train",
    id: str | None = None,
    **kwargs: Any,
):
    """A Lightning ``WandbLogger`` that never prompts: offline without a key or network (sync later)."""
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    if resolved == "offline":
        log.info("W&B runs offline (no API key or no network): `wandb sync %s/wandb/offline-run-*` uploads it later.", save_dir)
    return WandbLogger(
        project=project,
        name=name,
        group=group or None,
        tags=list(tags or []),
        save_dir=save_dir,
        entity=entity,
        job_type=job_type,
        id=id,
        resume="allow" if id else None,
        mode=resolved,
        **kwargs,
    )
