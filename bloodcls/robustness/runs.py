"""The shift suite's inputs: a run's network, its results, and a split of the data file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bloodcls.runs.rundir import RESULTS_FILE, read_json


def load_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a training checkpoint (weights only, never unpickled code) and its hyper-parameters."""
    from bloodcls.inference.checkpoint import load_trained

    trained = load_trained(checkpoint)
    return trained.net.eval(), dict(trained.hparams)


def _run_results(run: Path) -> dict[str, Any]:
    return read_json(run / RESULTS_FILE) or {}


def load_split(root: str | Path | None, img_size: int, split: str = "test",
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """One split of the BloodMNIST file at ``img_size`` as uint8 images and int64 labels, and its path."""
    from bloodcls.data import default_root, ensure_file, load_npz

    path = ensure_file(root or default_root(), img_size, download)
    images, labels = load_npz(path, img_size)[split]
    return torch.from_numpy(images), torch.from_numpy(labels), path
