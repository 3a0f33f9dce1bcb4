"""Adapt a trained model to a lab's unlabelled images (``bloodcls adapt``): its BatchNorm statistics recomputed.

A stain or a lamp shifts every activation of the network; recomputing each BatchNorm layer's running mean and
variance on the lab's own images (AdaBN, Li et al. 2016; Schneider et al., NeurIPS 2020) moves them back where
the weights expect them, with no label and one forward pass. Nothing else changes: every parameter stays
byte-identical, only ``running_mean``, ``running_var`` and ``num_batches_tracked`` are new.

What the trust state keeps (it was fitted on the training statistics):

- the gate (class means, precision, threshold) is kept: it describes the training features, which is what
  adaptation aligns the lab's features with, and it is measured here on the lab's images (the guard);
- the temperature and the review thresholds are kept as the best label-free estimate, but unverified: they
  need labelled images of the lab (``bloodcls calibrate``) to be refitted;
- the conformal prediction sets are removed: their coverage is a guarantee only for images exchangeable with
  the ones the quantile was fitted on, so a "90 %" set would state a number that no longer holds until
  ``bloodcls calibrate`` fits a quantile on the lab's labelled images.

The guard: after adaptation the gate (statistics unchanged) still turns away images that are not blood cells,
even when the statistics were recomputed on those very images, while it accepts most of a real lab's cells
(the measured figures: docs/guide/own-images.md). An adaptation whose own images the gate turns away for
the most part is refused unless forced, and a forced one carries its warning. Before adaptation the gate cannot
judge: it turns away nearly every cell of a shifted lab.

The record (``checkpoint["adapted_on"]``: source, count, date, digest of the files, the guard's figures, what is
stale) is what predict and evaluate read through :func:`adaptation_status`.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bloodcls.common.checkpoints import (
    ADAPTED_KEY,
    NET_PREFIX,
    TRUST_KEY,
    read_checkpoint,
    write_checkpoint,
)
from bloodcls.common.tensors import to_float_images
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel, recalibrated_since
from bloodcls.models.batchnorm import batchnorm_buffers, batchnorm_layers, recompute_batchnorm

if TYPE_CHECKING:  # the data package pulls in Lightning; predict reads adaptation_status without it
    from bloodcls.data.unlabelled import UnlabelledImages

# Why these two: docs/guide/own-images.md#adapt-to-your-lab-without-labels (scripts/adaptation_check.py measures them)
MIN_IMAGES = 32  # from fewer, BatchNorm statistics are off enough that single draws lose accuracy
MIN_GATE_ACCEPT = 0.5  # the gate must accept most of the images adapted on ("refuses most": refused)
BATCH_SIZE = 256
CARRIED = ("temperature", "review thresholds")  # kept from before adaptation, unverified until `calibrate`
REMOVED = ("prediction sets",)  # removed: a coverage guarantee that no longer holds
KEPT = ("gate",)  # kept and measured on the lab's images


@dataclass
class Adaptation:
    """The adapted model (a copy: the input model is untouched) and the record written into its checkpoint."""

    model: TrainedModel
    record: dict[str, Any]


def check_enough(n: int, source: Any) -> None:
    """Refuse a set too small for BatchNorm statistics (one paragraph, saying how many are needed)."""
    if n < MIN_IMAGES:
        raise UserError(f"{source} holds {n} readable image{'s' if n != 1 else ''}; recomputing the BatchNorm "
                        f"statistics needs at least {MIN_IMAGES} (from fewer they measurably differ from the lab's "
                        "own, and adaptation can cost accuracy instead of restoring it), and a few hundred are "
                        "better. Add more unlabelled images of the lab's cells.")


@torch.no_grad()
def recompute_statistics(net: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = BATCH_SIZE,
                         seed: int = 0) -> int:
    """Recompute ``net``'s BatchNorm statistics (in place) over N x S x S x 3 uint8 images; returns its number of
    BatchNorm layers. The images go in a seeded random order (a folder lists them class by class) in batches
    of equal size, so each image weighs the same in the averaged statistics; fp32, no autocast."""
    x = torch.as_tensor(np.array(images) if isinstance(images, np.ndarray) else images)  # a writable copy
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    device = next(net.parameters()).device
    chunks = torch.tensor_split(order, max(1, -(-len(x) // batch_size)))
    with torch.autocast(device.type, enabled=False):
        recompute_batchnorm(net, (to_float_images(x[idx].to(device)) for idx in chunks))
    return len(batchnorm_layers(net))


def _judged(model: TrainedModel, net: nn.Module, images: np.ndarray, batch_size: int) -> dict[str, torch.Tensor]:
    """The class shown and, where the model has a gate, its decision: the one judgement (uncertainty.judgement)."""
    from bloodcls.uncertainty.judgement import judge
    from bloodcls.uncertainty.outputs import network_outputs

    outputs = network_outputs(net, images, batch_size=batch_size)
    if model.trust is None:
        return {"predicted": outputs.logits.argmax(1)}
    judged = judge(outputs.logits, outputs.features, model.trust)
    return {"predicted": judged.predicted, "in_distribution": judged.accepted}


def adapt_model(model: TrainedModel, images: UnlabelledImages | np.ndarray, force: bool = False,
                batch_size: int = BATCH_SIZE) -> Adaptation:
    """``model`` adapted to ``images`` (an :class:`UnlabelledImages` from ``load_unlabelled`` or N x S x S x 3
    uint8 at the model's size). Refused (UserError) for too few images, a network without BatchNorm, and, unless
    ``force``, a model without a gate or images the adapted gate turns away for the most part."""
    from bloodcls.data.unlabelled import UnlabelledImages

    data = images if isinstance(images, UnlabelledImages) else None
    array = data.images if data is not None else np.asarray(images)
    source = str(data.source) if data is not None else "the images given"
    size = model.img_size
    if array.dtype != np.uint8 or array.shape[1:] != (size, size, 3):
        raise UserError(f"{source} are {array.dtype} images of shape {array.shape[1:]}; adapting this model needs "
                        f"N x {size} x {size} x 3 uint8 images, read as predict reads them (load_unlabelled does).")
    check_enough(len(array), source)
    if not batchnorm_layers(model.net):
        raise UserError(f"{model.path} ({model.name}) has no BatchNorm layer, so there are no statistics to adapt. "
                        "Re-calibrate it on labelled images of the lab (`bloodcls calibrate`) or fine-tune it "
                        "(`init_from=`) instead.")
    if model.trust is None and not force:
        raise UserError(f"{model.path} has no trust state, so there is no not-a-cell gate to check, after "
                        "adaptation, that the images are blood cells. Fit it first with `bloodcls trust <run folder> "
                        "--refit`, or pass --force to adapt unchecked (the model then records that it was).")
    before = _judged(model, model.net, array, batch_size)
    net = copy.deepcopy(model.net)
    layers = recompute_statistics(net, array, batch_size)
    after = _judged(model, net, array, batch_size)
    gate = _gate_figures(before, after)
    warning = _refusal(gate, len(array), source) if gate and gate["accepts"] < MIN_GATE_ACCEPT else None
    if warning and not force:
        raise UserError(f"{warning} Nothing was written. Check that {source} holds the lab's blood-cell images (one "
                        "cell per image, centred, as BloodMNIST crops them), or pass --force to write the model anyway "
                        "(the warning is recorded in it, and predict and evaluate show it).")
    if model.trust is None:
        warning = "adapted with --force and without a gate: nothing checked that the images are blood cells."
    trust = replace(model.trust, conformal=None, conformal_tta=None) if model.trust is not None else None
    record = {"data": source, "images": len(array), "files_sha256": data.digest if data is not None else None,
              "skipped": len(data.skipped) if data is not None else 0, "checkpoint": str(model.path),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "batchnorm_layers": layers,
              "gate": gate, "min_gate_accept": MIN_GATE_ACCEPT, "forced": bool(force and warning), "warning": warning,
              "predictions_changed": float((before["predicted"] != after["predicted"]).double().mean()),
              "predicted": torch.bincount(after["predicted"], minlength=len(model.class_names)).tolist(),
              "trust": {"kept": list(KEPT), "carried_unverified": list(CARRIED), "removed": list(REMOVED),
                        "calibrated_on_before": model.trust.calibrated_on if model.trust is not None else None}}
    return Adaptation(replace(model, net=net, trust=trust, adapted_on=record), record)


def _gate_figures(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    if "in_distribution" not in after:
        return None
    return {"accepts": float(after["in_distribution"].double().mean()),
            "accepts_before": float(before["in_distribution"].double().mean()),
            "accepted": int(after["in_distribution"].sum())}


def _refusal(gate: dict[str, Any], n: int, source: str) -> str:
    return (f"After adaptation the not-a-cell gate still turns away {n - gate['accepted']} of the {n} images of "
            f"{source} ({100 * (1 - gate['accepts']):.0f} %; more than {100 * (1 - MIN_GATE_ACCEPT):.0f} % stops "
            "adaptation): they do not look like blood-cell images, or they differ from the training images more than "
            "new statistics can undo (then re-calibrate or fine-tune on labelled images instead). More images of the "
            "lab make the statistics, and this check, more reliable.")


def check_output(source: str | Path, out: str | Path) -> tuple[Path, Path]:
    """(source, out) as paths; an ``out`` that is neither a new .ckpt file nor a new or empty folder for a bundle
    is refused (before any work is done)."""
    from bloodcls.inference.bundle import check_copy_destination  # predict reads this module: kept light

    return check_copy_destination(source, out, "adapted model")


def write_adapted(source: str | Path, out: str | Path, adaptation: Adaptation) -> None:
    """A .ckpt copy of the checkpoint ``source`` with the adapted BatchNorm statistics, trust state and record
    (atomic; weights-only loadable: plain tensors and values; never the input file itself). A bundle folder is
    ``Classifier(adaptation.model).save(out)``."""
    source, out = check_output(source, out)
    contents = read_checkpoint(source)
    state = adaptation.model.net.state_dict()
    for name in batchnorm_buffers(adaptation.model.net):
        contents["state_dict"][NET_PREFIX + name] = state[name].detach().cpu().clone()
    contents.pop("format", None)  # a safetensors model comes out as a .ckpt
    contents.pop("precise_batchnorm", None)  # the statistics are no longer the training split's
    if adaptation.model.trust is not None:
        contents[TRUST_KEY] = adaptation.model.trust.to_dict()
    contents[ADAPTED_KEY] = adaptation.record
    out.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(out, contents)


def adaptation_status(model: TrainedModel) -> dict[str, Any] | None:
    """What predict and evaluate say about an adapted model: the record's facts, whether its trust state has been
    re-calibrated since (``calibrate`` writes a new ``calibrated_on``), what is stale, and one ``note``. None for a
    model never adapted."""
    record = model.adapted_on
    if not record:
        return None
    trust = record.get("trust") or {}
    recalibrated = recalibrated_since(model.trust, record)
    stale = [] if recalibrated else [*trust.get("carried_unverified", []), *trust.get("removed", [])]
    note = (f"this model was adapted to {record.get('images')} unlabelled images of {record.get('data')} "
            f"({record.get('date')}): it is for that lab's images (its gate may turn away cells imaged as the "
            "training data were)")
    if stale:
        note += (f"; its {' and '.join(trust.get('carried_unverified', []))} were fitted before adaptation and are "
                 "unverified, and its prediction sets were removed: refit them on labelled images of the lab with "
                 "`bloodcls calibrate`")
    if record.get("warning"):
        note += f". WARNING: {record['warning']}"
    return {key: record.get(key) for key in ("data", "images", "date", "files_sha256", "forced", "warning")} | {
        "gate_accepts": (record.get("gate") or {}).get("accepts"), "recalibrated": recalibrated, "stale": stale,
        "note": note}


SETS_REMOVED = ("prediction sets: removed by `bloodcls adapt` (their coverage was measured on images unlike the "
                "lab's); refit them on labelled images of the lab with `bloodcls calibrate`.")


def trust_notes(model: TrainedModel, notes: list[str]) -> list[str]:
    """The trust state's notes (what it cannot give) as they hold for ``model``: an adapted model not re-calibrated
    since has no sets because adapt removed them, not because its state is old (which would send the user to
    ``bloodcls trust --refit``, refitting on the training data's statistics)."""
    from bloodcls.uncertainty.state import NO_SETS, NO_TTA_SETS

    if not model.adapted_on or recalibrated_since(model.trust, model.adapted_on):
        return notes
    return [SETS_REMOVED if note in (NO_SETS, NO_TTA_SETS) else note for note in notes]
