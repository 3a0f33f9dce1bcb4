"""Checkpoint files read without ever running code stored in them, and written atomically.

Lightning checkpoints are pickles, and unpickling can call any function the file names. Here they
are read with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain containers
and refuses everything else. bloodcls checkpoints need no allow-list: the LightningModule keeps
only plain values in its hyper-parameters, and Lightning's own entries (loop progress, callback
and scheduler states) are dicts, lists, numbers, strings and tensors. ``.safetensors`` files written
by ``bloodcls export --format safetensors`` hold the same weights and hyper-parameters
with no pickle at all. Every way a checkpoint comes in reads it here: ``resume=``, ``ckpt_path=`` (training
and ``train=false`` scoring), prediction, export, the demo and the shift suite. A shared leaf: it knows
files, not models (:mod:`bloodcls.inference.checkpoint` rebuilds the network).
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from bloodcls.common.files import atomic_write
from bloodcls.errors import UserError

NET_PREFIX = "net."  # BloodCellClassifier keeps the network in self.net
SAFETENSORS_KEY = "bloodcls"  # metadata entry holding the hyper-parameters as JSON
TRUST_KEY = "trust"  # checkpoint entry of the fitted trust state (bloodcls.uncertainty.state), plain values
SAFETENSORS_TRUST = "bloodcls_trust"  # safetensors metadata entry: the trust state's numbers (its tensors: "trust.*")
TRUST_PREFIX = "trust."
ADAPTED_KEY = "adapted_on"  # checkpoint entry: what `bloodcls adapt` recomputed the BatchNorm statistics on (plain values)


class UnsafeCheckpointError(UserError):
    """The checkpoint asks to run code when loaded; it is refused."""


class CheckpointError(UserError):
    """The file is missing, unreadable, or not a bloodcls checkpoint."""


def _unsafe_message(path: Path, err: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = (f"unpickling it would call `{found.group(1)}`, i.e. run code named in the file" if found else
            "it holds pickle instructions beyond tensors and plain values, the kind that can run code when loaded")
    return (
        f"Refusing to load {path}: {what}. bloodcls only loads plain weights (torch.load(weights_only=True)), "
        "and checkpoints written by bloodcls never need more. If the file is yours, load it where it was made "
        "and save only its state_dict; if someone sent it to you, do not open it with other tools either."
    )


def _is_pickle(path: Path, err: Exception) -> bool:
    """A refused global, or a pickle stream the weights-only unpickler stopped in (not random bytes)."""
    if "GLOBAL" in str(err):
        return True
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head[:1] == b"\x80" or head == b"PK"  # pickle protocol opcode, or a torch zip archive


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only; every problem is a one-paragraph UserError."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {path} {where}. Pass a .ckpt file, e.g. <run folder>/checkpoints/best.ckpt.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the refusal below says enough
            contents = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) and _is_pickle(path, err):
            raise UnsafeCheckpointError(_unsafe_message(path, err)) from None
        raise CheckpointError(_unreadable(path, err)) from None
    except Exception as err:  # truncated zip, empty file, not a torch file at all, ...
        raise CheckpointError(_unreadable(path, err)) from None
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path} holds a {type(contents).__name__}, not a checkpoint dictionary. {CHECKPOINT_HINT}")
    return contents


CHECKPOINT_HINT = "Use a .ckpt file from a bloodcls run folder (checkpoints/best.ckpt or last.ckpt)."


def _unreadable(path: Path, err: Exception) -> str:
    detail = str(err).split(".")[0].strip() or type(err).__name__
    size = path.stat().st_size
    state = "is empty" if size == 0 else f"is not a readable PyTorch checkpoint ({type(err).__name__}: {detail})"
    return f"{path} {state}: it may be truncated (an interrupted copy or download) or another kind of file. {CHECKPOINT_HINT}"


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(_unreadable(path, err)) from None
    try:
        hparams = json.loads(metadata[SAFETENSORS_KEY])
    except (KeyError, ValueError):
        raise CheckpointError(
            f"{path} has no bloodcls metadata (model name, input size, class names), so the network cannot be "
            "rebuilt. Export it with `bloodcls export <checkpoint> --format safetensors`."
        ) from None
    contents = {"state_dict": {NET_PREFIX + k: v for k, v in state_dict.items() if not k.startswith(TRUST_PREFIX)},
                "hyper_parameters": hparams, "format": "safetensors"}
    if SAFETENSORS_TRUST in metadata:
        trust = {k[len(TRUST_PREFIX):]: v for k, v in state_dict.items() if k.startswith(TRUST_PREFIX)}
        contents[TRUST_KEY] = {**json.loads(metadata[SAFETENSORS_TRUST]), **trust}
    return contents


def network_state(contents: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's own weights (the ``net.`` entries of the LightningModule's state_dict)."""
    state = contents.get("state_dict") or {}
    return {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}


def write_checkpoint(path: str | Path, contents: dict[str, Any]) -> None:
    """``torch.save`` atomically: a killed job leaves the old checkpoint, never half a new one."""
    atomic_write(Path(path), lambda tmp: torch.save(contents, tmp))
