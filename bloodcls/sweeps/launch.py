"""`sweep.py`: the study's experiments over several seeds (and folds) as one Hydra multirun of `train.py`, or
``resume=`` of a stopped sweep, then the report (bloodcls.analysis).

The multirun runs in a child process, so a crashing or killed job (or Ctrl-C) never takes the report
down with it: whatever finished is reported and what did not is listed with its error. From before its first
job until its report is written the sweep holds ``<sweep>/sweep.lock`` (:mod:`bloodcls.sweeps.lock`), so a
second ``sweep.py`` never trains the same jobs, on this host or another.
"""

from __future__ import annotations

import datetime as dt
import shlex
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bloodcls.analysis.report_markdown import write_report
from bloodcls.analysis.trackers import tracker_hints
from bloodcls.common.rundir import RESULTS_FILE, job_folders, read_json, write_json
from bloodcls.common.sweepdir import PLAN_FILE, REPORT_MD, RUNS_DIR, job_label, published_jobs
from bloodcls.config import override_key, override_value
from bloodcls.errors import UserError
from bloodcls.sweeps.jobs import CONTINUE, DONE, inventory, write_job_status
from bloodcls.sweeps.lock import SweepLock
from bloodcls.sweeps.processes import run_groups, run_process_group
from bloodcls.sweeps.published import leave_to_footing
from bloodcls.sweeps.resume import (
    check_resume_arguments,
    describe,
    extend_plan,
    load_plan,
    plan_resume,
    record_resume,
)
from bloodcls.sweeps.settings import (
    SWEEP_KEYS,
    check_job_configs,
    concurrent_jobs,
    job_count,
    known_experiments,
    on_cpu,
    parse_args,
    sweep_folder,
    train_command,
)
from bloodcls.training.compute import usable_cpus


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_training(settings: DictConfig, overrides: list[str], sweep_dir: Path, lock: SweepLock) -> dict[str, Any]:
    """A new sweep: check every job's config, take the sweep's lock, then run the multirun (or, with jobs left to
    a footing by ``published=``, the remaining jobs one ``train.py`` each, as a resume runs them)."""
    unknown = [e for e in settings.experiments if e not in known_experiments()]
    if unknown:
        raise UserError(f"Unknown experiment(s) {unknown}. Known: {', '.join(known_experiments())} "
                        "(conf/experiment/). Example: `python sweep.py experiments=[baseline_64,skip] seeds=[0,1]`.")
    if not settings.seeds or not settings.experiments:
        raise UserError("Nothing to run: experiments=[...] and seeds=[...] must both be non-empty.")
    check_job_configs(settings, overrides)
    jobs = concurrent_jobs(settings, overrides)
    lock.acquire()  # a second sweep.py with the same name= stops here while this one runs
    if (sweep_dir / RUNS_DIR).exists():
        raise UserError(f"{sweep_dir} already holds a sweep; pick another name= (runs are never overwritten), "
                        f"continue it with `python sweep.py resume={sweep_dir}`, or rebuild its report with "
                        f"`python sweep.py report_only=true dir={sweep_dir}`.")
    cmd = train_command(settings, overrides, sweep_dir)
    plan = {"experiments": list(settings.experiments), "seeds": list(settings.seeds), "folds": settings.get("folds"),
            "jobs": settings.get("jobs", "auto"), "overrides": overrides, "command": shlex.join(cmd),
            "started_at": _now_iso()}
    if settings.get("published"):
        plan = leave_to_footing(plan, settings.published, sweep_dir)
    left = len(published_jobs(plan))
    write_json(sweep_dir / PLAN_FILE, plan)
    folds = f" x {plan['folds']} folds" if plan["folds"] else ""
    print(f"[sweep] {job_count(settings)} jobs ({len(plan['experiments'])} experiments x seeds {plan['seeds']}{folds}"
          f"{f', {jobs} at a time' if jobs > 1 else ''}) -> {sweep_dir}", flush=True)
    t0 = time.perf_counter()
    if left:
        print(f"[sweep] {left} of them already published in {settings.published}: not trained again "
              f"({', '.join(f'{e} seed {s}' for e, s in sorted(published_jobs(plan)))})"
              + ("; nothing left to train" if left == job_count(settings) else ""), flush=True)
        codes = train_jobs(sweep_dir, plan, settings, overrides, record=False)
        returncode = 0 if all(code == 0 for code in codes) else 1
    else:
        returncode = run_process_group(cmd, tick=lambda: write_job_status(sweep_dir, plan))
    plan.update(finished_at=_now_iso(), train_wall_s=time.perf_counter() - t0, returncode=returncode)
    write_json(sweep_dir / PLAN_FILE, plan)
    print(f"[sweep] training finished in {plan['train_wall_s']:.0f} s (exit status {returncode})", flush=True)
    return plan


