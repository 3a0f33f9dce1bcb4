"""The sweep's own settings (conf/sweep.yaml) and the ``train.py`` multirun they make: which experiments, seeds and
folds, how many jobs side by side and with how many threads each, checked before any job starts."""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import time
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from bloodcls.common.files import REPO
from bloodcls.common.sweepdir import RUNS_DIR, fold_list
from bloodcls.config import CONFIG_DIR, compose_config, override_key, override_value
from bloodcls.errors import UserError
from bloodcls.sweeps.folds import all_folds, check_folder_data, check_folds, fold_overrides
from bloodcls.sweeps.published import check_matches_footing
from bloodcls.training.compute import usable_cpus

SWEEP_KEYS = ("experiments", "seeds", "name", "dir", "report_only", "robustness", "wandb_report", "jobs", "resume",
              "folds", "published")
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
        return min(CPU_JOBS, total, usable_cpus()) if on_cpu(overrides) else 1
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"jobs={jobs!r}: give a whole number of jobs to run side by side (>= 1), or jobs=auto.")
    return min(jobs, total)


def launcher_overrides(settings: DictConfig, overrides: list[str]) -> list[str]:
    """The joblib launcher for concurrent jobs, unless the user picked a launcher (hydra/launcher=...)."""
    jobs = concurrent_jobs(settings, overrides)
    if jobs <= 1 or override_value(overrides, "hydra/launcher") is not None:
        return []
    threads = []  # CPU jobs side by side share the cores instead of each taking all of them
    if on_cpu(overrides) and override_value(overrides, "threads") is None:
        threads = [f"threads={max(1, usable_cpus() // jobs)}"]
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", *threads]


def on_cpu(overrides: list[str]) -> bool:
    """Whether the jobs train on a CPU: no trainer=gpu/ddp, and a CPU accelerator or no GPU here."""
    if override_value(overrides, "trainer") in ("gpu", "ddp"):
        return False
    accelerator = override_value(overrides, "trainer.accelerator") or "auto"
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def check_job_configs(settings: DictConfig, overrides: list[str]) -> None:
    """Compose every experiment's job config and check its values (bloodcls.schema), and against the footing
    of ``published=``, before any job starts, so a bad override stops the sweep at once instead of failing every
    job."""
    from bloodcls.schema import check_config

    job_overrides = [o for o in overrides if not override_key(o).startswith("hydra")]
    folds = check_folds(settings.get("folds"), job_overrides)
    cfgs = []
    for exp in settings.experiments:
        cfg = _compose_job(exp, [f"seed={settings.seeds[0]}", *job_overrides])
        if folds:  # on the data config without folds first: data.folds= does not compose on BloodMNIST's
            check_folder_data(folds, cfg)
            cfg = _compose_job(exp, [f"seed={settings.seeds[0]}", *job_overrides, *fold_overrides(folds, 0)])
        check_config(cfg)
        cfgs.append(cfg)
    if settings.get("published"):
        check_matches_footing(settings.published, cfgs, "cpu" if on_cpu(overrides) else "gpu")


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
        f"hydra.sweep.dir={sweep_dir / RUNS_DIR}",
        f"group={sweep_dir.name}",
        "+hydra.callbacks.progress._target_=bloodcls.sweeps.progress.SweepProgress",
        f"+hydra.callbacks.progress.total={total}",
        f"+hydra.callbacks.progress.started={time.time():.3f}",
        *launcher_overrides(settings, overrides),
        *overrides,
    ]
