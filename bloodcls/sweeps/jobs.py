"""The jobs of a sweep as they stand on disk: what each planned (experiment, seed[, fold]) left, and its status line.

A sweep is resumable because everything needed lives in its folder: the plan (``sweep.json``) names the
jobs, and each job's run folder says how far it got (``status.json``, ``checkpoints/last.ckpt``,
``results.json``). :func:`inventory` reads that into one :class:`Job` per planned job, whatever stopped
the sweep (Ctrl-C, SIGTERM, or a SIGKILL that left a job "running" with a dead process);
:func:`write_job_status` writes one line per job into ``<sweep>/jobs.txt`` while the sweep runs.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bloodcls.common.files import atomic_write
from bloodcls.common.rundir import CHECKPOINT_DIR, LAST_CKPT, RESULTS_FILE, RunPaths, job_folders
from bloodcls.common.sweepdir import JOBS_FILE, RUNS_DIR, SET_ASIDE_DIR, job_label, planned_jobs
from bloodcls.runs.status import COMPLETED, RUNNING, clock, read_status, still_running
from bloodcls.sweeps.folds import override_fold

# What a planned job needs: nothing (done), to be continued from its last.ckpt, started afresh, or nothing yet
# because it is still going in another process.
DONE, CONTINUE, START, LIVE = "completed", "continue", "start", "running"


@dataclass
class Job:
    experiment: str
    seed: int
    fold: int | None = None  # the data.fold of a folds= sweep
    folder: Path | None = None  # its run folder, None when the job never started
    state: str = START
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int | None]:
        return self.experiment, self.seed, self.fold


def job_identity(folder: Path) -> tuple[str, int, int | None] | None:
    """(experiment, seed, fold) of a job folder, from the overrides Hydra saved for it (``experiment=``, ``seed=``,
    ``data.fold=``; fold None without one)."""
    try:
        overrides = yaml.safe_load(RunPaths(folder).hydra_overrides.read_text()) or []
    except (OSError, yaml.YAMLError):
        return None
    found: dict[str, str] = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        found[key.lstrip("+~")] = value
    if "experiment" not in found:
        return None
    try:
        return found["experiment"], int(found.get("seed", 0)), override_fold(found)
    except ValueError:
        return None


def job_state(folder: Path) -> tuple[str, dict[str, Any]]:
    """What a started job needs next, from its folder: DONE, LIVE (its process is alive), CONTINUE (it has a
    last.ckpt) or START (it stopped before finishing an epoch, or wrote nothing we can trust)."""
    status = read_status(folder) or {}
    if (folder / RESULTS_FILE).is_file() and status.get("status", COMPLETED) in (COMPLETED, RUNNING):
        return DONE, status  # results.json is written last: a kill after it loses nothing
    if still_running(status) is not None:
        return LIVE, status
    if (folder / CHECKPOINT_DIR / LAST_CKPT).is_file():
        return CONTINUE, status
    return START, status


def inventory(sweep_dir: Path, plan: dict[str, Any]) -> list[Job]:
    """One Job per planned (experiment, seed, fold), in launch order, matched to the run folders by identity."""
    folders: dict[tuple[str, int, int | None], Path] = {}
    for folder in job_folders(sweep_dir / RUNS_DIR):
        ident = job_identity(folder)
        if ident is not None:  # a data.fold= override of a sweep without folds= is not a fold of it
            folders.setdefault(ident if plan.get("folds") else (*ident[:2], None), folder)
    jobs = []
    for key in planned_jobs(plan):
        folder = folders.get(key)
        job = Job(*key, folder=folder)
        if folder is not None:
            job.state, job.status = job_state(folder)
        jobs.append(job)
    return jobs


def next_job_number(sweep_dir: Path) -> int:
    """The number a new job folder gets (``<n>_<run name>``): one past the highest in use."""
    numbers = [int(p.name.split("_", 1)[0]) for p in job_folders(sweep_dir / RUNS_DIR) if p.name.split("_", 1)[0].isdigit()]
    return max(numbers, default=-1) + 1


def set_aside(folder: Path) -> Path:
    """Move a job folder that cannot be continued (no checkpoint, or one that cannot be read) to
    ``runs/.restarted/<name>-<time>`` (kept, never deleted), so the job can start again under its own name."""
    target = folder.parent / SET_ASIDE_DIR / f"{folder.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    return target


def status_line(job: Job, now: float | None = None) -> str:
    """``<folder>  <state>  epoch 12/40  314 s/epoch  at most 1h20m left`` for one job of :func:`inventory`."""
    now = time.time() if now is None else now
    if job.folder is None:
        return f"{f'–  {job.experiment} {job_label(job.seed, job.fold)}':32} pending"
    state = {DONE: COMPLETED, LIVE: RUNNING}.get(job.state) or job.status.get("status", "starting")
    if state == RUNNING and job.state != LIVE:
        state = "killed"  # SIGKILL or a lost machine: "running" with a dead process
    p = job.status.get("progress") or {}
    if not p:
        return f"{job.folder.name:32} {state}"
    line = f"{job.folder.name:32} {state:11} epoch {p['epoch']}/{p['max_epochs']}  {p.get('epoch_s', 0):.0f} s/epoch"
    if state == RUNNING and p.get("phase") == "testing":
        line += "  testing"
    elif state == RUNNING:
        left = max(0.0, p.get("eta_s", 0.0) - (now - p.get("time", now)))
        line += f"  at most {clock(left)} left"
    if p.get("val_acc") is not None:
        line += f"  val acc {100 * p['val_acc']:.2f} %"
    return line


def write_job_status(sweep_dir: Path, plan: dict[str, Any]) -> list[Job]:
    """Rewrite ``<sweep>/jobs.txt``: a header with the counts, then :func:`status_line` per planned job."""
    jobs = inventory(sweep_dir, plan)
    lines = [status_line(j) for j in jobs]
    done = sum(j.state == DONE for j in jobs)
    header = (f"# {sweep_dir.name}: {done}/{len(jobs)} completed, as of "
              f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC (rewritten while the sweep runs)")
    text = "\n".join([header, *lines]) + "\n"
    if sweep_dir.is_dir():
        atomic_write(sweep_dir / JOBS_FILE, lambda tmp: tmp.write_text(text))
    return jobs
