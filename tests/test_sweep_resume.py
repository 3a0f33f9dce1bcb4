"""Resumable sweeps and progress that background runs can read (sweep.py resume=, train.log, jobs.txt)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bloodcls.errors import UserError
from bloodcls.sweeps.jobs import CONTINUE, DONE, LIVE, START, inventory, job_state, status_line
from bloodcls.sweeps.resume import check_resume_arguments, describe, extend_plan, plan_resume
from bloodcls.training.progress import progress_line
from tests.conftest import FAST
from tests.helpers import REPO, run_cli

TINY = ["experiments=[baseline_64]", "trainer.max_epochs=3", "data.img_size=28", "logger=csv", "wandb_report=false",
        *FAST]


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


# -- the whole story on a real sweep: stopped part-way, resumed, extended ---------------------------------
@pytest.mark.slow
def test_a_stopped_sweep_resumes_and_extends_without_retraining(synthetic_root, tmp_path):
    marker = tmp_path / "waiting"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    # seed 1 waits for a SIGTERM at the start of its epoch 2 (two epochs done); jobs=1: seed 2 never starts
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "sweep.py"), *TINY, "seeds=[0,1,2]", "jobs=1", "name=stopped",
         f"data.root={synthetic_root}", f"paths.log_dir={tmp_path}",
         "+callbacks.wait._target_=tests.plants.AwaitSignal", "+callbacks.wait.epoch=2", f"+callbacks.wait.marker={marker}",
         "+callbacks.wait.seed=${seed}", "+callbacks.wait.only_seed=1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)  # to sweep.py itself, as a scheduler or `kill` would
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "SIGTERM: stopping the jobs" in out, out[-3000:]

    sweep = tmp_path / "sweeps" / "stopped"
    runs = {p.name.split("_", 1)[1]: p for p in (sweep / "runs").iterdir() if p.is_dir()}
    assert set(runs) == {"baseline_64_s0", "baseline_64_s1"}  # seed 2 never started
    s0, s1 = runs["baseline_64_s0"], runs["baseline_64_s1"]
    assert json.loads((s1 / "status.json").read_text())["status"] == "interrupted"
    before = (s0 / "results.json").read_bytes()
    jobs_txt = (sweep / "jobs.txt").read_text().splitlines()
    assert [ln.split()[1] for ln in jobs_txt[1:3]] == ["completed", "interrupted"] and "pending" in jobs_txt[3]
    assert "| – | baseline_64 | 2 | not started |" in (sweep / "report.md").read_text()
    assert not (sweep / "sweep.lock").exists()  # a SIGTERM still ends in the report and lets the lock go

    proc = run_cli("sweep.py", f"resume={sweep}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 completed (kept), 1 to continue from their last checkpoint, 1 to start" in proc.stdout
    assert ", 1 at a time" in proc.stdout  # started with jobs=1: the resume keeps it (jobs=auto would run 2 here)
    assert (s0 / "results.json").read_bytes() == before  # the finished run is untouched
    assert not (sweep / "sweep.lock").exists()
    continued = _results(s1)
    assert continued["efficiency"]["epochs_run"] == 3 and [r["epoch"] for r in continued["history"]] == [0, 1, 2]
    (resume,) = json.loads((s1 / "status.json").read_text())["resumes"]
    assert resume["previous_status"] == "interrupted" and resume["from"].endswith("last.ckpt")
    report = json.loads((sweep / "report.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["completed"] * 3 and not report["missing"]
    (perf,) = report["tables"]["performance"]
    assert perf["seeds"] == 3
    assert "did not finish" not in (sweep / "report.md").read_text()

    kept = {p.name: (p / "results.json").read_bytes() for p in (sweep / "runs").iterdir() if p.is_dir()}
    proc = run_cli("sweep.py", f"resume={sweep}", "seeds=[0,1,2,3]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 completed (kept), 0 to continue from their last checkpoint, 1 to start" in proc.stdout
    after = {p.name: p for p in (sweep / "runs").iterdir() if p.is_dir()}
    assert set(after) - set(kept) == {"3_baseline_64_s3"}
    assert all((after[name] / "results.json").read_bytes() == blob for name, blob in kept.items())
    plan = json.loads((sweep / "sweep.json").read_text())
    assert plan["seeds"] == [0, 1, 2, 3] and len(plan["resumes"]) == 2
    assert json.loads((sweep / "report.json").read_text())["tables"]["performance"][0]["seeds"] == 4


@pytest.mark.slow
def test_a_sigkilled_run_resumes_from_its_last_epoch_and_logs_every_epoch(synthetic_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("BLOODCLS_COMMIT", "started-here")
    common = ["experiment=baseline_64", "data.img_size=28", "trainer.max_epochs=3", "logger=csv",
              f"data.root={synthetic_root}", *FAST]
    killed = run_cli("train.py", *common, f"hydra.run.dir={run}", "+callbacks.kill._target_=tests.plants.SendSignal",
                     "+callbacks.kill.epoch=2", f"+callbacks.kill.marker={tmp_path / 'killed'}", "+callbacks.kill.signum=9")
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # it had no chance to say more
    assert job_state(run)[0] == CONTINUE
    # stdout is not a terminal here: the epoch lines reach it as well as train.log
    assert "epoch 1/3 | train loss" in killed.stdout and "epoch 2/3 | train loss" in killed.stdout

    monkeypatch.setenv("BLOODCLS_COMMIT", "ended-here")  # the checkout moved on between the kill and the resume
    resumed = run_cli("train.py", f"resume={run}")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    results = _results(run)
    assert (results["environment"]["commit_started"], results["environment"]["commit"]) == ("started-here", "ended-here")
    status = json.loads((run / "status.json").read_text())
    assert status["commit"] == "started-here" and [r["commit"] for r in status["resumes"]] == ["ended-here"]
    assert results["efficiency"]["epochs_run"] == 3 and [r["epoch"] for r in results["history"]] == [0, 1, 2]
    lines = [ln for ln in (run / "train.log").read_text().splitlines() if "bloodcls.training.progress" in ln]
    assert [ln.split(" - ", 1)[1].split(" |")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    for field in ("train loss", "acc", "val loss", "lr ", "s/epoch", "left"):
        assert all(field in ln for ln in lines), field


# -- the pieces, on hand-made folders -------------------------------------------------------------------
def _job(runs: Path, name: str, seed: int, status: dict | None, results: bool = False,
         last: bool | bytes | dict = False) -> Path:
    """A hand-made job folder; ``last``: True for a last.ckpt that resume= can read (the training state Lightning
    keeps, empty), a dict saved as it is, or bytes written as they are."""
    folder = runs / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- experiment=skip\n- seed={seed}\n- logger=csv\n")
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))
    if results:
        (folder / "results.json").write_text("{}")
    if last is not False:
        (folder / "checkpoints").mkdir()
        path = folder / "checkpoints" / "last.ckpt"
        if isinstance(last, bytes):
            path.write_bytes(last)
        else:
            torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}} if last is True else last, path)
    return folder


def test_inventory_tells_what_each_job_needs(tmp_path):
    runs = tmp_path / "runs"
    host = __import__("socket").gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _job(runs, "0_skip_s0", 0, {"status": "completed"}, results=True)
        killed = {"status": "running", "pid": 2**22 + 7, "host": host}  # SIGKILLed: "running", process gone
        _job(runs, "1_skip_s1", 1, killed, last=True)
        _job(runs, "2_skip_s2", 2, {"status": "interrupted"})  # stopped in its first epoch: no checkpoint
        plan = {"experiments": ["skip"], "seeds": [0, 1, 2, 3]}
        states = [(j.seed, j.state) for j in inventory(tmp_path, plan)]
        assert states == [(0, DONE), (1, CONTINUE), (2, START), (3, START)]
        lines = [status_line(j) for j in inventory(tmp_path, plan)]
        assert "completed" in lines[0] and "killed" in lines[1] and "interrupted" in lines[2] and "pending" in lines[3]

        todo = plan_resume(tmp_path, plan, inventory(tmp_path, plan), ["threads=1"])
        cmds = {j.seed: cmd for j, cmd in todo}
        assert cmds[1][2:] == [f"resume={runs / '1_skip_s1'}", "threads=1"]
        assert f"hydra.run.dir={runs / '2_skip_s2'}" in cmds[2]  # started again under its own name ...
        assert len(list((runs / ".restarted").iterdir())) == 1  # ... its old folder kept aside, not deleted

        _job(runs, "4_skip_s4", 4, {"status": "running", "pid": sleeper.pid, "host": host})
        with pytest.raises(UserError, match=rf"4_skip_s4 \(process {sleeper.pid}\) still running"):
            only_4 = {"experiments": ["skip"], "seeds": [4]}
            plan_resume(tmp_path, only_4, inventory(tmp_path, only_4), [])
        assert inventory(tmp_path, {"experiments": ["skip"], "seeds": [4]})[0].state == LIVE
    finally:
        sleeper.kill()


@pytest.mark.parametrize(("last", "what"), [
    (b"PK\x03\x04" + b"\0" * 40, "is not a readable PyTorch checkpoint"),  # a zip cut short (an interrupted copy)
    (b"", "is empty"),
    ({"state_dict": {}}, "holds weights but no training state"),
])
def test_a_job_whose_last_checkpoint_cannot_be_read_starts_again_with_its_folder_kept(tmp_path, capsys, last, what):
    """It used to stay "to continue" at every resume, its train.py resume= failing each time, with no way out named."""
    runs = tmp_path / "runs"
    folder = _job(runs, "0_skip_s0", 0, {"status": "interrupted"}, last=last)
    plan = {"experiments": ["skip"], "seeds": [0], "overrides": ["logger=csv"]}
    jobs = inventory(tmp_path, plan)
    assert [j.state for j in jobs] == [CONTINUE]  # on disk it looks like a job to continue
    ((job, cmd),) = plan_resume(tmp_path, plan, jobs, [])
    assert job.state == START and not any(c.startswith("resume=") for c in cmd)
    assert cmd[2:5] == ["experiment=skip", "seed=0", f"group={tmp_path.name}"]
    assert cmd[-1] == f"hydra.run.dir={runs / '0_skip_s0'}"  # started again under its own name ...
    (aside,) = (runs / ".restarted").iterdir()  # ... its old folder kept, checkpoint and all
    assert not folder.exists() and (aside / "checkpoints" / "last.ckpt").is_file()
    out = capsys.readouterr().out
    assert f"[sweep] 0_skip_s0 cannot continue: {folder / 'checkpoints' / 'last.ckpt'} {what}" in out
    assert f"Its folder is kept as {aside}" in out and "starting the job again from scratch" in out
    assert describe([(job, cmd)], jobs) == "0 completed (kept), 0 to continue from their last checkpoint, 1 to start"


def test_resume_adds_jobs_but_never_changes_how_they_train(tmp_path):
    plan = {"experiments": ["skip"], "seeds": [0], "overrides": ["logger=csv"]}
    settings = OmegaConf.create({"experiments": ["skip", "unet"], "seeds": [1, 0]})
    assert extend_plan(plan, settings, ["seeds"]) == {**plan, "seeds": [0, 1]}
    assert extend_plan(plan, settings, ["experiments", "seeds"])["experiments"] == ["skip", "unet"]
    check_resume_arguments(tmp_path, ["resume", "seeds", "jobs"], [], plan)
    with pytest.raises(UserError, match=r"started with \(logger=csv\).*trainer.max_epochs=5 cannot be changed"):
        check_resume_arguments(tmp_path, ["resume"], ["trainer.max_epochs=5"], plan)
    proc = run_cli("sweep.py", f"resume={tmp_path / 'nothing'}")
    assert proc.returncode == 2 and "no sweep plan there" in proc.stderr and "Traceback" not in proc.stderr


def test_progress_line_holds_what_a_background_reader_needs():
    line = progress_line({"epoch": 3, "max_epochs": 40, "train_loss": 0.51234, "train_acc": 0.812, "val_loss": 0.43,
                          "val_acc": 0.851, "lr": 1e-4, "epoch_s": 312.4, "eta_s": 37 * 312.4, "best_epoch": 2,
                          "patience_left": 5})
    assert line == ("epoch 3/40 | train loss 0.5123 acc 81.20 % | val loss 0.4300 acc 85.10 % | lr 1.00e-04 | "
                    "312 s/epoch | at most 3h12m left (best epoch 3, patience 5 left)")  # epochs counted from 1


def test_patience_left_counts_the_epoch_just_ended():
    from lightning.pytorch.callbacks import EarlyStopping

    from bloodcls.training.progress import patience_left

    stopper = EarlyStopping(monitor="val/loss", patience=3)
    losses = [1.0, 0.8, 0.9, 0.85, 0.95]  # best at the second epoch, then three without improvement
    epochs = [{"epoch": i, "val/loss": v} for i, v in enumerate(losses)]
    assert [patience_left(stopper, epochs[:k]) for k in range(1, 6)] == [3, 3, 2, 1, 0]


def test_time_left_is_not_blown_up_by_one_paused_epoch():
    from bloodcls.training.progress import epoch_seconds

    times = [400.0, 200.0, 210.0, 2600.0, 190.0, 205.0]  # warm-up, then a 40-minute SIGSTOP during the fourth epoch
    assert epoch_seconds([{"epoch": i, "time_s": t} for i, t in enumerate(times)]) == 205.0
    assert epoch_seconds([]) == 0.0
