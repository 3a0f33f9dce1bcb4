"""Sweep progress on the terminal: which job of how many, elapsed time and an estimate of what is left.

A Hydra callback, so it works with any launcher; it counts finished jobs from the run folders on
disk, which every launcher (local, joblib, submitit) shares.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bloodcls.common.rundir import RESULTS_FILE, STATUS_FILE, job_folders
from bloodcls.runs.status import clock


def finished_jobs(sweep_dir: str | Path) -> int:
    """Job folders holding a results.json or a final status.json."""
    done = 0
    for job in job_folders(sweep_dir):
        if (job / RESULTS_FILE).is_file():
            done += 1
        elif (job / STATUS_FILE).is_file() and '"running"' not in (job / STATUS_FILE).read_text():
            done += 1
    return done


class SweepProgress(Callback):
    def __init__(self, total: int, started: float | None = None) -> None:
        self.total = int(total)
        self.started = float(started) if started else time.time()

    def _line(self, config: DictConfig, what: str) -> str:
        sweep_dir = config.hydra.sweep.dir
        done = finished_jobs(sweep_dir)
        elapsed = time.time() - self.started
        eta = elapsed / done * (self.total - done) if done else None
        left = f", about {clock(eta)} left" if eta is not None else ""
        return f"[sweep] {what} - {done}/{self.total} done, {clock(elapsed)} elapsed{left}"

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        num = config.hydra.job.num
        print(self._line(config, f"job {num + 1}/{self.total} ({config.get('run_name')}) starting"), flush=True)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        status = getattr(getattr(job_return, "status", None), "name", "?").lower()
        num = config.hydra.job.num
        print(self._line(config, f"job {num + 1}/{self.total} ({config.get('run_name')}) {status}"), flush=True)
