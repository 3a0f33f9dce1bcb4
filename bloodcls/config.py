"""OmegaConf resolvers and helpers shared by the Hydra entry points."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bloodcls.common.files import REPO
from bloodcls.common.rundir import HYDRA_RESUME_PREFIX, HYDRA_SUBDIR, run_folder_of

CONFIG_DIR = str(REPO / "conf")


def override_key(arg: str) -> str:
    """The config key of a Hydra override (``+a.b=1``, ``~a.b``, ``a/b=c`` -> ``a.b`` / ``a/b``)."""
    return arg.lstrip("~+").split("=", 1)[0]


def override_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of ``key`` gives, as written, or None when none sets it."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) == key]
    return values[-1] if values else None


def compose_config(overrides: list[str], config_name: str = "train"):
    """The composed config, as the Hydra entry point would build it (without its ``hydra`` node)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def instantiate(node, **kwargs):
    """``hydra.utils.instantiate``, but a :class:`~bloodcls.errors.UserError` raised by the target (an unknown
    timm architecture, a bad data file) reaches the user as itself, not wrapped in Hydra's
    InstantiationException with a repr and exit status 1."""
    import hydra
    from hydra.errors import InstantiationException

    from bloodcls.errors import UserError

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def register_resolvers() -> None:
    """``${uid:}``: a short random id, cached like Hydra's ``${now:}`` so one run resolves it once.

    Run folders are ``<time>_<name>_<uid>``, so jobs started in the same second never collide.
    """
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)
    # resume=<run>: Hydra writes into the run's own folder and keeps its original .hydra/ (bloodcls.runs.resume).
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


def resume_dir(resume: Any, default: str) -> str:
    """Resolver for ``hydra.run.dir``: the resumed run's folder, else ``default`` (a fresh folder)."""
    if resume in (None, ""):
        return default
    path = Path(str(resume)).expanduser()
    run = path if path.is_dir() else run_folder_of(path)
    return str(run) if run is not None else default


def hydra_subdir(resume: Any, stamp: str) -> str:
    """Resolver for ``hydra.output_subdir``: a resumed run keeps its original ``.hydra/`` untouched."""
    if resume_dir(resume, "") == "":
        return HYDRA_SUBDIR
    return f"{HYDRA_RESUME_PREFIX}{stamp}"
