"""Shared fixtures: synthetic data roots in the official layout and composed Hydra configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bloodcls.synthetic import write_synthetic_npz

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never talk to the W&B servers and never prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """28 and 64 px learnable synthetic BloodMNIST files (24/6/10 images per class)."""
    root = tmp_path_factory.mktemp("bloodmnist")
    write_synthetic_npz(root, 28)
    write_synthetic_npz(root, 64)
    return root


# Overrides that make a synthetic run learn in a few CPU seconds.
FAST = [
    "data.batch_size=16",
    "model.optimizer.lr=3e-3",
    "model.bn_momentum=0.5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
]


# A deterministic CPU run that exercises every piece of restorable state: augmentation and dropout
# (reseeded per epoch), shuffling, Adam, EarlyStopping, and a plateau scheduler that halves the LR
# after every epoch (threshold 10: no epoch counts as an improvement), so a lost scheduler step shows.
DETERMINISTIC_RUN = ["model=unet", "data.img_size=28", "data.augment=true", "trainer.max_epochs=2", "logger=csv",
                     "trainer.deterministic=true", "model.scheduler.patience=0", "+model.scheduler.threshold=10", *FAST]


@pytest.fixture(scope="session")
def reference_run(synthetic_root, tmp_path_factory):
    """(run folder, results) of one uninterrupted DETERMINISTIC_RUN; tests must not write into its folder."""
    from bloodcls.training import train
    from tests.helpers import compose_train

    out = tmp_path_factory.mktemp("reference")
    cfg = compose_train([*DETERMINISTIC_RUN, f"data.root={synthetic_root}"], output_dir=out)
    return out, train(cfg, output_dir=out)


@pytest.fixture(scope="session")
def trained_checkpoint(reference_run) -> Path:
    """best.ckpt of the reference run: a 2-epoch U-Net at 28 px (predict, export and checkpoint tests)."""
    return reference_run[0] / "checkpoints" / "best.ckpt"
