"""A sweep in its trackers: the W&B comparison workspace linked from the summary run, and how to open the
local trackers (TensorBoard, MLflow) the jobs logged to."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bloodcls.common.sweepdir import PLAN_FILE, RUNS_DIR
from bloodcls.config import override_value

log = logging.getLogger(__name__)


def link_workspace(run, group: str) -> None:
    """Save the sweep's comparison workspace (bloodcls.analysis.wandb_workspace) and link it from the summary run."""
    try:
        from bloodcls.analysis.wandb_workspace import build_workspace, save_workspace

        url = save_workspace(build_workspace(run.entity, run.project, group))
    except Exception as err:  # noqa: BLE001 - no wandb-workspaces, no permission: the report run stays
        log.warning("no comparison workspace for %s: %s", group, err)
        return
    run.summary["workspace"] = url
    print(f"[sweep] W&B comparison workspace: {url}", flush=True)


def tracker_hints(sweep_dir: Path, overrides: list[str] | None) -> list[str]:
    """How to open the sweep in the local trackers it logged to (None: the overrides its plan recorded)."""
    from bloodcls.training.loggers import local_mlflow_store, logger_names

    if overrides is None:
        plan = sweep_dir / PLAN_FILE
        overrides = json.loads(plan.read_text()).get("overrides", []) if plan.is_file() else []
    names = logger_names(override_value(overrides, "logger"))
    hints = []
    if "tensorboard" in names:
        hints.append(f"TensorBoard: tensorboard --logdir {sweep_dir / RUNS_DIR}")
    if "mlflow" in names and not override_value(overrides, "logger.mlflow.tracking_uri"):
        log_dir = override_value(overrides, "paths.log_dir") or "outputs"
        uri, _ = local_mlflow_store(override_value(overrides, "logger.mlflow.store_dir") or f"{log_dir}/mlflow")
        hints.append(f"MLflow: mlflow ui --backend-store-uri {uri}  (runs tagged group={sweep_dir.name})")
    return hints
