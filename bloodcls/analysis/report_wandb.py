"""The sweep report's tables and figures as a W&B summary run of the sweep's group (``wandb_report=true``).

A copy of what ``report.md`` and the CSV tables hold, beside the sweep's runs in W&B; the files on disk stay the
report of record, so :func:`log_report_to_wandb` is only called where its failure can be logged and passed over.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bloodcls.analysis.trackers import link_workspace
from bloodcls.config import override_value

if TYPE_CHECKING:
    from bloodcls.analysis.report import Report


def log_report_to_wandb(rep: Report, figures: dict[str, str], fig_dir: Path, overrides: list[str]) -> str | None:
    """The report's tables (and figures) in a W&B summary run of the sweep's group; its run id, or None when the
    jobs logged to another tracker."""
    from bloodcls.training.loggers import logger_names, resolve_wandb_mode

    logger = override_value(overrides, "logger")
    if logger is not None and "wandb" not in logger_names(logger):
        return None
    import wandb

    mode = resolve_wandb_mode(override_value(overrides, "logger.wandb.mode") or "auto")
    run = wandb.init(project=override_value(overrides, "logger.wandb.project") or "bloodcls", group=rep.sweep_dir.name,
                     job_type="report", name=f"{rep.sweep_dir.name}-report", dir=str(rep.sweep_dir), mode=mode,
                     config={"plan": rep.plan})
    for name, rows in rep.tables.items():
        if rows:
            cols = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
            run.log({f"report/{name}": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})
    for title, file in figures.items():
        run.log({f"report/figures/{title}": wandb.Image(str(fig_dir / file))})
    run.summary.update({"best": rep.significance.get("best"), **{f"significance/{k}": v for k, v in
                        rep.significance.items() if isinstance(v, (int, float, str, bool))}})
    if mode == "online":
        link_workspace(run, rep.sweep_dir.name)  # the comparison workspace, linked from this run
    run_id = run.id
    wandb.finish()
    return run_id
