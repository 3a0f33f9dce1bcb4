"""Trustworthy runs, in-process: determinism, interrupt-and-resume, failures and status.json, never overwriting."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from bloodcls.errors import UserError
from bloodcls.runs.resume import ResumeError, resume_argv
from bloodcls.runs.status import STATUS_FILE
from bloodcls.training import train
from bloodcls.training.module import NonFiniteLossError
from tests.conftest import DETERMINISTIC_RUN, FAST
from tests.helpers import REPO, compose_train, run_cli


def _train(root, out, *extra):
    cfg = compose_train([*DETERMINISTIC_RUN, f"data.root={root}", *extra], output_dir=out)
    return train(cfg, output_dir=out)


def _status(run_dir):
    return json.loads((run_dir / STATUS_FILE).read_text())


def _curves(results):
    """Everything per epoch except wall time."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in results["history"]]


def test_completed_run_records_its_status(reference_run):
    out, results = reference_run
    status = _status(out)
    assert status["status"] == "completed" and results["status"] == "completed"
    assert status["error"] is status["error_type"] is status["traceback"] is None
    assert status["run_name"] == "unet_28_s0" and status["experiment"] == "unet_28"
    assert status["started_at"] <= status["finished_at"]
    assert status["last_checkpoint"] == str(out / "checkpoints" / "last.ckpt")
    assert status["wandb_id"] is None  # logger=csv
    lrs = [r["lr"] for r in results["history"]]
    assert lrs == [3e-3, 1.5e-3]  # the scheduler really steps every epoch


@pytest.mark.slow
def test_two_deterministic_runs_are_identical(reference_run, synthetic_root, tmp_path):
    _, first = reference_run
    second = _train(synthetic_root, tmp_path)
    assert second["test"]["scores"] == first["test"]["scores"]
    assert second["test"]["predictions"] == first["test"]["predictions"]
    assert _curves(second) == _curves(first)


@pytest.mark.slow
def test_ctrl_c_then_resume_equals_uninterrupted_run(reference_run, synthetic_root, tmp_path, request):
    _, uninterrupted = reference_run
    # A background job (`make test &`) inherits SIGINT ignored; a user's Ctrl-C reaches Python's handler.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    sigint_handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stopped:
        _train(synthetic_root, tmp_path, "+callbacks.stop._target_=tests.plants.SendSignal", "+callbacks.stop.epoch=1",
               f"+callbacks.stop.marker={tmp_path / 'fired'}", f"+callbacks.stop.signum={int(signal.SIGINT)}")
    assert stopped.value.code == 130
    status = _status(tmp_path)
    assert status["status"] == "interrupted" and status["error_type"] == "KeyboardInterrupt"
    assert f"resume={tmp_path}" in status["error"]
    last = torch.load(status["last_checkpoint"], weights_only=True)
    assert last["epoch"] == 0  # the end of the last finished epoch
    assert not (tmp_path / "results.json").exists()
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # Lightning's SIG_IGN was undone

    resumed = _train(synthetic_root, tmp_path, f"resume={tmp_path}")
    status = _status(tmp_path)
    assert status["status"] == "completed" and status["error"] is None
    assert [r["previous_status"] for r in status["resumes"]] == ["interrupted"]
    # each start says what it trained with (the published record's starts): the first one's kept through the resume
    trained_with = {k: resumed["compute"][k] for k in ("threads", "precision", "channels_last")}
    assert [{k: c[k] for k in trained_with} for c in (status["compute"], status["resumes"][0]["compute"])] == \
        [trained_with, trained_with]
    assert resumed["test"]["scores"] == uninterrupted["test"]["scores"]
    assert resumed["test"]["predictions"] == uninterrupted["test"]["predictions"]
    assert _curves(resumed) == _curves(uninterrupted)  # epoch 0 from the checkpoint, 1 from this run
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert any(row.startswith("0,") for row in rows)  # the CSV log kept the epochs before the interruption


@pytest.mark.slow
def test_planted_nan_stops_cleanly_and_keeps_last_good_checkpoint(synthetic_root, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"(?i)training loss became nan.* epoch 1"):
        _train(synthetic_root, tmp_path, "+callbacks.nan._target_=tests.plants.PlantNaN", "+callbacks.nan.epoch=1",
               f"+callbacks.nan.marker={tmp_path / 'fired'}")
    status = _status(tmp_path)
    assert status["status"] == "failed" and status["error_type"] == "NonFiniteLossError"
    assert "Lower the learning rate" in status["error"] and status["traceback"] is None
    last = torch.load(status["last_checkpoint"], weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "results.json").exists()


def test_a_bug_is_recorded_with_its_traceback(synthetic_root, tmp_path):
    with pytest.raises(RuntimeError, match="planted crash"):
        _train(synthetic_root, tmp_path, "+callbacks.crash._target_=tests.plants.Crash", "+callbacks.crash.epoch=0",
               f"+callbacks.crash.marker={tmp_path / 'fired'}")
    status = _status(tmp_path)
    assert status["status"] == "failed" and status["error_type"] == "RuntimeError"
    assert "planted crash" in status["error"] and "tests/plants.py" in status["traceback"]
    assert status["last_checkpoint"] is None and status["finished_at"]


