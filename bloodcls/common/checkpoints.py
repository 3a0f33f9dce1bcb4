"""Checkpoint files read without ever running code stored in them, and written atomically.

Lightning checkpoints are pickles, and unpickling can call any function the file names. Here they
are read with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain containers
and refuses everything else. bloodcls checkpoints need no allow-list: the LightningModule keeps
only plain values in its hyper-parameters, and Lightning's own entries (loop progress, callback
and scheduler states) are dicts, lists, numbers, strings and tensors. ``.safetensors`` files written
by ``bloodcls export --format safetensors`` (:func:`write_safetensors`) hold the same weights, hyper-parameters,
trust state and adaptation record with no pickle at all, and a model bundle folder (``bloodcls bundle``:
:mod:`bloodcls.common.bundle`) is that file with its description. Every way a checkpoint comes in reads it
here: ``resume=``, ``ckpt_path=`` (training and ``train=false`` scoring), ``init_from=``, prediction, evaluation,
calibration, adaptation, export, the demo and the shift suite. A shared leaf: it knows files, not models
(:mod:`bloodcls.inference.checkpoint` rebuilds the network).
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from bloodcls.common.bundle import (
    CONFIG_FILE,
    LIBRARY,
    SAFETENSORS_ADAPTED,
    SAFETENSORS_KEY,
    SAFETENSORS_TRUST,
    TRUST_PREFIX,
    WEIGHTS_FILE,
    disagreement,
    is_bundle,
)
from bloodcls.common.files import atomic_write
from bloodcls.errors import UserError

NET_PREFIX = "net."  # BloodCellClassifier keeps the network in self.net
TRUST_KEY = "trust"  # checkpoint entry of the fitted trust state (bloodcls.uncertainty.state), plain values
BUNDLE_FORMAT = "bundle"  # contents["format"] of a bundle folder ("safetensors" for the file alone)
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
    if is_bundle(path):
        return _read_bundle(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder but not a model bundle (`bloodcls bundle` writes {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE} into one). Pass a bundle folder, a run folder where a command takes "
                              "one, or a .ckpt file, e.g. <run folder>/checkpoints/best.ckpt.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Pass a .ckpt file, e.g. "
                              "<run folder>/checkpoints/best.ckpt, or a model bundle folder.")
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
    if SAFETENSORS_ADAPTED in metadata:
        contents[ADAPTED_KEY] = json.loads(metadata[SAFETENSORS_ADAPTED])
    return contents


def write_safetensors(path: str | Path, weights: dict[str, torch.Tensor], hparams: dict[str, Any],
                      trust: dict[str, Any] | None = None, adapted_on: dict[str, Any] | None = None) -> None:
    """The one portable model file (``export --format safetensors`` and a bundle's model.safetensors): the network's
    weights, its hyper-parameters, the trust state (tensors as ``trust.*``, numbers and strings as JSON metadata)
    and the adaptation record; no pickle. :func:`read_checkpoint` reads it back."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    metadata = {SAFETENSORS_KEY: json.dumps(hparams)}
    if trust is not None:
        state.update({TRUST_PREFIX + k: v.detach().cpu().contiguous() for k, v in trust.items()
                      if isinstance(v, torch.Tensor)})
        metadata[SAFETENSORS_TRUST] = json.dumps({k: v for k, v in trust.items() if not isinstance(v, torch.Tensor)})
    if adapted_on is not None:
        metadata[SAFETENSORS_ADAPTED] = json.dumps(adapted_on)
    save_file(state, str(path), metadata=metadata)


def read_bundle_config(folder: Path) -> dict[str, Any]:
    """A bundle's config.json, checked to be bloodcls's (one paragraph where it is not)."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({type(err).__name__}: {err}); the bundle is damaged. "
                              "Write it again with `bloodcls bundle <run folder or checkpoint> <folder>`.") from None
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        raise CheckpointError(f"{folder} holds {CONFIG_FILE} and {WEIGHTS_FILE} but is not a bloodcls model bundle "
                              f"(its {CONFIG_FILE} has no library_name \"{LIBRARY}\"); it was written by other code. "
                              "Pass a folder written by `bloodcls bundle`, or a .ckpt file.")
    return config


def _read_bundle(folder: Path) -> dict[str, Any]:
    """A bundle folder as checkpoint contents: its weights file, after checking config.json describes it."""
    config = read_bundle_config(folder)
    contents = _read_safetensors(folder / WEIGHTS_FILE)
    differ = disagreement(config, contents["hyper_parameters"], contents.get(TRUST_KEY), contents.get(ADAPTED_KEY))
    if differ:
        raise CheckpointError(f"{folder}: {CONFIG_FILE} and {WEIGHTS_FILE} disagree about {differ}, so the bundle was "
                              "edited by hand or put together from two models, and neither can be trusted. Write it "
                              "again from the model with `bloodcls bundle <model> <folder> --force`.")
    return {**contents, "format": BUNDLE_FORMAT}


def network_state(contents: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's own weights (the ``net.`` entries of the LightningModule's state_dict)."""
    state = contents.get("state_dict") or {}
    return {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}


def write_checkpoint(path: str | Path, contents: dict[str, Any]) -> None:
    """``torch.save`` atomically: a killed job leaves the old checkpoint, never half a new one."""
    atomic_write(Path(path), lambda tmp: torch.save(contents, tmp))


def check_new_checkpoint(source: str | Path, out: str | Path, made: str) -> tuple[Path, Path]:
    """(source, out) as paths, refusing an ``out`` that is neither a new ``.ckpt`` file nor a folder (no suffix, or
    one that exists) for a model bundle: the commands that write a changed copy of a model (``adapt``,
    ``calibrate``) keep the original. ``made`` names the copy ("adapted model")."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if out.suffix != ".ckpt" and out.suffix and not out.is_dir():
        raise UserError(f"--out {out}: give a .ckpt path for the {made}, or a folder (a name without a suffix) to "
                        "write it as a model bundle (export it to safetensors or ONNX afterwards with `bloodcls "
                        "export`).")
    if out.exists() and out.resolve() == source.resolve():
        raise UserError(f"--out {out} is the input model itself; write to a new file or folder so the original is "
                        f"kept beside the {made}.")
    return source, out
