"""Re-calibrate a trained model to a lab's labelled images without retraining (``bloodcls calibrate``).

On the lab's images (all of them: the user keeps their own test images apart) the trust state's fitted numbers
are refitted: the temperature, the review thresholds (single view and TTA), the gate's threshold (on the gate's
class means and shrunk covariance from training: a few hundred images cannot refit 128 x 128 statistics, but
they can say where this lab's cells fall on the training distance) and the conformal threshold at the coverage
asked. The weights are untouched; the new state goes into a copy of the checkpoint, which loads weights-only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bloodcls.common.checkpoints import read_checkpoint, write_checkpoint
from bloodcls.data.labelled import LabelledImages
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.uncertainty.calibration import calibration_scores, fit_temperature
from bloodcls.uncertainty.conformal import ConformalSets, SetOptions, min_calibration_images
from bloodcls.uncertainty.far_ood import far_ood_sets
from bloodcls.uncertainty.fitting import MAX_ERROR, logits_and_features, set_report, tta_proba_calibrated
from bloodcls.uncertainty.ood import accept_threshold, mahalanobis_score
from bloodcls.uncertainty.selective import abstain_threshold
from bloodcls.uncertainty.state import CHECKPOINT_KEY, TrustState

MIN_IMAGES = 20  # below this a temperature and a review threshold are noise, whatever the coverage asked


@dataclass
class Recalibration:
    state: TrustState  # the refitted state
    report: dict[str, Any]  # before/after on the lab's images


def check_enough(n: int, coverage: float, source: Any) -> None:
    """Refuse a lab set too small to fit the numbers (one paragraph, saying how many are needed)."""
    need = max(MIN_IMAGES, min_calibration_images(coverage))
    if n < need:
        raise UserError(f"{source} holds {n} labelled images of the model's classes; re-calibrating needs at least "
                        f"{need} ({min_calibration_images(coverage)} for prediction sets at {coverage:.0%} coverage, "
                        f"{MIN_IMAGES} for a temperature and a review threshold), and a few dozen per class to be "
                        "useful. Label more images, or ask for a lower --coverage.")


def recalibrate(model: TrainedModel, data: LabelledImages, coverage: float = 0.9, method: str = "aps",
                batch_size: int = 256) -> Recalibration:
    """The model's trust state refitted on ``data`` (read for it by :func:`bloodcls.data.labelled.load_labelled`)."""
    old = model.trust
    if old is None:
        raise UserError(f"{model.path} has no trust state (it was written before calibration and the gate existed): "
                        "the gate's class means come from training, so fit them first with `bloodcls trust <run "
                        "folder> --refit`, then re-calibrate.")
    check_enough(len(data), coverage, data.files.source)
    logits, features = logits_and_features(model.net, data.images, batch_size=batch_size)
    y = torch.as_tensor(data.targets).long()
    temperature = fit_temperature(logits, y)
    proba = (logits / temperature).softmax(1)
    tta = tta_proba_calibrated(model.net, data.images, temperature)
    gate = mahalanobis_score(features, old.ood_means, old.ood_precision)
    state = replace(old, temperature=temperature,
                    abstain_below=abstain_threshold(proba.max(1).values, proba.argmax(1) == y, MAX_ERROR),
                    abstain_below_tta=abstain_threshold(tta.max(1).values, tta.argmax(1) == y, MAX_ERROR),
                    ood_threshold=accept_threshold(gate, old.id_accept),
                    conformal=ConformalSets.fit(proba, y, SetOptions(coverage, method)),
                    calibrated_on={"data": str(data.files.source), "images": len(y), "checkpoint": str(model.path),
                                   "classes": data.match.describe(), "date": dt.date.today().isoformat()})
    before = old.assess(logits, features)
    far = torch.cat([mahalanobis_score(logits_and_features(model.net, imgs, batch_size=batch_size)[1], old.ood_means,
                                       old.ood_precision) for imgs in far_ood_sets(model.img_size).values()])
    report = {"images": len(y), "data": str(data.files.source), "unknown": data.unknown_counts,
              "before": _scores(old, before, y, far), "after": _scores(state, state.assess(logits, features), y, far)}
    return Recalibration(state, report)


def _scores(state: TrustState, judged: dict[str, torch.Tensor], y: torch.Tensor, far: torch.Tensor) -> dict[str, Any]:
    """On the lab's images; ``far_ood_turned_away``: the share of the far-OOD sets (photos, plain colours, noise)
    the gate still turns away at this threshold, so a threshold opened for a lab's cells is seen to stay shut
    to what is not a cell."""
    return {"temperature": state.temperature, "calibration": calibration_scores(judged["proba"], y),
            "review_threshold": state.abstain_below, "review_fires": float(judged["abstain"].double().mean()),
            "gate_threshold": state.ood_threshold, "gate_fires": float((~judged["in_distribution"]).double().mean()),
            "far_ood_turned_away": float((far > state.ood_threshold).double().mean()),
            "sets": set_report(state.conformal, judged["proba"], y)}


def write_recalibrated(source: Path, out: Path, state: TrustState) -> None:
    """A copy of ``source`` with ``state`` as its trust state (atomic; never the input file itself)."""
    source, out = Path(source), Path(out)
    if out.suffix != ".ckpt":
        raise UserError(f"--out {out}: give a .ckpt path for the re-calibrated checkpoint (export it to safetensors "
                        "or ONNX afterwards with `bloodcls export`).")
    if out.exists() and out.resolve() == source.resolve():
        raise UserError(f"--out {out} is the checkpoint being re-calibrated; write to a new file so the original "
                        "(and its calibration on the training data) is kept.")
    contents = read_checkpoint(source)
    contents[CHECKPOINT_KEY] = state.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(out, contents)