@pytest.mark.slow
def test_resume_after_an_early_stop_does_not_train_on(synthetic_root, tmp_path):
    """EarlyStopping stops after epoch 1 (nothing counts as an improvement), then the test phase crashes."""
    stop_early = ["trainer.max_epochs=4", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9"]
    with pytest.raises(RuntimeError, match="planted crash while testing"):
        _train(synthetic_root, tmp_path, *stop_early, "+callbacks.crash._target_=tests.plants.CrashOnTest",
               "+callbacks.crash.epoch=0", f"+callbacks.crash.marker={tmp_path / 'fired'}")
    assert _status(tmp_path)["status"] == "failed"
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    resumed = _train(synthetic_root, tmp_path, *stop_early, f"resume={tmp_path}")
    assert [r["epoch"] for r in resumed["history"]] == [0, 1]  # stopped where it had stopped
    assert _status(tmp_path)["status"] == "completed"


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(synthetic_root, tmp_path):
    # "best" = the highest val/loss: the first epoch, as the loss falls; last.ckpt must still move on
    # (Lightning itself writes last.ckpt only in epochs that also save a best checkpoint).
    results = _train(synthetic_root, tmp_path, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max")
    losses = [r["val/loss"] for r in results["history"]]
    ckpts = {name: torch.load(tmp_path / "checkpoints" / f"{name}.ckpt", weights_only=True)["epoch"]
             for name in ("best", "last")}
    assert ckpts == {"best": losses.index(max(losses)), "last": 2} and ckpts["best"] != 2


def test_a_new_run_never_writes_over_a_run_folder(reference_run, synthetic_root):
    out, _ = reference_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="already holds a run") as err:
        _train(synthetic_root, out)
    assert f"resume={out}" in str(err.value)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_resume_refuses_what_cannot_be_continued(reference_run, synthetic_root, tmp_path):
    out, _ = reference_run
    with pytest.raises(ResumeError, match="already completed"):
        _train(synthetic_root, out, f"resume={out}")
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / STATUS_FILE).write_text('{"status": "interrupted"}')
    with pytest.raises(ResumeError, match="no checkpoints/last.ckpt; it stopped before finishing its first epoch"):
        _train(synthetic_root, tmp_path / "early", f"resume={tmp_path / 'early'}")
    with pytest.raises(ResumeError, match="no such run folder or checkpoint"):
        _train(synthetic_root, tmp_path / "x", f"resume={tmp_path / 'missing'}")
    assert not (tmp_path / "x").exists()
    live = tmp_path / "live"  # recorded as running by a process that is still alive (pytest's parent)
    (live / "checkpoints").mkdir(parents=True)
    (live / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (live / STATUS_FILE).write_text(json.dumps({"status": "running", "host": socket.gethostname(), "pid": os.getppid()}))
    with pytest.raises(ResumeError, match=f"still running \\(process {os.getppid()} on this machine"):
        _train(synthetic_root, live, f"resume={live}")


def test_resumed_invocation_uses_the_run_folder_and_keeps_hydra_files(tmp_path):
    run = tmp_path / "runs" / "2026-01-01" / "00-00-00_unet_28_s0_abcdef"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    for resume in (run, run / "checkpoints" / "last.ckpt"):
        cfg = compose_train([f"resume={resume}"], hydra=True)
        assert cfg.hydra.run.dir == str(run)
        assert cfg.hydra.output_subdir.startswith(".hydra-resume-")
    fresh = compose_train([], hydra=True)
    assert fresh.hydra.output_subdir == ".hydra" and fresh.hydra.run.dir.startswith("outputs/runs/")


def test_resume_replays_the_runs_own_overrides(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(["experiment=baseline_64", "trainer.max_epochs=4", "+callbacks.x.a=1",
                                     "ckpt_path=/old.ckpt"]), run / ".hydra" / "overrides.yaml")
    argv = resume_argv(["train.py", f"resume={run}", "trainer.max_epochs=8"])
    assert argv == ["train.py", "experiment=baseline_64", "+callbacks.x.a=1", f"resume={run}", "trainer.max_epochs=8"]
    assert resume_argv(["train.py", "model=unet"]) == ["train.py", "model=unet"]
    with pytest.raises(ResumeError, match="once per run"):
        resume_argv(["train.py", "-m", f"resume={run}"])
    with pytest.raises(ResumeError, match="no such run folder"):
        resume_argv(["train.py", f"resume={tmp_path / 'nope'}"])
    # composes: the replayed config is the run's own
    cfg = compose_train(argv[1:])
    assert cfg.model.name == "baseline" and cfg.trainer.max_epochs == 8 and math.isclose(cfg.model.optimizer.lr, 1e-4)


# -- the command line: a real SIGTERM, resume by folder alone, and a sweep with a failing job ---------
@pytest.mark.slow
def test_cli_sigterm_then_resume_continues_the_same_folder_and_wandb_run(reference_run, synthetic_root, tmp_path):
    _, uninterrupted = reference_run
    marker = tmp_path / "waiting"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "train.py", *DETERMINISTIC_RUN, f"data.root={synthetic_root}", "logger=wandb", f"paths.log_dir={tmp_path}",
         "+callbacks.wait._target_=tests.plants.AwaitSignal", "+callbacks.wait.epoch=1", f"+callbacks.wait.marker={marker}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # at the start of epoch 1, as a scheduler would before preemption
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    (run,) = [p.parent for p in tmp_path.glob("runs/*/*/.hydra")]
    status = _status(run)
    assert status["status"] == "interrupted" and status["error_type"] == "SIGTERMException"
    assert status["wandb_id"] and f"resume={run}" in stdout  # the console log says how to continue
    hydra_files = {p.name: p.read_text() for p in (run / ".hydra").iterdir()}

    done = run_cli("train.py", f"resume={run}")  # the folder alone: its own overrides are replayed
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.parent for p in tmp_path.glob("runs/*/*/.hydra")] == [run]  # no new run folder
    assert {p.name: p.read_text() for p in (run / ".hydra").iterdir()} == hydra_files
    assert len(list(run.glob(".hydra-resume-*/overrides.yaml"))) == 1
    status = _status(run)
    assert status["status"] == "completed" and status["resumes"][0]["previous_status"] == "interrupted"
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["scores"] == uninterrupted["test"]["scores"]
    assert _curves(results) == _curves(uninterrupted)
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and {p.name.rsplit("-", 1)[1] for p in wandb_runs} == {status["wandb_id"]}
    assert results["wandb"]["id"] == status["wandb_id"]


