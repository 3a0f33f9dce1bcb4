"""A judgement scored against true labels: what evaluate, calibrate and the run's trust report say of it.

One shape everywhere: ``calibration`` (ECE, NLL, Brier of the probabilities judged), ``review`` (how often the
review flag fires, accuracy on the rest), ``gate`` (how often it refuses) and ``sets`` (the fitted score, and
coverage, size, per class and SSCV over the images the gate accepts, with the refused share beside them).
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.uncertainty.calibration import calibration_scores
from bloodcls.uncertainty.conformal import ConformalSets
from bloodcls.uncertainty.judgement import Judgement
from bloodcls.uncertainty.set_metrics import set_report


def review_scores(judged: Judgement, labels: torch.Tensor) -> dict[str, Any] | None:
    """The review threshold, how many images it flags (count and share) and the accuracy on the others."""
    if judged.review is None:
        return None
    correct, kept = judged.predicted == labels.long().cpu(), ~judged.review
    return {"threshold": judged.review_threshold, "fires": int(judged.review.sum()),
            "share": float(judged.review.double().mean()) if len(judged) else None,
            "accepted_accuracy": float(correct[kept].double().mean()) if kept.any() else None}


def gate_firing(judged: Judgement) -> dict[str, Any] | None:
    """The gate's threshold and how many images it refuses (count and share)."""
    if judged.accepted is None:
        return None
    refused = ~judged.accepted
    return {"threshold": judged.gate_threshold, "fires": int(refused.sum()),
            "share": float(refused.double().mean()) if len(judged) else None}


def fitted_sets(conformal: ConformalSets) -> dict[str, Any]:
    """What the sets were fitted as: score, coverage asked, threshold(s), images."""
    fitted = conformal.to_dict()
    return {"target_coverage": fitted.pop("coverage"), "score": conformal.describe(),
            "class_conditional": conformal.per_class, **fitted}


def sets_scores(judged: Judgement, labels: torch.Tensor, class_names: list[str],
                conformal: ConformalSets | None) -> dict[str, Any] | None:
    """The sets' fitted values and their figures over the images the gate accepts (None without sets)."""
    if judged.sets is None or conformal is None:
        return None
    return {**fitted_sets(conformal),
            **set_report(judged.sets, labels, conformal.coverage, class_names, judged.accepted)}


def judgement_scores(judged: Judgement, labels: torch.Tensor, class_names: list[str],
                     conformal: ConformalSets | None) -> dict[str, Any]:
    """Calibration of the probabilities judged, review, gate and sets (``conformal``: the state's sets of the
    judgement's kind, :meth:`bloodcls.uncertainty.state.TrustState.sets_for`)."""
    return {"calibration": calibration_scores(judged.proba, labels) if len(judged) else None,
            "review": review_scores(judged, labels), "gate": gate_firing(judged),
            "sets": sets_scores(judged, labels, class_names, conformal)}
