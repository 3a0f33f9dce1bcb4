"""The portable model: the names inside its safetensors file, and a model bundle folder with its config.json.

One portable format: ``bloodcls export --format safetensors`` and a bundle's ``model.safetensors`` are one file,
written by :func:`bloodcls.common.checkpoints.write_safetensors`: the weights, the hyper-parameters, the trust
state (numbers as JSON metadata, matrices as ``trust.*`` tensors) and the adaptation record; no pickle. A bundle
(``bloodcls bundle``, the Hugging Face Hub's layout) is a folder that IS the model:

    model.safetensors   that file
    config.json         what the model is, in plain JSON for readers without bloodcls (:func:`describe`), and the
                        records of the run it came from
    README.md           the model card, generated from config.json (:mod:`bloodcls.inference.model_card`)
    model.onnx          optional, checked against PyTorch (``--onnx``)

config.json's description is generated from model.safetensors; reading a bundle checks that they still agree
(:func:`disagreement`), so a hand-edited or half-copied bundle is refused instead of half-believed. Light at
import (``resume=`` asks :func:`is_bundle` before torch is imported).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub.constants import CONFIG_NAME, REPOCARD_NAME, SAFETENSORS_SINGLE_FILE

# names inside the safetensors file
SAFETENSORS_KEY = "bloodcls"  # metadata entry holding the hyper-parameters as JSON
SAFETENSORS_TRUST = "bloodcls_trust"  # metadata entry: the trust state's numbers (its tensors: "trust.*")
SAFETENSORS_ADAPTED = "bloodcls_adapted"  # metadata entry: what `bloodcls adapt` adapted the model to
TRUST_PREFIX = "trust."

# a bundle folder's files: the Hub's names, so huggingface_hub's from_pretrained and push_to_hub find them
CONFIG_FILE = CONFIG_NAME  # config.json
WEIGHTS_FILE = SAFETENSORS_SINGLE_FILE  # model.safetensors
CARD_FILE = REPOCARD_NAME  # README.md
ONNX_FILE = "model.onnx"
LIBRARY = "bloodcls"  # config.json's library_name: a config.json from another library is not a bundle
FORMAT = 1  # config.json's bundle_format
DESCRIBED = ("architecture", "class_names", "input", "output", "trust", "adapted_on")  # generated from the weights file


def is_bundle(path: str | Path) -> bool:
    """A folder holding config.json and model.safetensors (whether bloodcls wrote them is checked on reading)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def describe(hparams: dict[str, Any], trust: dict[str, Any] | None, adapted_on: dict[str, Any] | None) -> dict[str, Any]:
    """config.json's description of a model from its file's contents: the architecture and its arguments, class
    names, what an image goes through before the network (as predict prepares it), the output, the trust state as
    plain values (its matrices named as tensors of model.safetensors) and the adaptation record."""
    from bloodcls.common.images import (
        READ_AS,  # Pillow and torch: not for is_bundle (train.py reads argv first)
    )
    from bloodcls.common.tensors import PIXEL_SCALE

    size, names = int(hparams["img_size"]), [str(c) for c in hparams.get("class_names") or []]
    return {
        "architecture": {"name": hparams["name"],
                         "arguments": {k: v for k, v in hparams.items() if k not in ("name", "class_names")}},
        "class_names": names,
        "input": {"size": size, **READ_AS, "scale": f"pixel values divided by {PIXEL_SCALE} (floats in [0, 1])",
                  "tensor": f"N x 3 x {size} x {size} float32, RGB", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                  "normalisation": "none outside the network (a timm network with ImageNet weights normalises "
                                   "inside it; its mean and std are buffers in the weights file)"},
        "output": {"name": "logits", "shape": f"N x {len(names) or hparams.get('num_classes')}",
                   "probabilities": "softmax(logits / trust.temperature), or softmax(logits) without a trust state"},
        "trust": None if trust is None else {k: _plain(k, v) for k, v in trust.items()},
        "adapted_on": adapted_on,
    }


def _plain(key: str, value: Any) -> Any:
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor: stored in the weights file
        return {"tensor": TRUST_PREFIX + key, "file": WEIGHTS_FILE, "shape": list(value.shape),
                "dtype": str(value.dtype).removeprefix("torch.")}
    return value


def as_json(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def disagreement(config: dict[str, Any], hparams: dict[str, Any], trust: dict[str, Any] | None,
                 adapted_on: dict[str, Any] | None) -> str | None:
    """Which of config.json's described parts differ from what the weights file holds (None: they agree)."""
    expected = as_json(describe(hparams, trust, adapted_on))
    return ", ".join(key for key in DESCRIBED if config.get(key) != expected[key]) or None
