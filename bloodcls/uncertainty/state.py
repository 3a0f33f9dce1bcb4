"""The fitted trust state a checkpoint carries: plain numbers and tensors, so weights-only loading works.

Stored under ``checkpoint["trust"]`` (and in a safetensors export as tensors + metadata). A checkpoint
written before it existed has none: predict and the demo then say calibration and the gate are unavailable.
Version 1 states (before TTA prediction sets) still load: their sets are single-view only, and a
judgement under ``--tta`` says so (:meth:`TrustState.unavailable`). The per-image judgement that reads the
state is :func:`bloodcls.uncertainty.judgement.judge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bloodcls.common.checkpoints import TRUST_KEY
from bloodcls.errors import UserError
from bloodcls.uncertainty.conformal import ConformalSets

CHECKPOINT_KEY = TRUST_KEY  # where a checkpoint holds the state

VERSION = 2  # 2: conformal_tta (sets from TTA probabilities), class-conditional and LAC sets
READABLE = (1, 2)
REFIT = "fit the trust state again with `bloodcls trust <run folder> --refit` (or re-calibrate it with `bloodcls calibrate`)"
NO_TTA_THRESHOLD = ("this checkpoint's review threshold was fitted on single-view confidence only, so it cannot judge "
                    f"the averaged confidence of --tta: drop --tta, or {REFIT}; it then fits a threshold for TTA too.")
NO_TTA_SETS = ("prediction sets: this checkpoint's sets were fitted on single-view probabilities only, so --tta gives "
               f"none (they would not match the averaged class); {REFIT}.")
NO_SETS = f"prediction sets: this checkpoint has none (fitted before they existed, or on too few images); {REFIT}."


@dataclass
class TrustState:
    temperature: float  # divides the logits (fitted on validation)
    abstain_below: float  # calibrated confidence under which a person should review the prediction
    max_error: float  # the validation error rate the abstention threshold was chosen for
    ood_means: torch.Tensor  # C x D class means of the penultimate features (training split)
    ood_precision: torch.Tensor  # D x D shared precision matrix
    ood_threshold: float  # gate fires above this score (accepts ID_ACCEPT of validation)
    id_accept: float
    feature_layer: str  # the classifier layer whose input the gate reads
    # the same review threshold for the calibrated confidence averaged over the 8 rotations/flips (TTA),
    # fitted on validation too; None in states fitted before it existed
    abstain_below_tta: float | None = None
    # the conformal prediction-set threshold(s) on single-view calibrated probabilities (fitted on validation, or on
    # a lab's images by `bloodcls calibrate`); None in states fitted before they existed or on too few images
    conformal: ConformalSets | None = None
    # the same, fitted on the TTA probabilities (the mean over the 8 views): the sets shown with --tta
    conformal_tta: ConformalSets | None = None
    # where a state refitted by `bloodcls calibrate` was fitted: source, images (and their fingerprints), date,
    # checkpoint; None after training
    calibrated_on: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "temperature": float(self.temperature), "abstain_below": float(self.abstain_below),
                "max_error": float(self.max_error), "ood_means": self.ood_means.detach().cpu().contiguous(),
                "ood_precision": self.ood_precision.detach().cpu().contiguous(),
                "ood_threshold": float(self.ood_threshold), "id_accept": float(self.id_accept),
                "feature_layer": str(self.feature_layer),
                "abstain_below_tta": None if self.abstain_below_tta is None else float(self.abstain_below_tta),
                "conformal": None if self.conformal is None else self.conformal.to_dict(),
                "conformal_tta": None if self.conformal_tta is None else self.conformal_tta.to_dict(),
                "calibrated_on": None if self.calibrated_on is None else dict(self.calibrated_on)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrustState | None:
        if not d or d.get("version") not in READABLE:
            return None
        fields = {k: v for k, v in d.items() if k != "version"}  # new fields have defaults: old states still load
        return cls(**{**fields, "conformal": ConformalSets.from_dict(fields.get("conformal")),
                      "conformal_tta": ConformalSets.from_dict(fields.get("conformal_tta"))})

    def review_threshold(self, tta: bool) -> float:
        """The review threshold fitted on the kind of confidence it is compared with (single view or TTA)."""
        if not tta:
            return self.abstain_below
        if self.abstain_below_tta is None:
            raise UserError(NO_TTA_THRESHOLD)
        return self.abstain_below_tta

    def sets_for(self, tta: bool) -> ConformalSets | None:
        """The conformal state fitted on the kind of probabilities it is applied to (single view or TTA)."""
        return self.conformal_tta if tta else self.conformal

    def unavailable(self, tta: bool) -> list[str]:
        """What this state cannot give for a judgement of this kind, one sentence each (empty when complete)."""
        if self.sets_for(tta) is not None:
            return []
        return [NO_TTA_SETS if tta and self.conformal is not None else NO_SETS]
