"""A trained model scored on a lab's labelled images: what ``bloodcls evaluate`` reports.

Only images of a class the model knows are scored (:func:`bloodcls.data.labelled.load_labelled` matches the
folder's classes to the model's and counts the rest apart). Scores are over the model's classes: a class the
folder has no image of is listed with support 0 (its recall and F1 are undefined, shown as None) and left out
of the macro mean, so a lab that sends only five of eight classes is not marked down for the three it lacks;
predictions *into* such a class still count as errors (accuracy, the other classes' recall, the confusion
matrix). Calibration, the review threshold, the not-a-cell gate and the prediction sets come from the one
judgement (:func:`bloodcls.uncertainty.judgement.judge`) and need the checkpoint's trust state; without one they
are None and ``trust.why`` says how to fit it. Set coverage is over the images the gate accepts (the refused
share beside it), marginal, per class and size-stratified (SSCV).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from bloodcls.data.labelled import LabelledImages, fingerprints
from bloodcls.inference.adaptation import trust_notes
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.uncertainty.calibration import calibration_scores
from bloodcls.uncertainty.judgement import Judgement, calibrated_proba, judge
from bloodcls.uncertainty.outputs import network_outputs
from bloodcls.uncertainty.scores import judgement_scores
from bloodcls.uncertainty.state import TrustState

# The refit hint predict gives too (bloodcls.uncertainty.judgement.NO_TRUST), worded for scores.
NO_TRUST = ("this checkpoint has no trust state (it was written before calibration and the gate existed), so only "
            "the uncalibrated scores are given: fit it with `bloodcls trust <run folder> --refit`")
ROW_FIELDS = ("path", "label", "true", "predicted", "confidence", "calibrated", "correct", "review", "gate_score",
              "gate_fires", "prediction_set")
SET_SEPARATOR = "|"  # predictions.csv: the classes of an image's prediction set, in the model's order


@dataclass
class Evaluation:
    """The report (plain JSON values) and one row per scored image (:data:`ROW_FIELDS`)."""

    report: dict[str, Any]
    rows: list[dict[str, Any]]


def class_scores(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes present, per-class precision/recall/F1/support and the confusion
    matrix (counts, rows = true class) of ``logits`` (N x C) against ``targets`` (N model class indices)."""
    preds, targets = logits.argmax(1), targets.long()
    kw = {"num_classes": len(class_names), "average": None, "validate_args": False}
    precision = multiclass_precision(preds, targets, **kw).tolist()
    recall = multiclass_recall(preds, targets, **kw).tolist()
    f1 = multiclass_f1_score(preds, targets, **kw).tolist()
    confusion = multiclass_confusion_matrix(preds, targets, num_classes=len(class_names), validate_args=False)
    support, predicted = confusion.sum(1).tolist(), confusion.sum(0).tolist()
    per_class = [{"class": name, "precision": precision[i] if predicted[i] else None,
                  "recall": recall[i] if support[i] else None, "f1": f1[i] if support[i] else None,
                  "support": support[i], "predicted": predicted[i]} for i, name in enumerate(class_names)]
    present = [row["f1"] for row in per_class if row["support"]]
    return {"n": len(targets), "accuracy": float((preds == targets).double().mean()),
            "macro_f1": float(np.mean(present)), "classes_scored": sum(1 for s in support if s),
            "per_class": per_class, "confusion_matrix": confusion.tolist()}


def trust_scores(logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor, trust: TrustState | None,
                 class_names: list[str]) -> tuple[dict[str, Any], Judgement]:
    """(calibration before/after the temperature, review, gate and sets; the per-image judgement). Without a trust
    state only the calibration before scaling is known. Set figures are over the images the gate accepts."""
    judged = judge(logits, features, trust)
    before = calibration_scores(calibrated_proba(logits), targets)
    if trust is None:
        return ({"trust": {"available": False, "why": NO_TRUST}, "calibration": {"before": before, "after": None},
                 "review": None, "gate": None, "sets": None}, judged)
    scores = judgement_scores(judged, targets, class_names, trust.sets_for(False))
    return ({"trust": {"available": True, "temperature": trust.temperature, "unavailable": judged.notes},
             "calibration": {"before": before, "after": scores["calibration"]},
             "review": scores["review"], "gate": scores["gate"], "sets": scores["sets"]}, judged)


