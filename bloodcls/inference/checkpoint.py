"""A trained network rebuilt from a checkpoint file, for prediction, export, the demo and the shift suite.

The file is read by :func:`bloodcls.common.checkpoints.read_checkpoint` (weights-only, never unpickled code): a
.ckpt, an exported .safetensors or a model bundle folder; a run folder stands for its checkpoint. Here the
network its hyper-parameters name is built and its weights loaded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bloodcls.common.bundle import is_bundle
from bloodcls.common.checkpoints import (
    ADAPTED_KEY,
    CHECKPOINT_HINT,
    CheckpointError,
    network_state,
    read_checkpoint,
)
from bloodcls.common.rundir import RunPaths, run_checkpoint
from bloodcls.models import build_from_hparams
from bloodcls.uncertainty.state import CHECKPOINT_KEY, TrustState

REQUIRED_HPARAMS = ("name", "img_size", "num_classes")


@dataclass
class TrainedModel:
    """A rebuilt network in eval mode plus what a user of it needs to know."""

    net: nn.Module
    name: str
    img_size: int
    class_names: list[str]
    hparams: dict[str, Any]
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # epoch, global_step, Lightning version
    # temperature, abstention threshold and out-of-distribution gate; None for checkpoints written before them
    trust: TrustState | None = None
    # what `bloodcls adapt` recomputed the BatchNorm statistics on (bloodcls.inference.adaptation); None if never
    adapted_on: dict[str, Any] | None = None


def load_trained(path: str | Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the network named by the checkpoint's hyper-parameters and load its weights (eval mode). ``path``:
    a .ckpt or .safetensors file, a model bundle folder, or a run folder (its best.ckpt, else last.ckpt)."""
    path = model_file(path)
    contents = read_checkpoint(path, map_location)
    hparams = contents.get("hyper_parameters")
    if not isinstance(hparams, dict) or any(k not in hparams for k in REQUIRED_HPARAMS):
        raise CheckpointError(
            f"{path} is a PyTorch file but not a bloodcls checkpoint: it has no hyper-parameters naming the model, "
            f"input size and classes. {CHECKPOINT_HINT}"
        )
    net = build_from_hparams(hparams, weights=False)
    state = network_state(contents)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path} does not fit the {hparams['name']} model at {hparams['img_size']} px that its hyper-parameters "
            f"name ({str(err).splitlines()[0]}). The file was changed or written by other code. {CHECKPOINT_HINT}"
        ) from None
    net.eval()
    class_names = [str(c) for c in hparams.get("class_names") or []]
    if len(class_names) != int(hparams["num_classes"]):
        class_names = [f"class_{i}" for i in range(int(hparams["num_classes"]))]
    info = {k: contents[k] for k in ("epoch", "global_step", "pytorch-lightning_version", "format") if k in contents}
    adapted = contents.get(ADAPTED_KEY) if isinstance(contents.get(ADAPTED_KEY), dict) else None
    trust = _trust(contents, path)
    if adapted and trust is not None and not recalibrated_since(trust, adapted):
        # adapt removes the sets; files it wrote before 2026-12-08 kept the TTA ones, fitted on the old statistics
        trust = replace(trust, conformal=None, conformal_tta=None)
    return TrainedModel(net=net, name=str(hparams["name"]), img_size=int(hparams["img_size"]), class_names=class_names,
                        hparams=dict(hparams), path=path, info=info, trust=trust, adapted_on=adapted)


def recalibrated_since(trust: TrustState | None, adapted_on: dict[str, Any]) -> bool:
    """Whether ``bloodcls calibrate`` refitted the trust state after ``bloodcls adapt`` (it writes a new
    ``calibrated_on``; adapt records the one it found)."""
    return trust is not None and trust.calibrated_on != (adapted_on.get("trust") or {}).get("calibrated_on_before")


def model_file(path: str | Path) -> Path:
    """The file or bundle a path names: a run folder stands for its checkpoint (best.ckpt, else last.ckpt); a
    bundle folder, a file, or anything else (refused when read) for itself."""
    path = Path(path).expanduser()
    if not path.is_dir() or is_bundle(path):
        return path
    found = run_checkpoint(path)
    if found is None and RunPaths(path).checkpoints.is_dir():
        raise CheckpointError(f"{path} is a run folder without a checkpoint (checkpoints/best.ckpt or last.ckpt): the "
                              "run did not get as far as saving one. Pass a run folder that did, a .ckpt file or a "
                              "model bundle folder.")
    return found or path


def _trust(contents: dict[str, Any], path: Path) -> TrustState | None:
    try:
        return TrustState.from_dict(contents.get(CHECKPOINT_KEY))
    except (TypeError, ValueError):
        warnings.warn(f"{path}: its trust state is malformed and is ignored (calibration and the gate are "
                      "unavailable); refit it with `bloodcls trust <run folder> --refit`.", stacklevel=2)
        return None
