"""OmegaConf resolvers and helpers shared by the Hydra entry points."""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def register_resolvers() -> None:
    """``${uid:}``: a short random id, cached like Hydra's ``${now:}`` so one run resolves it once.

    Run folders are ``<time>_<name>_<uid>``, so jobs started in the same second never collide.
    """
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


def route_library_logs() -> None:
    """Send Lightning's log records through Hydra's handlers (console + run-folder log) only once.

    Lightning installs its own console handler when imported before logging is configured, which
    prints every message twice under Hydra.
    """
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
