"""Experiment trackers: Weights & Biases (offline when it cannot reach the server), TensorBoard and MLflow
(local stores that need no network), made before the Trainer; CSV is Lightning's own."""

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


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def reachable(host: str = WANDB_HOST, port: int = 443, timeout: float = 2.0) -> bool:
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
    if has_api_key() and reachable():
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
    logger = WandbLogger(
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
    # Lightning always passes anonymous=None, and recent wandb warns on every run that the setting has no effect
    # (wandb/wandb#10909, anonymous mode removed): leave it out unless a user set it.
    if getattr(logger, "_wandb_init", {}).get("anonymous", "set") is None:
        del logger._wandb_init["anonymous"]
    return logger


def _require(module: str, tracker: str) -> None:
    """A missing optional tracker package is one paragraph saying what to install (exit 2), not an ImportError."""
    import importlib.util

    from bloodcls.errors import UserError

    if importlib.util.find_spec(module) is None:
        raise UserError(f"logger={tracker} needs the `{module}` package, which is not installed. Install the "
                        "trackers extra: `pip install -e '.[trackers]'` (or pick another logger, e.g. logger=csv).")


def tensorboard_logger(save_dir: str, name: str = "tensorboard", version: str = "", **kwargs: Any):
    """Lightning's ``TensorBoardLogger`` in the run folder (``tensorboard --logdir`` over a sweep's runs/ shows
    them side by side, each named by its job folder); the HPARAMS tab gets the test scores at the end."""
    _require("tensorboard", "tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    kwargs.setdefault("default_hp_metric", False)  # no placeholder hp_metric=-1: the summary logs real scores
    return TensorBoardLogger(save_dir=save_dir, name=name, version=version, **kwargs)


def local_mlflow_store(store_dir: str | Path) -> tuple[str, str]:
    """(tracking URI, artifact folder) of the local MLflow store: a SQLite database (MLflow 3 refuses its
    plain file store) and an artifact folder, both in ``store_dir``."""
    store = Path(store_dir).expanduser().resolve()
    return f"sqlite:///{store / 'mlflow.db'}", str(store / "artifacts")


def _ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None, lock_dir: Path | None) -> None:
    """Create the MLflow experiment once. Jobs of a sweep start together: on a local store a file lock
    serialises the database's creation and the experiment's, which would otherwise race."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def get_or_create() -> None:
        client = MlflowClient(tracking_uri=tracking_uri)
        if client.get_experiment_by_name(name) is None:
            try:
                client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # created meanwhile by another job (servers)
                if client.get_experiment_by_name(name) is None:
                    raise

    if lock_dir is None:
        return get_or_create()
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        get_or_create()


def mlflow_logger(
    experiment_name: str = "bloodcls",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    store_dir: str = "outputs/mlflow",
    tags: dict[str, Any] | None = None,
    **kwargs: Any,
):
    """Lightning's ``MLFlowLogger``: a local store under ``store_dir`` (no server, no network) unless
    ``tracking_uri`` names a server; the run's tags carry the experiment, seed and sweep group."""
    _require("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    from bloodcls.errors import UserError

    lock_dir = None
    artifact_location = kwargs.pop("artifact_location", None)
    if not tracking_uri:
        tracking_uri, artifacts = local_mlflow_store(store_dir)
        artifact_location = artifact_location or artifacts
        lock_dir = Path(artifacts).parent
    try:
        _ensure_experiment(tracking_uri, experiment_name, artifact_location, lock_dir)
    except Exception as err:  # noqa: BLE001 - an unreachable server or a bad URI: say so, not a traceback
        raise UserError(f"Cannot open the MLflow store {tracking_uri}: {str(err).splitlines()[0]} Check "
                        "logger.mlflow.tracking_uri (a server's URL, reachable from this machine), or leave it "
                        "null for the local store under logger.mlflow.store_dir.") from None
    tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=tags,
                        artifact_location=artifact_location, **kwargs)


def tag_runs(cfg: Any, group: str | None) -> None:
    """Write the run's sweep group into the MLflow tags before the logger is made (W&B gets it as its group;
    TensorBoard runs are named by their folder, which sits in the sweep's). ``cfg`` is changed: train() hands
    in the run's own copy (:func:`bloodcls.training.fit.run_config`)."""
    from omegaconf import OmegaConf

    if group and cfg.get("logger") and cfg.logger.get("mlflow") is not None:
        OmegaConf.update(cfg, "logger.mlflow.tags.group", group, force_add=True)


def logger_names(value: str | None) -> list[str]:
    """The logger configs a ``logger=`` override selects: ``wandb``, ``[csv,tensorboard]`` -> names."""
    if value is None:
        return []
    return [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
