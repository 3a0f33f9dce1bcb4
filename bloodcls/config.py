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
    # resume=<run>: Hydra writes into the run's own folder and keeps its original .hydra/ (bloodcls.resume,
    # imported when first resolved: it pulls in Lightning).
    def resume_dir(resume, default):
        from bloodcls.resume import resume_dir

        return resume_dir(resume, default)

    def hydra_subdir(resume, stamp):
        from bloodcls.resume import hydra_subdir

        return hydra_subdir(resume, stamp)

    for name, fn in (("resume_dir", resume_dir), ("hydra_subdir", hydra_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


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
