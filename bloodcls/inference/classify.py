"""Classify your own blood-cell images with a trained checkpoint.

    bloodcls predict <checkpoint> <image or folder>... [--json] [--tta]

Each image is prepared like the dataset (RGB, centre square, bicubic resize to the checkpoint's
input size) and gets its class, that class's probability and the top three. ``--tta`` averages
the probabilities over the eight rotations and flips. Where the checkpoint carries a trust state
(:mod:`bloodcls.uncertainty`), probabilities are temperature-calibrated, a prediction below the
review threshold is marked ``abstain`` ("uncertain: have a person review it"), and an image the
out-of-distribution gate rejects is marked ``in_distribution: false`` ("does not look like a
BloodMNIST cell image"; its class stays in the JSON). A file that cannot be read is reported and
the others still run; the exit status is 1 if any failed (2 for a bad checkpoint or arguments).
The checkpoint is loaded weights-only (:mod:`bloodcls.inference.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcls.common.tensors import to_float_images
from bloodcls.common.tta import eight_views, tta_proba
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.inference.images import (
    MAX_PIXELS,
    ImageError,
    expand_inputs,
    load_image,
)
from bloodcls.uncertainty.ood import penultimate

TOP_K = 3
NOT_A_CELL = "does not look like a BloodMNIST cell image"
REVIEW = "uncertain: have a person review it"
NO_TRUST = ("calibration and the out-of-distribution gate are unavailable for this checkpoint (written before "
            "they existed): fit them with `bloodcls trust <run folder> --refit`")


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


@torch.inference_mode()
def assess(model: TrainedModel, images: np.ndarray, tta: bool = False, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Probabilities (calibrated when the checkpoint has a trust state) and, with one, per image the
    confidence, abstain flag, gate score and in-distribution flag. The gate reads the unrotated view."""
    net, trust = model.net.eval(), model.trust
    temperature = trust.temperature if trust is not None else 1.0
    probs, logits, feats = [], [], []
    with penultimate(net) as seen:
        for lo in range(0, len(images), batch_size):
            x = to_tensor(images[lo:lo + batch_size])
            plain = net(x).float()
            n_seen = len(seen)
            if tta:  # the mean calibrated probability over the 8 rotations/flips
                probs.append(torch.stack([(net(v).float() / temperature).softmax(1) for v in eight_views(x)]).mean(0))
            else:
                probs.append((plain / temperature).softmax(1))
            logits.append(plain)
            feats.append(seen[n_seen - 1])
            seen.clear()
    if not probs:
        return {"proba": np.zeros((0, len(model.class_names)), dtype=np.float32)}
    out = {"proba": torch.cat(probs).numpy()}
    if trust is not None:
        judged = trust.assess(torch.cat(logits), torch.cat(feats))
        out["confidence"] = out["proba"].max(axis=1)
        out["abstain"] = out["confidence"] < trust.review_threshold(tta)  # fitted on the same kind of confidence
        out.update({k: judged[k].numpy() for k in ("ood_score", "in_distribution")})
        if "sets" in judged:  # from the single view also under --tta: its threshold was fitted on single views
            out["sets"] = judged["sets"].numpy()
    return out


def _trust_summary(model: TrainedModel, tta: bool) -> dict[str, Any]:
    """The state's values; ``abstain_below`` is the review threshold in use (the TTA one with ``--tta``)."""
    t = model.trust
    if t is None:
        return {"available": False, "why": NO_TRUST}
    return {"available": True, "temperature": t.temperature, "abstain_below": t.review_threshold(tta),
            "max_error": t.max_error, "ood_threshold": t.ood_threshold, "id_accept": t.id_accept}


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
    judged = assess(model, np.stack(arrays), tta=tta) if arrays else {"proba": np.zeros((0, len(model.class_names)))}
    results = [{"path": str(path), **result_row(model.class_names, judged, i)} for i, path in enumerate(ok_paths)]
    return {
        "checkpoint": str(model.path),
        "model": model.name,
        "img_size": model.img_size,
        "tta": tta,
        "calibrated": model.trust is not None,
        # the share of images whose prediction set holds the true class; null without a conformal threshold
        "set_coverage": model.trust.conformal.coverage if model.trust and model.trust.conformal else None,
        "trust": trust,
        "results": results,
        "errors": errors,
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
    }


def result_row(class_names: list[str], judged: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """Image ``i`` of :func:`assess`'s output as predict's JSON fields (the demo shows the same row)."""
    p = judged["proba"][i]
    order = np.argsort(-p)
    row: dict[str, Any] = {
        "class": class_names[order[0]],
        "probability": float(p[order[0]]),
        "top": [{"class": class_names[k], "probability": float(p[k])} for k in order[:TOP_K]],
        "probabilities": {c: float(v) for c, v in zip(class_names, p, strict=True)},
        # null where the checkpoint has no trust state
        "confidence": None, "abstain": None, "in_distribution": None, "ood_score": None, "prediction_set": None,
    }
    if "sets" in judged:
        row["prediction_set"] = [c for c, inside in zip(class_names, judged["sets"][i], strict=True) if inside]
    if "confidence" in judged:
        row.update(confidence=float(judged["confidence"][i]), abstain=bool(judged["abstain"][i]),
                   in_distribution=bool(judged["in_distribution"][i]), ood_score=float(judged["ood_score"][i]))
    row["verdict"] = verdict(row)
    return row


def verdict(row: dict[str, Any]) -> str:
    """``not_a_cell`` (the gate fired), ``review`` (below the threshold), ``ok``, or ``unchecked`` (no trust state)."""
    if row.get("in_distribution") is None:
        return "unchecked"
    if not row["in_distribution"]:
        return "not_a_cell"
    return "review" if row["abstain"] else "ok"


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
        if r["verdict"] != "not_a_cell" and len(r.get("prediction_set") or []) > 1:
            lines[-1] += f"   {set_text(r['prediction_set'], report['set_coverage'])}"
    return "\n".join(lines)


def set_text(classes: list[str], coverage: float) -> str:
    """``set (90 %): lymphocyte, monocyte``: the classes that hold the true one at the fitted coverage."""
    return f"set ({100 * coverage:g} %): {', '.join(classes)}"
