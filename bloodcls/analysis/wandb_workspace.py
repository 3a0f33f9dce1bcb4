"""The study's comparison as a W&B workspace built from code (``wandb-workspaces``), instead of by hand.

Every panel groups runs by experiment (the ``experiment_name`` config key), so bars and curves show the
mean over seeds with their spread; a sweep's runs are picked by their W&B group (the sweep's name).
Building the spec needs no network; saving it does, and an API key.
"""

from __future__ import annotations

import json
from typing import Any

from bloodcls.data import CLASS_NAMES
from bloodcls.errors import UserError

GROUP_KEY = "experiment_name"  # the config key every panel and the runs table group by
TEST_METRICS = ("test/acc", "test/f1")
CURVES = ("val/acc", "val/f1", "val/loss", "train/loss")
COST = ("efficiency/params_trainable", "efficiency/macs")
EFFICIENCY = ("efficiency/train_time_s", "efficiency/fit_wall_s", "efficiency/epochs_run", "efficiency/memory_mib")
PINNED = ("summary:test/acc", "summary:test/f1", "summary:efficiency/params_trainable", "summary:efficiency/macs",
          "summary:efficiency/train_time_s")


def _modules():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError:
        raise UserError("The W&B workspace builder needs the `wandb-workspaces` package, which is not installed. "
                        "Install the trackers extra: `pip install -e '.[trackers]'`.") from None
    return wr, ws


def build_workspace(entity: str, project: str, group: str | None = None, name: str | None = None):
    """The comparison workspace: test scores per experiment (mean ± std over seeds), accuracy against
    parameters and MACs, per-class F1, validation curves, training time and efficiency."""
    wr, ws = _modules()

    def bars(title: str, metrics: list[str]):
        return wr.BarPlot(title=title, metrics=metrics, orientation="v", groupby=wr.Config(GROUP_KEY),
                          groupby_aggfunc="mean", groupby_rangefunc="stddev")

    def scatter(x: str, label: str):
        return wr.ScatterPlot(title=f"test accuracy vs {label}", x=wr.SummaryMetric(x), y=wr.SummaryMetric("test/acc"),
                              log_x=True)

    def curve(metric: str):
        return wr.LinePlot(title=metric, x="epoch", y=[metric], groupby=wr.Config(GROUP_KEY), groupby_aggfunc="mean",
                           groupby_rangefunc="stddev", smoothing_factor=0.0)

    sections = [
        ws.Section(name="Test scores per experiment (mean ± std over seeds)", is_open=True,
                   panels=[bars(f"{m} per experiment", [m]) for m in TEST_METRICS]),
        ws.Section(name="Accuracy against cost", is_open=True,
                   panels=[scatter(COST[0], "parameters"), scatter(COST[1], "MACs")]),
        ws.Section(name="Per-class F1", is_open=True,
                   panels=[bars("test F1 per class", [f"test/f1/{c}" for c in CLASS_NAMES])]),
        ws.Section(name="Validation curves per experiment", is_open=True, panels=[curve(m) for m in CURVES]),
        ws.Section(name="Training time and efficiency", is_open=True,
                   panels=[bars(m.split("/", 1)[1], [m]) for m in EFFICIENCY]),
    ]
    filters = [ws.Metric("JobType") == "train"]  # not the sweep's report run
    if group:
        filters.append(ws.Metric("Group") == group)
    runset = ws.RunsetSettings(groupby=[ws.Config(GROUP_KEY)], filters=filters, pinned_columns=list(PINNED))
    return ws.Workspace(entity=entity, project=project, name=name or f"bloodcls comparison{f' ({group})' if group else ''}",
                        sections=sections, runset_settings=runset)


def workspace_spec(workspace) -> dict[str, Any]:
    """The workspace as the JSON W&B stores (built locally: no network)."""
    return json.loads(json.dumps(workspace._spec, default=str))


def save_workspace(workspace) -> str:
    """Save the workspace to W&B and return its URL; no key or no network is one paragraph (UserError)."""
    from bloodcls.training.loggers import WANDB_HOST, has_api_key, reachable

    if not has_api_key():
        raise UserError("Saving the workspace needs a W&B API key, and none is set. Run `wandb login` (or set "
                        "WANDB_API_KEY) on a machine with internet, then run this again; `--dry-run` prints the "
                        "workspace's spec without any of that.")
    if not reachable():
        raise UserError(f"Cannot reach {WANDB_HOST}: saving the workspace needs the network. Run this on a machine "
                        "with internet (e.g. a login node); `--dry-run` prints the spec offline.")
    try:
        workspace.save()
    except Exception as err:  # noqa: BLE001 - the API's own errors (unknown entity, no permission)
        raise UserError(f"W&B refused the workspace for {workspace.entity}/{workspace.project}: "
                        f"{str(err).splitlines()[0]} Check --entity and --project (your user or team, and a "
                        "project you can write to).") from None
    return workspace.url