def resume_training(settings: DictConfig, given: list[str], overrides: list[str], sweep_dir: Path,
                    lock: SweepLock) -> int:
    """``resume=<sweep>``: continue, start or keep each planned job (:mod:`bloodcls.sweeps.resume`), ``jobs``
    at a time, under the sweep's lock; returns 0 when every job it ran ended well."""
    plan = load_plan(sweep_dir)
    check_resume_arguments(sweep_dir, given, overrides, plan)
    lock.acquire()  # before anything is looked at: a live sweep on another host refuses this resume here
    plan = extend_plan(plan, settings, given)
    unknown = [e for e in plan["experiments"] if e not in known_experiments()]
    if unknown:
        raise UserError(f"Unknown experiment(s) {unknown}. Known: {', '.join(known_experiments())} (conf/experiment/).")
    # published= given now, or the footing the sweep started with: what it has published since is left to it too
    footing = settings.get("published") if "published" in given else (plan.get("published") or {}).get("footing")
    if footing:
        plan = leave_to_footing(plan, footing, sweep_dir)
    # jobs= given now wins; otherwise the resume runs as many side by side as the sweep was started with
    jobs_setting = settings.get("jobs", "auto") if "jobs" in given else plan.get("jobs", "auto")
    whole = OmegaConf.merge(settings, {"experiments": plan["experiments"], "seeds": plan["seeds"],
                                       "folds": plan.get("folds"), "jobs": jobs_setting, "published": footing})
    job_overrides = list(plan.get("overrides") or [])
    check_job_configs(whole, job_overrides)
    codes = train_jobs(sweep_dir, plan, whole, job_overrides, record=True)
    return 0 if all(code == 0 for code in codes) else 1


def train_jobs(sweep_dir: Path, plan: dict[str, Any], whole: DictConfig, job_overrides: list[str],
               record: bool) -> list[int]:
    """Keep, continue or start each job of the plan (its configs checked by the caller), ``jobs`` at a time;
    ``record``: note it in the plan's ``resumes``. Returns the exit codes of the jobs it ran."""
    planned = inventory(sweep_dir, plan)
    jobs = max(1, min(concurrent_jobs(whole, job_overrides), sum(j.state != DONE for j in planned)))
    threads = ([f"threads={max(1, usable_cpus() // jobs)}"]
               if on_cpu(job_overrides) and override_value(job_overrides, "threads") is None else [])
    todo = plan_resume(sweep_dir, plan, planned, threads)
    if record:
        record_resume(sweep_dir, plan, todo)
        print(f"[sweep] resuming {sweep_dir}: {describe(todo, planned)}"
              f"{f', {jobs} at a time' if len(todo) > 1 else ''}", flush=True)
    else:  # a fresh sweep that left jobs to a footing: these commands ran, not the multirun it would have started
        plan.update(command=None, commands=[shlex.join(cmd) for _, cmd in todo])
        write_json(sweep_dir / PLAN_FILE, plan)

    def on_start(i: int) -> None:
        job = todo[i][0]
        how = "continuing from its last checkpoint" if job.state == CONTINUE else "starting"
        print(f"[sweep] job {i + 1}/{len(todo)} ({job.experiment} {job_label(job.seed, job.fold)}) {how}", flush=True)

    t0 = time.perf_counter()
    codes = run_groups([cmd for _, cmd in todo], jobs, tick=lambda: write_job_status(sweep_dir, plan), on_start=on_start)
    if record:
        record_resume(sweep_dir, plan, todo, finished_at=_now_iso(), train_wall_s=time.perf_counter() - t0,
                      exit_codes=codes)
        print(f"[sweep] resumed jobs finished in {time.perf_counter() - t0:.0f} s", flush=True)
    return codes


def score_robustness(sweep_dir: Path, which: bool | list[str]) -> None:
    """Run the shift suite on the finished runs (all, or those of the listed experiments) not scored yet."""
    from bloodcls import robustness

    for job in job_folders(sweep_dir / RUNS_DIR):
        results = read_json(job / RESULTS_FILE)
        if results is None:
            continue
        experiment = results.get("experiment")
        if which is True or (isinstance(which, list) and experiment in which):
            print(f"[sweep] shift suite: {job.name}", flush=True)
            robustness.score_targets([job], robustness.suite_options(reuse=True))


def report_folder(settings: DictConfig) -> Path:
    """``report_only=true dir=<sweep>``: the folder, checked."""
    if not settings.dir:
        raise UserError("report_only=true needs dir=<sweep folder> (e.g. outputs/sweeps/<name>).")
    sweep_dir = Path(settings.dir)
    if not (sweep_dir / RUNS_DIR).is_dir() and not (sweep_dir / PLAN_FILE).is_file():
        raise UserError(f"{sweep_dir} is not a sweep folder (no {RUNS_DIR}/ or {PLAN_FILE}); point dir= at "
                        "outputs/sweeps/<name>.")
    return sweep_dir


def main(argv: list[str]) -> int:
    settings, overrides = parse_args(argv)
    if settings.resume and settings.report_only:
        raise UserError("resume= continues a sweep and then reports; report_only=true with dir= only reports.")
    if settings.report_only:
        sweep_dir, lock = report_folder(settings), None
    else:
        sweep_dir = Path(str(settings.resume)) if settings.resume else sweep_folder(settings, overrides)
        lock = SweepLock(sweep_dir)
    try:
        returncode = 0
        if settings.resume:
            given = [override_key(a) for a in argv if override_key(a) in SWEEP_KEYS]
            returncode = resume_training(settings, given, overrides, sweep_dir, lock)
        elif not settings.report_only:
            returncode = run_training(settings, overrides, sweep_dir, lock)["returncode"]
        if settings.robustness:
            which = settings.robustness
            score_robustness(sweep_dir, True if which is True else list(which))
        fresh = not (settings.report_only or settings.resume)  # else the overrides are the plan's own
        rep = write_report(sweep_dir, overrides if fresh else None, bool(settings.wandb_report))
    finally:
        if lock is not None:
            lock.release()
    unfinished = [r for r in rep.runs if r.outcome != "completed"] + rep.missing
    print(f"[sweep] report: {sweep_dir / REPORT_MD}"
          + (f" ({len(unfinished)} job(s) did not finish; listed there)" if unfinished else ""))
    for hint in tracker_hints(sweep_dir, overrides if fresh else None):
        print(f"[sweep] {hint}")
    return 1 if (unfinished or returncode) else 0
