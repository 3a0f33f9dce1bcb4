"""``bloodcls train``: train one of the study's models; ``python train.py`` at the top of the checkout is the same.

    bloodcls train model=inception                                  # any override of conf/train.yaml
    bloodcls train experiment=skip recipe=strong
    bloodcls train -m model=baseline,unet,inception,skip,hybrid     # Hydra multirun
    bloodcls train resume=outputs/runs/<date>/<time>_<name>_<id>    # continue an interrupted run
    bloodcls train data=folder data.path=~/my_lab init_from=<run>/checkpoints/best.ckpt   # fine-tune
    bloodcls train --cfg job                                        # print the composed config
    bloodcls train --help                                           # Hydra's help: the config groups

Arguments only: Hydra reads them (its overrides, unchanged); the work is :func:`bloodcls.training.train`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bloodcls.config import CONFIG_DIR, register_resolvers, route_library_logs
from bloodcls.errors import report_user_errors
from bloodcls.runs.init_from import init_from_argv
from bloodcls.runs.resume import resume_argv

register_resolvers()  # also in a launcher's worker process, which imports this module to run a job


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def train(cfg: DictConfig) -> float | None:
    """One Hydra job: train and score one model; returns the value a sweeper optimises."""
    from bloodcls.training import train as fit

    route_library_logs()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = cfg.get("group") or (Path(hc.sweep.dir).name if multirun else cfg.experiment_name)
    results = fit(cfg, output_dir=hc.runtime.output_dir, group=group)
    # Best-epoch validation macro-F1 by default; never a test score.
    return results["val"]["best"].get(cfg.get("optimized_metric") or "val/f1")


def _prepared_argv(argv: list[str]) -> list[str]:
    return init_from_argv(resume_argv(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Hydra reads ``sys.argv``: put ``argv`` there, after replaying a ``resume=`` run's own overrides (so the
    same run is rebuilt) and adding an ``init_from=`` checkpoint's model and input size."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.argv = report_user_errors(_prepared_argv)([sys.argv[0], *argv])
    train()
    return 0
