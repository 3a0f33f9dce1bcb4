"""Classify your own blood-cell images with a trained checkpoint.

    python -m bloodcls.predict <checkpoint> <image or folder>... [--json] [--tta]
    bloodcls-predict outputs/runs/.../checkpoints/best.ckpt cell.jpg more_cells/

Each image is prepared like the dataset (RGB, centre square, bicubic resize to the checkpoint's
input size) and gets its class, that class's probability and the top three. ``--tta`` averages
the probabilities over the eight rotations and flips. A file that cannot be read is reported and
the others still run; the exit status is 1 if any failed (2 for a bad checkpoint or arguments).
The checkpoint is loaded weights-only (:mod:`bloodcls.inference.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcls.common.tensors import to_float_images
from bloodcls.common.tta import tta_proba
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.inference.images import (
    MAX_PIXELS,
    ImageError,
    expand_inputs,
    load_image,
)

TOP_K = 3


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x S x S x 3 uint8 -> N x 3 x S x S float in [0, 1]: what the networks take."""
    arr = np.ascontiguousarray(images)
    if not arr.flags.writeable:  # Pillow's arrays are read-only; torch.from_numpy warns on those
        arr = arr.copy()
    return to_float_images(torch.from_numpy(arr))


@torch.inference_mode()
def predict_proba(net: torch.nn.Module, images: np.ndarray, tta: bool = False, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N x classes) for N x S x S x 3 uint8 images, as the network saw data in training."""
    net.eval()
    out = []
    for lo in range(0, len(images), batch_size):
        x = to_tensor(images[lo:lo + batch_size])
        probs = tta_proba(net, x) if tta else net(x).float().softmax(dim=1)
        out.append(probs)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def classify(model: TrainedModel, paths: list[str | Path], tta: bool = False,
             max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """Read, prepare and classify every image; unreadable files go to ``errors`` instead of stopping the rest."""
    files, skipped, empty = expand_inputs(paths)
    errors = [{"path": str(p), "error": why} for p, why in empty]
    ok_paths, arrays = [], []
    for path in files:
        try:
            arrays.append(load_image(path, model.img_size, max_pixels=max_pixels))
            ok_paths.append(path)
        except ImageError as err:
            errors.append({"path": str(path), "error": str(err)})
    probs = predict_proba(model.net, np.stack(arrays), tta=tta) if arrays else np.zeros((0, len(model.class_names)))
    results = []
    for path, p in zip(ok_paths, probs, strict=True):
        order = np.argsort(-p)
        results.append({
            "path": str(path),
            "class": model.class_names[order[0]],
            "probability": float(p[order[0]]),
            "top": [{"class": model.class_names[i], "probability": float(p[i])} for i in order[:TOP_K]],
            "probabilities": {c: float(v) for c, v in zip(model.class_names, p, strict=True)},
        })
    return {
        "checkpoint": str(model.path),
        "model": model.name,
        "img_size": model.img_size,
        "tta": tta,
        "results": results,
        "errors": errors,
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
    }


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def format_text(report: dict[str, Any]) -> str:
    lines = []
    for r in report["results"]:
        top = ", ".join(f"{t['class']} {_pct(t['probability'])}" for t in r["top"])
        lines.append(f"{r['path']}: {r['class']} ({_pct(r['probability'])})   top {len(r['top'])}: {top}")
    return "\n".join(lines)
