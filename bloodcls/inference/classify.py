"""Classify your own blood-cell images with a trained checkpoint.

    bloodcls predict <checkpoint> <image or folder>... [--json] [--tta]

Each image is prepared like the dataset (RGB, centre square, bicubic resize to the checkpoint's
input size) and judged by :func:`bloodcls.uncertainty.judgement.judge`, the one judgement predict, the
demo, evaluate and calibrate share: its class, that class's probability and the top three. ``--tta``
averages the probabilities over the eight rotations and flips. Where the checkpoint carries a trust state
(:mod:`bloodcls.uncertainty`), probabilities are temperature-calibrated, a prediction below the review
threshold is marked ``abstain`` ("uncertain: have a person review it"), an image the out-of-distribution
gate rejects is marked ``in_distribution: false`` ("does not look like a BloodMNIST cell image"; its class
stays in the JSON, its prediction set does not), and the others get a conformal prediction set (from the
TTA probabilities with ``--tta``, so it holds the class shown). A file that cannot be read is reported and
the others still run; the exit status is 1 if any failed (2 for a bad checkpoint or arguments).
The checkpoint is loaded weights-only (:mod:`bloodcls.inference.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcls.common.tensors import to_float_images
from bloodcls.inference.adaptation import trust_notes
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.inference.images import (
    MAX_PIXELS,
    ImageError,
    expand_inputs,
    load_image,
)
from bloodcls.uncertainty.judgement import NO_TRUST, Judgement, calibrated_proba, judge
from bloodcls.uncertainty.outputs import network_outputs

NOT_A_CELL = "does not look like a BloodMNIST cell image"
REVIEW = "uncertain: have a person review it"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x S x S x 3 uint8 -> N x 3 x S x S float in [0, 1]: what the networks take."""
    arr = np.ascontiguousarray(images)
    if not arr.flags.writeable:  # Pillow's arrays are read-only; torch.from_numpy warns on those
        arr = arr.copy()
    return to_float_images(torch.from_numpy(arr))


def predict_proba(net: torch.nn.Module, images: np.ndarray, tta: bool = False, batch_size: int = 64) -> np.ndarray:
    """Uncalibrated class probabilities (N x classes) for N x S x S x 3 uint8 images, as the network saw data in
    training (the mean over the 8 views with ``tta``)."""
    if not len(images):
        return np.zeros((0, 0), dtype=np.float32)
    return calibrated_proba(network_outputs(net, images, tta=tta, batch_size=batch_size).for_judgement(tta)).numpy()


def judge_images(model: TrainedModel, images: np.ndarray, tta: bool = False, batch_size: int = 64) -> Judgement:
    """The judgement of N x S x S x 3 uint8 images prepared for ``model`` (:func:`load_image`): one pass over the
    images (8 views each with ``tta``), the gate on the unrotated view."""
    if model.trust is not None:
        model.trust.review_threshold(tta)  # a state that cannot judge TTA refuses before the network runs
    out = network_outputs(model.net, images, tta=tta, batch_size=batch_size)
    return judge(out.for_judgement(tta), out.features, model.trust)


def _trust_summary(model: TrainedModel, tta: bool) -> dict[str, Any]:
    """The state's values; ``abstain_below`` is the review threshold in use (the TTA one with ``--tta``)."""
    t = model.trust
    if t is None:
        return {"available": False, "why": NO_TRUST}
    return {"available": True, "temperature": t.temperature, "abstain_below": t.review_threshold(tta),
            "max_error": t.max_error, "ood_threshold": t.ood_threshold, "id_accept": t.id_accept,
            "unavailable": trust_notes(model, t.unavailable(tta))}


def classify(model: TrainedModel, paths: list[str | Path], tta: bool = False,
             max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """Read, prepare and classify every image; unreadable files go to ``errors`` instead of stopping the rest."""
    trust = _trust_summary(model, tta)  # first: a state that cannot judge TTA refuses before any work
    files, skipped, empty = expand_inputs(paths)
    errors = [{"path": str(p), "error": why} for p, why in empty]
    ok_paths, arrays = [], []
    for path in files:
        try:
            arrays.append(load_image(path, model.img_size, max_pixels=max_pixels))
            ok_paths.append(path)
        except ImageError as err:
            errors.append({"path": str(path), "error": str(err)})
    judged = judge_images(model, np.stack(arrays), tta=tta) if arrays else None
    rows = judged.rows(model.class_names) if judged is not None else []
    results = [{"path": str(path), **row} for path, row in zip(ok_paths, rows, strict=True)]
    sets = model.trust.sets_for(tta) if model.trust is not None else None
    return {
        "checkpoint": str(model.path),
        "model": model.name,
        "img_size": model.img_size,
        "tta": tta,
        "calibrated": model.trust is not None,
        # the share of images whose prediction set holds the true class, and the score; null without sets
        "set_coverage": sets.coverage if sets is not None else None,
        "set_score": sets.describe() if sets is not None else None,
        "trust": trust,
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
        if r["verdict"] == "not_a_cell":
            lines.append(f"{r['path']}: {NOT_A_CELL} (gate score {r['ood_score']:.3g} > "
                         f"{report['trust']['ood_threshold']:.3g})")
        elif r["verdict"] == "review":
            lines.append(f"{r['path']}: {REVIEW} (best guess {r['class']} {_pct(r['probability'])}, below "
                         f"{_pct(report['trust']['abstain_below'])})   top {len(r['top'])}: {top}")
        else:
            lines.append(f"{r['path']}: {r['class']} ({_pct(r['probability'])})   top {len(r['top'])}: {top}")
        if len(r.get("prediction_set") or []) > 1:  # absent where the gate refused the image
            lines[-1] += f"   {set_text(r['prediction_set'], report['set_coverage'])}"
    return "\n".join(lines)


def set_text(classes: list[str], coverage: float) -> str:
    """``set (90 %): lymphocyte, monocyte``: the classes that hold the true one at the fitted coverage."""
    return f"set ({100 * coverage:g} %): {', '.join(classes)}"
