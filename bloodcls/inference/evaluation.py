"""A trained model scored on a lab's labelled images: what ``bloodcls evaluate`` reports.

Only images of a class the model knows are scored (:func:`bloodcls.data.labelled.load_labelled` matches the
folder's classes to the model's and counts the rest apart). Scores are over the model's classes: a class the
folder has no image of is listed with support 0 (its recall and F1 are undefined, shown as None) and left out
of the macro mean, so a lab that sends only five of eight classes is not marked down for the three it lacks;
predictions *into* such a class still count as errors (accuracy, the other classes' recall, the confusion
matrix). Calibration, the review threshold and the not-a-cell gate need the checkpoint's trust state; without
one they are None and ``trust.why`` says how to fit it.
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

from bloodcls.data.labelled import LabelledImages
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.uncertainty.calibration import calibration_scores
from bloodcls.uncertainty.fitting import logits_and_features, set_report
from bloodcls.uncertainty.state import TrustState

# The refit hint predict gives too (bloodcls.inference.classify.NO_TRUST), worded for scores.
NO_TRUST = ("this checkpoint has no trust state (it was written before calibration and the gate existed), so only "
            "the uncalibrated scores are given: fit it with `bloodcls trust <run folder> --refit`")
ROW_FIELDS = ("path", "label", "true", "predicted", "confidence", "correct", "review", "gate_score", "gate_fires")


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


def trust_scores(logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor,
                 trust: TrustState | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(calibration before/after the temperature, review and gate firing; the per-image judgement). Without a
    trust state only the calibration before scaling is known."""
    before = logits.float().softmax(1)
    if trust is None:
        return ({"trust": {"available": False, "why": NO_TRUST},
                 "calibration": {"before": calibration_scores(before, targets), "after": None},
                 "review": None, "gate": None, "sets": None}, {"confidence": before.max(1).values})
    judged = trust.assess(logits, features)
    correct = judged["proba"].argmax(1) == targets
    accepted, fires = ~judged["abstain"], ~judged["in_distribution"]
    return ({"trust": {"available": True, "temperature": trust.temperature},
             "calibration": {"before": calibration_scores(before, targets),
                             "after": calibration_scores(judged["proba"], targets)},
             "review": {"threshold": trust.abstain_below, "fires": int(judged["abstain"].sum()),
                        "share": float(judged["abstain"].double().mean()),
                        "accepted_accuracy": float(correct[accepted].double().mean()) if accepted.any() else None},
             "gate": {"threshold": trust.ood_threshold, "fires": int(fires.sum()), "share": float(fires.double().mean())},
             "sets": set_report(trust.conformal, judged["proba"], targets)},
            judged)


def score(logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor, class_names: list[str],
          trust: TrustState | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Every score of one set of logits (and the per-image judgement the rows are written from)."""
    scores, judged = trust_scores(logits, features, targets, trust)
    return {**class_scores(logits, targets, class_names), **scores}, judged


def image_rows(data: LabelledImages, logits: torch.Tensor, judged: dict[str, torch.Tensor],
               class_names: list[str]) -> list[dict[str, Any]]:
    """One row per image: where it is, its class (folder's name and model's), the prediction and the flags
    (review and gate columns None without a trust state)."""
    preds = logits.argmax(1).tolist()
    conf = judged["confidence"].tolist()
    review = judged["abstain"].tolist() if "abstain" in judged else [None] * len(preds)
    gate = judged["ood_score"].tolist() if "ood_score" in judged else [None] * len(preds)
    fires = (~judged["in_distribution"]).tolist() if "in_distribution" in judged else [None] * len(preds)
    return [{"path": path, "label": label, "true": class_names[t], "predicted": class_names[p], "confidence": c,
             "correct": p == t, "review": r, "gate_score": g, "gate_fires": f}
            for path, label, t, p, c, r, g, f in zip(data.paths, data.labels, data.targets.tolist(), preds, conf,
                                                      review, gate, fires, strict=True)]


def evaluate(model: TrainedModel, data: LabelledImages, batch_size: int = 256) -> Evaluation:
    """Score ``model`` on ``data`` (read for it by :func:`bloodcls.data.labelled.load_labelled`)."""
    from bloodcls.errors import DataError

    if not len(data):
        raise DataError(f"{data.files.source} has no readable image of a class the model knows "
                        f"({data.match.describe()}); {len(data.files.skipped)} files were skipped. Add readable "
                        "images of those classes.")
    logits, features = logits_and_features(model.net, data.images, batch_size=batch_size)
    targets = torch.as_tensor(data.targets)
    report, judged = score(logits, features, targets, model.class_names, model.trust)
    report = {"checkpoint": str(model.path), "model": model.name, "img_size": model.img_size,
              "data": str(data.files.source), "class_names": model.class_names, **report,
              "classes": {"matched": data.match.describe(), "index": data.match.index,
                          "unknown": data.unknown_counts, "unknown_images": sum(data.unknown_counts.values())},
              "skipped": [{"path": p, "reason": why} for p, why in data.files.skipped]}
    return Evaluation(report, image_rows(data, logits, judged, model.class_names))
