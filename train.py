"""Train one of the study's models: `python train.py model=inception`, `python train.py experiment=skip`,
or sweep with Hydra multirun: `python train.py -m model=baseline,unet,inception,skip,hybrid`."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bloodcls.config import CONFIG_DIR, register_resolvers, route_library_logs
from bloodcls.errors import report_user_errors
from bloodcls.runs.resume import resume_argv

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    from bloodcls.training import train

    route_library_logs()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = cfg.get("group") or (Path(hc.sweep.dir).name if multirun else cfg.experiment_name)
    results = train(cfg, output_dir=hc.runtime.output_dir, group=group)
    # The value a sweeper optimises (best-epoch validation macro-F1 by default; never a test score).
    return results["val"]["best"].get(cfg.get("optimized_metric") or "val/f1")


if __name__ == "__main__":
    # resume=<run folder>: replay that run's own overrides first, so the same run is rebuilt.
    sys.argv = report_user_errors(resume_argv)(sys.argv)
    main()
