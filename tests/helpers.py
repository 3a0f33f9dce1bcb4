"""Compose the project's Hydra config in-process, as `train.py` would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from bloodcls.config import CONFIG_DIR, register_resolvers

REPO = Path(__file__).resolve().parent.parent


def compose_train(overrides: list[str], output_dir: Path | None = None, hydra: bool = False) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=hydra)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def run_cli(script: str, *args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def no_data(tmp_path: Path) -> list[str]:
    """Overrides pointing the data at an empty folder with downloads off: a check that must come before the data
    file is looked for fails the test (with the missing-data error) if it does not, and no test reads ~/.medmnist."""
    return [f"data.root={tmp_path / 'no-data'}", "data.download=false"]
