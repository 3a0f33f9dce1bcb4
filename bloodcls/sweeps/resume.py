"""``python sweep.py resume=outputs/sweeps/<name>``: finish what a stopped sweep left, or extend it.

Completed jobs are kept as they are; interrupted ones (Ctrl-C, SIGTERM, a SIGKILL or a lost machine) continue
from their ``last.ckpt`` with their own overrides, as ``train.py resume=<run>`` does; jobs that never started,
or stopped before finishing an epoch, start, and so does a job whose ``last.ckpt`` cannot be read (its folder is
kept under ``runs/.restarted/`` and the resume says so). ``seeds=[...]`` / ``experiments=[...]`` add jobs to the plan
without retraining what exists. The jobs run as ``train.py`` processes, ``jobs`` at a time, each in its own
process group (:mod:`bloodcls.sweeps.processes`); the sweep's report is then built over all of them.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bloodcls.common.files import REPO
from bloodcls.common.rundir import read_json, write_json
from bloodcls.common.sweepdir import PLAN_FILE, RUNS_DIR
from bloodcls.config import compose_config, override_key
from bloodcls.errors import UserError
from bloodcls.runs.resume import ResumeTarget, check_checkpoint, checkpoint_to_continue
from bloodcls.sweeps.folds import fold_overrides
from bloodcls.sweeps.jobs import CONTINUE, DONE, LIVE, START, Job, next_job_number, set_aside

# Sweep settings a resume may change: the plan grows by experiments/seeds; jobs/wandb_report/robustness are how
# it runs and reports; published= leaves to a footing the jobs it holds records of. Anything else (training
# overrides, folds=, name=, dir=) would make the jobs of one sweep differ.
RESUME_KEYS = ("resume", "experiments", "seeds", "jobs", "wandb_report", "robustness", "published")


def load_plan(sweep_dir: Path) -> dict[str, Any]:
    plan = read_json(sweep_dir / PLAN_FILE)
    if not plan or not plan.get("experiments") or not plan.get("seeds"):
        raise UserError(f"resume={sweep_dir}: no sweep plan there ({PLAN_FILE} with its experiments and seeds is "
                        "missing or unreadable), so there is nothing to continue. Point resume= at the folder "
                        "`python sweep.py` printed (outputs/sweeps/<name>), or start a new sweep.")
    return plan


def check_resume_arguments(sweep_dir: Path, given: list[str], overrides: list[str], plan: dict[str, Any]) -> None:
    """A resumed sweep keeps the training overrides it started with: refuse new ones, and other sweep settings."""
    other = [k for k in given if k not in RESUME_KEYS]
    if overrides or other:
        extra = ", ".join([*overrides, *other])
        raise UserError(f"resume={sweep_dir} continues the sweep with the overrides it started with "
                        f"({' '.join(plan.get('overrides') or []) or 'none'}), so every job of it trains alike; "
                        f"{extra} cannot be changed now. Only experiments=, seeds= (to add jobs), jobs=, "
                        "robustness= and wandb_report= go with resume=; start a new sweep for other settings.")


def extend_plan(plan: dict[str, Any], settings: DictConfig, given: list[str]) -> dict[str, Any]:
    """The plan with the experiments and seeds given now added after its own (nothing is ever removed)."""
    out = dict(plan)
    for key in ("experiments", "seeds"):
        if key in given:
            extra = [v for v in settings[key] if v not in out[key]]
            out[key] = [*out[key], *extra]
    return out


def _run_name(job: Job, overrides: list[str]) -> str:
    job_overrides = [o for o in overrides if not override_key(o).startswith("hydra")]
    return str(compose_config([f"experiment={job.experiment}", f"seed={job.seed}", *job_overrides]).run_name)


def job_command(job: Job, sweep_dir: Path, plan: dict[str, Any], threads: list[str], number: int) -> list[str]:
    """``train.py`` for one job: ``resume=<its folder>`` to continue, else a fresh run in ``runs/<n>_<run name>``
    with the sweep's overrides (as its multirun would have started it)."""
    train = [sys.executable, str(REPO / "train.py")]
    if job.state == CONTINUE:
        return [*train, f"resume={job.folder}", *threads]
    overrides = [o for o in plan.get("overrides") or [] if not override_key(o).startswith("hydra.sweep")]
    overrides += fold_overrides(plan.get("folds"), job.fold)
    name = job.folder.name if job.folder is not None else f"{number}_{_run_name(job, overrides)}"
    return [*train, f"experiment={job.experiment}", f"seed={job.seed}", f"group={sweep_dir.name}", *threads,
            *overrides, f"hydra.run.dir={sweep_dir / RUNS_DIR / name}"]


