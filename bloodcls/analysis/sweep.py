"""`sweep.py`: the study's experiments over several seeds (and folds) as one Hydra multirun of `train.py`, then a report.

The multirun runs in a child process, so a crashing or killed job (or Ctrl-C) never takes the report
down with it: whatever finished is reported and what did not is listed with its error.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from bloodcls.analysis.processes import run_groups, run_process_group
from bloodcls.analysis.report import PLAN_FILE, build_report
from bloodcls.analysis.report_markdown import markdown, write_tables
from bloodcls.analysis.report_wandb import log_report_to_wandb
from bloodcls.analysis.sweep_folds import (
    all_folds,
    check_folder_data,
    check_folds,
    fold_list,
    fold_overrides,
    job_label,
)
from bloodcls.analysis.sweep_jobs import CONTINUE, DONE, inventory, write_job_status
from bloodcls.analysis.sweep_resume import (
    check_resume_arguments,
    describe,
    extend_plan,
    load_plan,
    plan_resume,
    record_resume,
)
from bloodcls.analysis.trackers import tracker_hints
from bloodcls.common.files import REPO
from bloodcls.common.rundir import RESULTS_FILE, job_folders, read_json
from bloodcls.config import CONFIG_DIR, compose_config, override_key, override_value
from bloodcls.errors import UserError
from bloodcls.training.compute import usable_cpus

log = logging.getLogger(__name__)

SWEEP_KEYS = ("experiments", "seeds", "name", "dir", "report_only", "robustness", "wandb_report", "jobs", "resume",
              "folds")
# jobs=auto with trainer=gpu: this many training processes share the one GPU at most (each holds its data
# on the device, ~1 GB at 128 px); the study's models are too small to fill an H100/H200 alone.
GPU_JOBS = 8
# jobs=auto on a CPU: one single-thread job per usable CPU, up to this many (each holds its data in memory,
# ~1.5 GB at 128 px). Small convolutions scale poorly across threads: two one-thread jobs on two cores
# finished a two-experiment sweep sooner than one two-thread job at a time (docs/results/cpu-fast-path.md).
CPU_JOBS = 8


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """Split Hydra-style arguments into sweep settings and overrides for every training job."""
    settings = OmegaConf.load(Path(CONFIG_DIR) / "sweep.yaml")
    parser = OverridesParser.create()
    train_overrides = []
    for arg in argv:
        key = override_key(arg)
        if key in SWEEP_KEYS:
            try:
                value = parser.parse_override(arg).value()
            except Exception as err:
                raise UserError(f"Cannot parse sweep argument {arg!r}: {err}") from None
            settings[key] = value
        else:
            train_overrides.append(arg)
    return settings, train_overrides


def known_experiments() -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def sweep_folder(settings: DictConfig, overrides: list[str]) -> Path:
    if settings.dir:
        return Path(settings.dir)
    log_dir = Path(override_value(overrides, "paths.log_dir") or "outputs")
    name = settings.name or f"{dt.datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"
    return log_dir / "sweeps" / name


def job_count(settings: DictConfig) -> int:
    """Jobs of the sweep: experiments x seeds x folds."""
    return len(settings.experiments) * len(settings.seeds) * len(fold_list(settings.get("folds")))


def concurrent_jobs(settings: DictConfig, overrides: list[str]) -> int:
    """How many jobs run side by side: ``jobs=N``, or with ``jobs=auto`` all of them (up to GPU_JOBS) on
    ``trainer=gpu`` and one single-thread job per usable CPU (up to CPU_JOBS) on a CPU."""
    total = job_count(settings)
    jobs = settings.get("jobs", "auto")
    if jobs in (None, "auto"):
        if override_value(overrides, "trainer") == "gpu":
            return min(GPU_JOBS, total)
        return min(CPU_JOBS, total, usable_cpus()) if _on_cpu(overrides) else 1
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"jobs={jobs!r}: give a whole number of jobs to run side by side (>= 1), or jobs=auto.")
    return min(jobs, total)


def launcher_overrides(settings: DictConfig, overrides: list[str]) -> list[str]:
    """The joblib launcher for concurrent jobs, unless the user picked a launcher (hydra/launcher=...)."""
    jobs = concurrent_jobs(settings, overrides)
    if jobs <= 1 or override_value(overrides, "hydra/launcher") is not None:
        return []
    threads = []  # CPU jobs side by side share the cores instead of each taking all of them
    if _on_cpu(overrides) and override_value(overrides, "threads") is None:
        threads = [f"threads={max(1, usable_cpus() // jobs)}"]
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", *threads]


def _on_cpu(overrides: list[str]) -> bool:
    """Whether the jobs train on a CPU: no trainer=gpu/ddp, and a CPU accelerator or no GPU here."""
    if override_value(overrides, "trainer") in ("gpu", "ddp"):
        return False
    accelerator = override_value(overrides, "trainer.accelerator") or "auto"
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def check_job_configs(settings: DictConfig, overrides: list[str]) -> None:
    """Compose every experiment's job config and check its values (bloodcls.schema) before any job starts,
    so a bad override stops the sweep at once instead of failing every job."""
    from bloodcls.schema import check_config

    job_overrides = [o for o in overrides if not override_key(o).startswith("hydra")]
    folds = check_folds(settings.get("folds"), job_overrides)
    for exp in settings.experiments:
        cfg = _compose_job(exp, [f"seed={settings.seeds[0]}", *job_overrides])
        if folds:  # on the data config without folds first: data.folds= does not compose on BloodMNIST's
            check_folder_data(folds, cfg)
            cfg = _compose_job(exp, [f"seed={settings.seeds[0]}", *job_overrides, *fold_overrides(folds, 0)])
        check_config(cfg)


def _compose_job(exp: str, overrides: list[str]) -> DictConfig:
    try:
        return compose_config([f"experiment={exp}", *overrides])
    except Exception as err:  # noqa: BLE001 - Hydra's own override and composition errors
        raise UserError(f"The overrides do not compose with experiment={exp}: {str(err).splitlines()[0]}") from None


def train_command(settings: DictConfig, overrides: list[str], sweep_dir: Path) -> list[str]:
    exps, seeds = list(settings.experiments), list(settings.seeds)
    total = job_count(settings)
    return [
        sys.executable, str(REPO / "train.py"), "-m",
        f"experiment={','.join(exps)}", f"seed={','.join(str(s) for s in seeds)}", *all_folds(settings.get("folds")),
        f"hydra.sweep.dir={sweep_dir / 'runs'}",
        f"group={sweep_dir.name}",
        "+hydra.callbacks.progress._target_=bloodcls.analysis.progress.SweepProgress",
        f"+hydra.callbacks.progress.total={total}",
        f"+hydra.callbacks.progress.started={time.time():.3f}",
        *launcher_overrides(settings, overrides),
        *overrides,
    ]


def run_training(settings: DictConfig, overrides: list[str], sweep_dir: Path) -> dict[str, Any]:
    unknown = [e for e in settings.experiments if e not in known_experiments()]
    if unknown:
        raise UserError(f"Unknown experiment(s) {unknown}. Known: {', '.join(known_experiments())} "
                        "(conf/experiment/). Example: `python sweep.py experiments=[baseline_64,skip] seeds=[0,1]`.")
    if not settings.seeds or not settings.experiments:
        raise UserError("Nothing to run: experiments=[...] and seeds=[...] must both be non-empty.")
    check_job_configs(settings, overrides)
    jobs = concurrent_jobs(settings, overrides)
    if (sweep_dir / "runs").exists():
        raise UserError(f"{sweep_dir} already holds a sweep; pick another name= (runs are never overwritten), "
                        f"or rebuild its report with `python sweep.py report_only=true dir={sweep_dir}`.")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    cmd = train_command(settings, overrides, sweep_dir)
    plan = {"experiments": list(settings.experiments), "seeds": list(settings.seeds), "folds": settings.get("folds"),
            "overrides": overrides,
            "command": shlex.join(cmd), "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (sweep_dir / PLAN_FILE).write_text(json.dumps(plan, indent=2))
    folds = f" x {plan['folds']} folds" if plan["folds"] else ""
    print(f"[sweep] {job_count(settings)} jobs ({len(plan['experiments'])} experiments x seeds {plan['seeds']}{folds}"
          f"{f', {jobs} at a time' if jobs > 1 else ''}) -> {sweep_dir}", flush=True)
    t0 = time.perf_counter()
    returncode = run_process_group(cmd, tick=lambda: write_job_status(sweep_dir, plan))
    plan.update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                train_wall_s=time.perf_counter() - t0, returncode=returncode)
    (sweep_dir / PLAN_FILE).write_text(json.dumps(plan, indent=2))
    print(f"[sweep] training finished in {plan['train_wall_s']:.0f} s (exit status {returncode})", flush=True)
    return plan


def resume_training(settings: DictConfig, given: list[str], overrides: list[str], sweep_dir: Path) -> int:
    """``resume=<sweep>``: continue, start or keep each planned job (:mod:`bloodcls.analysis.sweep_resume`), ``jobs``
    at a time; returns 0 when every job it ran ended well."""
    plan = load_plan(sweep_dir)
    check_resume_arguments(sweep_dir, given, overrides, plan)
    plan = extend_plan(plan, settings, given)
    unknown = [e for e in plan["experiments"] if e not in known_experiments()]
    if unknown:
        raise UserError(f"Unknown experiment(s) {unknown}. Known: {', '.join(known_experiments())} (conf/experiment/).")
    job_overrides = list(plan.get("overrides") or [])
    whole = OmegaConf.merge(settings, {"experiments": plan["experiments"], "seeds": plan["seeds"],
                                       "folds": plan.get("folds")})
    check_job_configs(whole, job_overrides)
    planned = inventory(sweep_dir, plan)
    jobs = max(1, min(concurrent_jobs(whole, job_overrides), sum(j.state != DONE for j in planned)))
    threads = ([f"threads={max(1, usable_cpus() // jobs)}"]
               if _on_cpu(job_overrides) and override_value(job_overrides, "threads") is None else [])
    todo = plan_resume(sweep_dir, plan, planned, threads)
    record_resume(sweep_dir, plan, todo)
    print(f"[sweep] resuming {sweep_dir}: {describe(todo, planned)}"
          f"{f', {jobs} at a time' if len(todo) > 1 else ''}", flush=True)

    def on_start(i: int) -> None:
        job = todo[i][0]
        how = "continuing from its last checkpoint" if job.state == CONTINUE else "starting"
        print(f"[sweep] job {i + 1}/{len(todo)} ({job.experiment} {job_label(job.seed, job.fold)}) {how}", flush=True)

    t0 = time.perf_counter()
    codes = run_groups([cmd for _, cmd in todo], jobs, tick=lambda: write_job_status(sweep_dir, plan), on_start=on_start)
    record_resume(sweep_dir, plan, todo, finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  train_wall_s=time.perf_counter() - t0, exit_codes=codes)
    print(f"[sweep] resumed jobs finished in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0 if all(code == 0 for code in codes) else 1


def score_robustness(sweep_dir: Path, which: bool | list[str]) -> None:
    """Run the shift suite on the finished runs (all, or those of the listed experiments) not scored yet."""
    from bloodcls import robustness

    for job in job_folders(sweep_dir / "runs"):
        results = read_json(job / RESULTS_FILE)
        if results is None:
            continue
        experiment = results.get("experiment")
        if which is True or (isinstance(which, list) and experiment in which):
            print(f"[sweep] shift suite: {job.name}", flush=True)
            robustness.score_targets([job], robustness.suite_options(reuse=True))


def write_report(sweep_dir: Path, overrides: list[str] | None = None, wandb_report: bool = False) -> Path:
    from bloodcls.analysis.figures import write_figures

    rep = build_report(sweep_dir)
    write_tables(rep, sweep_dir)
    figures = write_figures(rep, sweep_dir / "figures")
    text = markdown(rep, {k: f"figures/{v}" for k, v in figures.items()})
    (sweep_dir / "report.md").write_text(text)
    if wandb_report:
        try:
            log_report_to_wandb(rep, figures, sweep_dir / "figures", overrides or rep.plan.get("overrides", []))
        except Exception as err:  # the report on disk matters more than its copy on W&B
            log.warning("could not log the report to W&B: %s", err)
    return sweep_dir / "report.md"


def main(argv: list[str]) -> int:
    settings, overrides = parse_args(argv)
    if settings.resume:
        if settings.report_only:
            raise UserError("resume= continues a sweep and then reports; report_only=true with dir= only reports.")
        sweep_dir = Path(str(settings.resume))
        returncode = resume_training(settings, [override_key(a) for a in argv if override_key(a) in SWEEP_KEYS],
                                     overrides, sweep_dir)
    elif settings.report_only:
        if not settings.dir:
            raise UserError("report_only=true needs dir=<sweep folder> (e.g. outputs/sweeps/<name>).")
        sweep_dir = Path(settings.dir)
        if not (sweep_dir / "runs").is_dir() and not (sweep_dir / PLAN_FILE).is_file():
            raise UserError(f"{sweep_dir} is not a sweep folder (no runs/ or {PLAN_FILE}); point dir= at "
                            "outputs/sweeps/<name>.")
        returncode = 0
    else:
        sweep_dir = sweep_folder(settings, overrides)
        returncode = run_training(settings, overrides, sweep_dir)["returncode"]
    if settings.robustness:
        which = settings.robustness
        score_robustness(sweep_dir, True if which is True else list(which))
    fresh = not (settings.report_only or settings.resume)  # else the overrides are the plan's own
    report = write_report(sweep_dir, overrides if fresh else None, bool(settings.wandb_report))
    rep_json = json.loads((sweep_dir / "report.json").read_text())
    unfinished = [r for r in rep_json["runs"] if r["status"] != "completed"] + rep_json["missing"]
    print(f"[sweep] report: {report}" + (f" ({len(unfinished)} job(s) did not finish; listed there)" if unfinished else ""))
    for hint in tracker_hints(sweep_dir, overrides if fresh else None):
        print(f"[sweep] {hint}")
    return 1 if (unfinished or returncode) else 0
