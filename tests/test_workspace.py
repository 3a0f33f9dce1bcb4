"""bloodcls workspace: the comparison workspace's spec built offline, and saving it (W&B API mocked)."""

from __future__ import annotations

import json
import socket

import pytest

from bloodcls.cli import workspace as cli
from bloodcls.data import CLASS_NAMES
from tests.helpers import REPO

pytest.importorskip("wandb_workspaces")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt, or any W&B API client, fails the test."""
    import wandb

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run touched the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(wandb, "Api", refuse)


def _spec(capsys, *args: str) -> dict:
    assert cli.main(["--entity", "lab", "--project", "bloodcls", *args, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def _panels(spec: dict) -> dict[str, list[dict]]:
    return {s["name"]: s["panels"] for s in spec["spec"]["section"]["panelBankConfig"]["sections"]}


def test_dry_run_spec_has_the_study_panels_grouped_by_experiment(capsys, no_network):
    spec = _spec(capsys, "--group", "sweep1")
    assert spec["entity"] == "lab" and spec["project"] == "bloodcls" and "sweep1" in spec["displayName"]
    sections = _panels(spec)
    bars = {p["config"]["metrics"][0]: p["config"] for p in sections["Test scores per experiment (mean ± std over seeds)"]}
    assert set(bars) == {"test/acc", "test/f1"}
    for conf in bars.values():  # bars per experiment with the spread over seeds
        assert (conf["groupBy"], conf["groupAgg"], conf["groupArea"]) == ("experiment_name.value", "mean", "stddev")
    scatter = {(p["config"]["xAxis"], p["config"]["yAxis"]) for p in sections["Accuracy against cost"]}
    assert scatter == {("summary:efficiency/params_trainable", "summary:test/acc"),
                       ("summary:efficiency/macs", "summary:test/acc")}
    per_class = sections["Per-class F1"][0]["config"]
    assert per_class["metrics"] == [f"test/f1/{c}" for c in CLASS_NAMES] and per_class["groupBy"] == "experiment_name.value"
    curves = sections["Validation curves per experiment"]
    assert {p["config"]["metrics"][0] for p in curves} == {"val/acc", "val/f1", "val/loss", "train/loss"}
    assert all(p["viewType"] == "Run History Line Plot" and p["config"]["xAxis"] == "epoch"
               and p["config"]["groupBy"] == "experiment_name.value" for p in curves)
    efficiency = {p["config"]["metrics"][0] for p in sections["Training time and efficiency"]}
    assert {"efficiency/train_time_s", "efficiency/fit_wall_s"} <= efficiency
    runset = spec["spec"]["section"]["runSets"][0]
    assert runset["grouping"] == [{"section": "config", "name": "experiment_name.value"}]
    filters = {(f["key"]["name"], f["value"]) for f in runset["filters"]["filters"]}
    assert filters == {("group", "sweep1"), ("jobType", "train")}  # one sweep's training runs, not its report run


def test_without_group_every_training_run_is_compared(capsys, no_network):
    runset = _spec(capsys)["spec"]["section"]["runSets"][0]
    assert {f["key"]["name"] for f in runset["filters"]["filters"]} == {"jobType"}


def test_missing_api_key_is_one_paragraph_and_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "NETRC")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc with a key
    proc = subprocess.run([sys.executable, "-m", "bloodcls", "workspace", "--entity", "lab", "--project", "p"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "wandb login" in err and "--dry-run" in err and proc.stdout == ""


def test_save_sends_the_spec_and_prints_the_url(capsys, monkeypatch):
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.workspaces import internal

    from bloodcls.training import loggers

    sent = []

    def upsert(view):
        sent.append(view)
        return {"upsertView": {"view": {"name": "abc123", "id": "V1"}}}

    monkeypatch.setattr(loggers, "has_api_key", lambda: True)
    monkeypatch.setattr(loggers, "reachable", lambda *a, **k: True)
    monkeypatch.setattr(internal, "upsert_view2", upsert)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://wandb.ai/{self.entity}/{self.project}?nw={self._internal_name}"))
    assert cli.main(["--entity", "lab", "--project", "bloodcls", "--group", "sweep1"]) == 0
    assert capsys.readouterr().out.strip() == "workspace saved: https://wandb.ai/lab/bloodcls?nw=abc123"
    assert len(sent) == 1 and sent[0].project == "bloodcls"


def test_no_network_when_saving_is_one_paragraph(capsys, monkeypatch):
    from bloodcls.training import loggers

    monkeypatch.setattr(loggers, "has_api_key", lambda: True)
    monkeypatch.setattr(loggers, "reachable", lambda *a, **k: False)
    assert cli.main(["--entity", "lab", "--project", "bloodcls"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Cannot reach api.wandb.ai") and "\n" not in err


def test_sweep_summary_run_links_the_workspace(monkeypatch):
    from bloodcls.analysis import trackers
    from bloodcls.analysis import wandb_workspace as workspace

    class Run:
        entity, project = "lab", "bloodcls"

        def __init__(self):
            self.summary = {}

    monkeypatch.setattr(workspace, "save_workspace", lambda w: f"https://wandb.ai/{w.entity}/{w.project}?nw=x")
    run = Run()
    trackers.link_workspace(run, "sweep1")
    assert run.summary["workspace"] == "https://wandb.ai/lab/bloodcls?nw=x"

    def refuse(w):
        raise RuntimeError("no permission")

    monkeypatch.setattr(workspace, "save_workspace", refuse)
    run.summary = {}
    trackers.link_workspace(run, "sweep1")  # a warning, never an error: the report run still finishes
    assert "workspace" not in run.summary