@pytest.mark.slow
def test_cli_multirun_failing_job_does_not_stop_the_others(synthetic_root, tmp_path):
    proc = run_cli("train.py", "-m", f"data.root={tmp_path / 'missing'},{synthetic_root}", "data.download=false",
                   "model=unet", "data.img_size=28", "trainer.max_epochs=1", "logger=csv", f"paths.log_dir={tmp_path}",
                   *FAST)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "job 0" in proc.stderr and "bloodmnist.npz not found" in proc.stderr
    failed, completed = sorted(tmp_path.glob("multiruns/*/*/*/status.json"))
    assert failed.parent.name.startswith("0_") and completed.parent.name.startswith("1_")
    failed, completed = json.loads(failed.read_text()), json.loads(completed.read_text())
    assert failed["status"] == "failed" and failed["error_type"] == "DataError" and failed["traceback"] is None
    assert "bloodmnist.npz not found" in failed["error"] and failed["last_checkpoint"] is None
    assert completed["status"] == "completed"
    assert json.loads((tmp_path.glob("multiruns/*/*/1_*/results.json").__next__()).read_text())["status"] == "completed"


def test_only_rank_zero_keeps_the_records(tmp_path, monkeypatch):
    """The extra processes of a DDP run join rank 0's folder: no overwrite refusal, no status writes."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from bloodcls.runs.resume import start_or_resume
    from bloodcls.runs.status import record_run

    used, fresh = tmp_path / "used", tmp_path / "fresh"
    used.mkdir()
    (used / STATUS_FILE).write_text('{"status": "running"}')
    with pytest.raises(UserError, match="already holds a run"):
        start_or_resume(None, used)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert start_or_resume(None, used) is None
    with record_run(fresh, "r", "e"):
        pass
    assert not (fresh / STATUS_FILE).exists()


def test_the_commit_is_the_code_this_process_runs_not_where_the_checkout_moved(tmp_path, monkeypatch):
    from bloodcls.common.checkout import git_commit

    monkeypatch.delenv("BLOODCLS_COMMIT", raising=False)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    first = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == first
    (tmp_path / "f").write_text("2")  # a long run's checkout moves on under it
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    assert git_commit(tmp_path) == first
    monkeypatch.setenv("BLOODCLS_COMMIT", "abc123")  # a copy without .git says where it came from
    assert git_commit(tmp_path) == "abc123"


def test_interrupted_message_names_the_checkpoint_inside_the_run_folder_as_given(tmp_path):
    """Lightning resolves links: with ``outputs`` a link elsewhere, status.json and the message still name one
    folder, twice."""
    from types import SimpleNamespace

    from bloodcls.runs.status import RunRecord, _interrupted_message

    real = tmp_path / "elsewhere" / "run"
    (real / "checkpoints").mkdir(parents=True)
    (real / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "outputs").symlink_to(tmp_path / "elsewhere")
    record = RunRecord(tmp_path / "outputs" / "run", {}, enabled=False)
    record.trainer = SimpleNamespace(current_epoch=3, checkpoint_callbacks=[
        SimpleNamespace(last_model_path=str(real / "checkpoints" / "last.ckpt"), dirpath=str(real / "checkpoints"))])
    message = _interrupted_message(record, "SIGTERM", record.last_checkpoint())
    assert f"{tmp_path / 'outputs' / 'run' / 'checkpoints' / 'last.ckpt'} holds the end" in message
    # the epoch as the progress lines count it: current_epoch 3 is the fourth, after three finished
    assert "elsewhere" not in message and "during epoch 4 (3 finished)" in message