def plan_resume(sweep_dir: Path, plan: dict[str, Any], jobs: list[Job], threads: list[str]
                ) -> list[tuple[Job, list[str]]]:
    """(job, command) for every job of ``jobs`` (:func:`inventory`) that is not completed; refuses while any job
    of the sweep still runs."""
    live = [j for j in jobs if j.state == LIVE]
    if live:
        names = ", ".join(f"{j.folder.name} (process {j.status.get('pid')})" for j in live)
        raise UserError(f"resume={sweep_dir}: {names} still running, and two processes must never write one run "
                        "folder. Stop the sweep first (Ctrl-C, or `kill -TERM <pid>` of sweep.py: its jobs record "
                        "themselves as interrupted and keep last.ckpt), then resume it.")
    todo, number = [], next_job_number(sweep_dir)
    for job in jobs:
        if job.state == DONE:
            continue
        if job.state == CONTINUE and (problem := unreadable_checkpoint(job.folder)) is not None:
            job.state = START
            aside = set_aside(job.folder)
            print(f"[sweep] {job.folder.name} cannot continue: {problem}. Its folder is kept as {aside} (its logs and "
                  "best.ckpt stay there); starting the job again from scratch", flush=True)
        elif job.state == START and job.folder is not None:
            aside = set_aside(job.folder)
            print(f"[sweep] {job.folder.name} stopped before finishing an epoch: kept as {aside}, starting it again",
                  flush=True)
        todo.append((job, job_command(job, sweep_dir, plan, threads, number)))
        number += job.folder is None
    return todo


def unreadable_checkpoint(folder: Path) -> str | None:
    """Why the checkpoint ``train.py resume=<folder>`` would continue from cannot be (read as ``resume=`` reads it,
    weights-only, training state included), or None when it can. Without this a truncated ``last.ckpt`` fails its
    job at every resume and the sweep never finishes."""
    checkpoint = checkpoint_to_continue(folder)
    if checkpoint is None:
        return f"{folder}/checkpoints has no last.ckpt"
    try:
        check_checkpoint(ResumeTarget(checkpoint=checkpoint, run_dir=folder))
    except UserError as err:
        return str(err).split(". ")[0]  # the first sentence names the file and what is wrong with it
    return None


def describe(todo: list[tuple[Job, list[str]]], jobs: list[Job]) -> str:
    done = sum(j.state == DONE for j in jobs)
    cont = sum(j.state == CONTINUE for j, _ in todo)
    return f"{done} completed (kept), {cont} to continue from their last checkpoint, {len(todo) - cont} to start"


def record_resume(sweep_dir: Path, plan: dict[str, Any], todo: list[tuple[Job, list[str]]], **fields: Any) -> None:
    """Append this resume to the plan's ``resumes`` (first call) or complete its entry (later calls)."""
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "continued": [j.folder.name for j, _ in todo if j.state == CONTINUE],
             "started": [f"{j.experiment}{'' if j.fold is None else f'_f{j.fold}'}_s{j.seed}"
                         for j, _ in todo if j.state == START]}
    resumes = list(plan.get("resumes") or [])
    if fields and resumes:
        resumes[-1] = {**resumes[-1], **fields}
    else:
        resumes.append({**entry, **fields})
    plan["resumes"] = resumes
    write_json(sweep_dir / PLAN_FILE, plan)

