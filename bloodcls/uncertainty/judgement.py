"""One judgement per image: what the network's logits and features, read through a trust state, say about it.

:func:`judge` is the one place that turns logits (a single view, or the 8 rotations/flips of TTA) and the
penultimate features into calibrated probabilities, the class, the calibrated confidence, the review flag, the
"not a blood-cell image" gate's decision and the conformal prediction set. Predict (text and JSON), the demo,
evaluate, calibrate, the trust fit and report, and the exports' parity check all call it, so they cannot disagree:

- under TTA the probabilities are the mean over views of the calibrated softmax (:func:`bloodcls.common.tta.
  average_views`), the review threshold is the one fitted on TTA confidence, and the set comes from the TTA
  probabilities with the quantile fitted on TTA probabilities; the set always holds the class shown;
- the gate reads the features of the unrotated image; an image it refuses gets no set (its row in ``sets`` is
  all False, and :meth:`Judgement.row` leaves ``prediction_set`` out), as no class is meaningful for it.

Without a trust state the probabilities are the raw softmax (``calibrated`` False) and nothing else is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bloodcls.common.tta import average_views
from bloodcls.uncertainty.ood import mahalanobis_score
from bloodcls.uncertainty.state import TrustState

TOP_K = 3
NO_TRUST = ("calibration and the out-of-distribution gate are unavailable for this checkpoint (written before "
            "they existed): fit them with `bloodcls trust <run folder> --refit`")
VERDICTS = ("ok", "review", "not_a_cell", "unchecked")


def calibrated_proba(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """N x C logits, or V x N x C logits of TTA views -> N x C probabilities: softmax(logits / temperature),
    averaged over the views."""
    if logits.dim() == 3:
        return average_views(logits, temperature)
    return (logits.float() / temperature).softmax(dim=1)


@dataclass
class Judgement:
    """The judgement of N images (CPU tensors; the optional fields are None without a trust state)."""

    proba: torch.Tensor  # N x C: calibrated probabilities (the raw softmax when ``calibrated`` is False)
    calibrated: bool  # whether ``proba`` went through the fitted temperature
    tta: bool  # whether ``proba`` is the mean over the 8 rotations/flips
    review_threshold: float | None = None  # the threshold in use (the TTA one under TTA)
    review: torch.Tensor | None = None  # N bool: calibrated confidence below the review threshold
    gate_threshold: float | None = None
    gate_score: torch.Tensor | None = None  # N: the gate's score (larger = less like the training cells)
    accepted: torch.Tensor | None = None  # N bool: the gate accepts the image as a blood-cell image
    sets: torch.Tensor | None = None  # N x C bool: the prediction set (all False where the gate refuses)
    set_coverage: float | None = None  # the coverage the sets were fitted for
    notes: list[str] = field(default_factory=list)  # what the state could not give, one sentence each

    def __len__(self) -> int:
        return len(self.proba)

    @property
    def predicted(self) -> torch.Tensor:
        """N class indices: the argmax of ``proba`` (the class shown)."""
        return self.proba.argmax(dim=1)

    @property
    def confidence(self) -> torch.Tensor:
        """N: the probability of the class shown (calibrated when ``calibrated``)."""
        return self.proba.max(dim=1).values

    def verdicts(self) -> list[str]:
        """Per image: ``not_a_cell`` (the gate refused it), ``review`` (below the threshold), ``ok``, or
        ``unchecked`` (no trust state)."""
        if self.review is None:
            return ["unchecked"] * len(self)
        refused = torch.zeros(len(self), dtype=torch.bool) if self.accepted is None else ~self.accepted
        return ["not_a_cell" if r else "review" if v else "ok" for r, v in zip(refused.tolist(), self.review.tolist(),
                                                                              strict=True)]

    def row(self, i: int, class_names: list[str], verdict: str | None = None) -> dict[str, Any]:
        """Image ``i`` as ``bloodcls predict --json`` prints it: class, probability, top 3, every probability,
        confidence, abstain (the review flag), in_distribution (the gate), ood_score, prediction_set (absent where
        the gate refuses, null where the state has no sets) and verdict."""
        p = self.proba[i]
        order = torch.argsort(p, descending=True, stable=True).tolist()
        row: dict[str, Any] = {
            "class": class_names[order[0]], "probability": float(p[order[0]]),
            "top": [{"class": class_names[k], "probability": float(p[k])} for k in order[:TOP_K]],
            "probabilities": {c: float(v) for c, v in zip(class_names, p.tolist(), strict=True)},
            "confidence": None, "abstain": None, "in_distribution": None, "ood_score": None, "prediction_set": None,
        }
        if self.review is not None:
            row.update(confidence=float(p[order[0]]), abstain=bool(self.review[i]))
        if self.accepted is not None:
            row.update(in_distribution=bool(self.accepted[i]), ood_score=float(self.gate_score[i]))
        if self.sets is not None:
            row["prediction_set"] = [c for c, inside in zip(class_names, self.sets[i].tolist(), strict=True) if inside]
        row["verdict"] = verdict or self.verdicts()[i]
        if row["verdict"] == "not_a_cell":
            del row["prediction_set"]  # no class is meaningful for an image the gate refuses
        return row

    def rows(self, class_names: list[str]) -> list[dict[str, Any]]:
        """Every image's :meth:`row`."""
        return [self.row(i, class_names, v) for i, v in enumerate(self.verdicts())]


def judge(logits: torch.Tensor, features: torch.Tensor | None, state: TrustState | None) -> Judgement:
    """The judgement of N images from their logits (N x C, or V x N x C for the 8 TTA views, view 0 the image as
    it is) and the penultimate features of the unrotated image (N x D; None: no gate decision), read through the
    trust state (None: the raw softmax, nothing judged). A state fitted before TTA review thresholds cannot
    judge TTA logits: a UserError saying to refit it."""
    tta = logits.dim() == 3
    logits = logits.detach().float().cpu()
    if state is None:
        return Judgement(proba=calibrated_proba(logits), calibrated=False, tta=tta, notes=[NO_TRUST])
    threshold = state.review_threshold(tta)  # first: a state that cannot judge TTA refuses before any work
    proba = calibrated_proba(logits, state.temperature)
    out = Judgement(proba=proba, calibrated=True, tta=tta, review_threshold=threshold,
                    review=proba.max(dim=1).values < threshold, notes=state.unavailable(tta))
    if features is not None:
        out.gate_threshold = state.ood_threshold
        out.gate_score = mahalanobis_score(features.detach().cpu(), state.ood_means, state.ood_precision)
        out.accepted = out.gate_score <= state.ood_threshold
    conformal = state.sets_for(tta)
    if conformal is not None:
        out.sets, out.set_coverage = conformal.sets(proba), conformal.coverage
        if out.accepted is not None:
            out.sets[~out.accepted] = False
    return out
