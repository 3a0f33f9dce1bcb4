"""bloodcls sync: one `wandb sync` per offline run of a sweep, several at a time (subprocess mocked)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from bloodcls.cli import sync as cli
from bloodcls.runs import wandb_sync as sync
from bloodcls.training import loggers


def _offline_run(parent: Path, run_id: str, synced: bool = False, online: bool = False) -> Path:
    run = parent / "wandb" / f"{'run' if online else 'offline-run'}-20261201_120000-{run_id}"
    run.mkdir(parents=True)
    (run / f"run-{run_id}.wandb").write_bytes(b"")
    if synced:
        (run / f"run-{run_id}.wandb.synced").write_text("")
    return run


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """A sweep folder: three jobs' offline runs, one of them synced already, an online run, the report run."""
    root = tmp_path / "sweeps" / "s1"
    _offline_run(root / "runs" / "0_baseline_64_s0", "aaa")
    _offline_run(root / "runs" / "1_skip_s0", "bbb")
    _offline_run(root / "runs" / "2_unet_s0", "ccc", synced=True)
    _offline_run(root / "runs" / "3_hybrid_s0", "ddd", online=True)
    _offline_run(root, "rep")
    return root


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(loggers, "has_api_key", lambda: True)
    monkeypatch.setattr(loggers, "reachable", lambda *a, **k: True)


def _fake_wandb(monkeypatch, fail: set[str] = frozenset(), barrier: threading.Barrier | None = None) -> list[list[str]]:
    calls: list[list[str]] = []
    lock = threading.Lock()

    def run(cmd, **kwargs):
        with lock:
            calls.append(cmd)
        if barrier is not None:
            barrier.wait()  # returns only when `parties` uploads are in flight together
        bad = any(f in cmd[-1] for f in fail)
        return subprocess.CompletedProcess(cmd, 1 if bad else 0, stdout="Syncing: ...\n",
                                           stderr="wandb: ERROR Network error\n" if bad else "done.\n")

    monkeypatch.setattr(sync.subprocess, "run", run)
    return calls


def test_syncs_every_offline_run_once(sweep_dir, online, monkeypatch, capsys):
    calls = _fake_wandb(monkeypatch)
    assert cli.main([str(sweep_dir), "--jobs", "2"]) == 0
    synced = sorted(Path(c[-1]).name for c in calls)
    assert synced == ["offline-run-20261201_120000-aaa", "offline-run-20261201_120000-bbb",
                      "offline-run-20261201_120000-rep"]  # not the synced one, not the online one
    assert all(c[-2] == "sync" and Path(c[0]).name == "wandb" for c in calls)
    out = capsys.readouterr().out
    assert "3 synced, 0 failed" in out and out.count("  synced  ") == 3


def test_runs_upload_side_by_side(sweep_dir, online, monkeypatch):
    barrier = threading.Barrier(3, timeout=60)  # broken (the test fails) unless three uploads overlap
    _fake_wandb(monkeypatch, barrier=barrier)
    assert cli.main([str(sweep_dir), "--jobs", "3"]) == 0
    assert not barrier.broken


def test_failures_are_listed_and_exit_1(sweep_dir, online, monkeypatch, capsys):
    _fake_wandb(monkeypatch, fail={"bbb"})
    assert cli.main([str(sweep_dir), "--entity", "lab", "--project", "p"]) == 1
    out = capsys.readouterr().out
    assert "FAILED  runs/1_skip_s0/wandb/offline-run-20261201_120000-bbb: wandb: ERROR Network error" in out
    assert "2 synced, 1 failed" in out


def test_entity_project_and_include_synced_reach_wandb_sync(sweep_dir, online, monkeypatch):
    calls = _fake_wandb(monkeypatch)
    assert cli.main([str(sweep_dir), "--include-synced", "--entity", "lab", "--project", "p"]) == 0
    assert len(calls) == 4
    assert all(c[c.index("--entity") + 1] == "lab" and c[c.index("--project") + 1] == "p" for c in calls)


@pytest.mark.parametrize("case", ["missing", "empty", "no_key", "no_network", "bad_jobs"])
def test_bad_input_is_one_paragraph_and_exit_2(case, sweep_dir, tmp_path, monkeypatch, capsys):
    calls = _fake_wandb(monkeypatch)
    monkeypatch.setattr(loggers, "has_api_key", lambda: case != "no_key")
    monkeypatch.setattr(loggers, "reachable", lambda *a, **k: case != "no_network")
    folder = {"missing": tmp_path / "nope", "empty": tmp_path / "empty"}.get(case, sweep_dir)
    if case == "empty":  # a sweep trained with logger=csv: run folders, no offline W&B run
        (folder / "runs" / "0_x").mkdir(parents=True)
    args = [str(folder), *(["--jobs", "0"] if case == "bad_jobs" else [])]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    expected = {"missing": "is not a folder", "empty": "No offline W&B run", "no_key": "wandb login",
                "no_network": "Cannot reach", "bad_jobs": "--jobs 0"}[case]
    assert expected in err and calls == []