def score(logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor, class_names: list[str],
          trust: TrustState | None = None) -> tuple[dict[str, Any], Judgement]:
    """Every score of one set of logits (and the per-image judgement the rows are written from)."""
    scores, judged = trust_scores(logits, features, targets, trust, class_names)
    return {**class_scores(logits, targets, class_names), **scores}, judged


def image_rows(data: LabelledImages, judged: Judgement, class_names: list[str]) -> list[dict[str, Any]]:
    """One row per image: where it is, its class (folder's name and model's), the prediction, its confidence and
    whether that is calibrated or the raw softmax, the flags and the prediction set (classes joined by
    :data:`SET_SEPARATOR`; empty where the gate refused the image; review, gate and set None without a state)."""
    json_rows = judged.rows(class_names)
    out = []
    for path, label, t, r in zip(data.paths, data.labels, data.targets.tolist(), json_rows, strict=True):
        members = r.get("prediction_set")
        out.append({"path": path, "label": label, "true": class_names[t], "predicted": r["class"],
                    "confidence": r["probability"], "calibrated": judged.calibrated,
                    "correct": r["class"] == class_names[t], "review": r["abstain"], "gate_score": r["ood_score"],
                    "gate_fires": None if r["in_distribution"] is None else not r["in_distribution"],
                    "prediction_set": (None if judged.sets is None else SET_SEPARATOR.join(members or []))})
    return out


def overlap_warning(trust: TrustState | None, data: LabelledImages) -> str | None:
    """One line when the images scored overlap those the checkpoint was calibrated on (``calibrated_on``)."""
    record = (trust.calibrated_on if trust is not None else None) or {}
    if not record:
        return None
    seen = set(record.get("fingerprints") or [])
    if seen:
        shared = sum(f in seen for f in fingerprints(data.images))
    else:  # calibrated before fingerprints were recorded: the same source is all we can tell
        from pathlib import Path

        same = Path(str(record.get("data", ""))).expanduser().resolve() == Path(str(data.files.source)).resolve()
        shared = len(data) if same else 0
    if not shared:
        return None
    return (f"warning: {shared} of the {len(data)} images scored here are among the {record.get('images', '?')} this "
            f"checkpoint was calibrated on ({record.get('data')}, {record.get('date')}): its calibration, review, "
            "gate and set figures are in-sample for them; score images kept apart.")


def evaluate(model: TrainedModel, data: LabelledImages, batch_size: int = 256) -> Evaluation:
    """Score ``model`` on ``data`` (read for it by :func:`bloodcls.data.labelled.load_labelled`)."""
    from bloodcls.errors import DataError

    if not len(data):
        raise DataError(f"{data.files.source} has no readable image of a class the model knows "
                        f"({data.match.describe()}); {len(data.files.skipped)} files were skipped. Add readable "
                        "images of those classes.")
    outputs = network_outputs(model.net, data.images, batch_size=batch_size)
    targets = torch.as_tensor(data.targets)
    report, judged = score(outputs.logits, outputs.features, targets, model.class_names, model.trust)
    if report["trust"].get("unavailable"):
        report["trust"]["unavailable"] = trust_notes(model, report["trust"]["unavailable"])
    report = {"checkpoint": str(model.path), "model": model.name, "img_size": model.img_size,
              "data": str(data.files.source), "class_names": model.class_names, **report,
              "calibrated_on_overlap": overlap_warning(model.trust, data),
              "classes": {"matched": data.match.describe(), "index": data.match.index,
                          "unknown": data.unknown_counts, "unknown_images": sum(data.unknown_counts.values())},
              "skipped": [{"path": p, "reason": why} for p, why in data.files.skipped]}
    return Evaluation(report, image_rows(data, judged, model.class_names))
