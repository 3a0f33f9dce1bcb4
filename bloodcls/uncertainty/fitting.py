"""Fit the trust state of a trained network on its own splits, and score it on the test split.

Training split: the gate's class means and covariance. Validation split: the temperature, the
abstention threshold, the gate's threshold and the conformal prediction-set threshold. Test split: everything reported (before and after
scaling), never used to fit anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bloodcls.common.tensors import to_float_images
from bloodcls.common.tta import eight_views
from bloodcls.uncertainty.calibration import calibration_scores, fit_temperature, reliability_bins
from bloodcls.uncertainty.conformal import DEFAULT_COVERAGE, ConformalSets, SetOptions, min_calibration_images
from bloodcls.uncertainty.far_ood import far_ood_sets
from bloodcls.uncertainty.ood import (
    ID_ACCEPT,
    accept_threshold,
    feature_layer,
    fit_mahalanobis,
    gate_scores,
    gate_warning,
    mahalanobis_score,
    penultimate,
)
from bloodcls.uncertainty.selective import abstain_threshold, curve_points, selective_scores
from bloodcls.uncertainty.set_metrics import set_scores
from bloodcls.uncertainty.state import TrustState

MAX_ERROR = 0.01  # abstention: validation error rate of the accepted predictions


@torch.no_grad()
def logits_and_features(net: nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 256,
                        device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits and penultimate features (on the CPU) of N x S x S x 3 uint8 images, or of float
    N x 3 x S x S images in [0, 1], in eval mode without autocast."""
    images = torch.as_tensor(images)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    logits = []
    try:
        with penultimate(net) as feats, torch.autocast(device.type, enabled=False):
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(device)
                x = (to_float_images(x) if x.dtype == torch.uint8 else x).contiguous(memory_format=torch.channels_last)
                logits.append(net(x).float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(logits), torch.cat([f.cpu() for f in feats])


def tta_proba_calibrated(net: nn.Module, images: torch.Tensor | np.ndarray, temperature: float) -> torch.Tensor:
    """Calibrated probabilities averaged over the 8 rotations/flips, as predict computes them with ``--tta``."""
    x = torch.as_tensor(images)
    x = to_float_images(x) if x.dtype == torch.uint8 else x
    return torch.stack([(logits_and_features(net, v)[0] / temperature).softmax(1) for v in eight_views(x)]).mean(0)


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or len(y) <= limit:
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return x[idx], y[idx]


def fit_trust(net: nn.Module, splits: dict[str, tuple[Any, Any]], max_train_images: int | None = None,
              seed: int = 0, far_ood_n: int = 200) -> tuple[TrustState, dict[str, Any]]:
    """The fitted state and the test-split report (calibration before/after, abstention, the gate)."""
    x_tr, y_tr = _subset(torch.as_tensor(splits["train"][0]), torch.as_tensor(splits["train"][1]).flatten().long(),
                         max_train_images, seed)
    _, f_tr = logits_and_features(net, x_tr)
    gate = fit_mahalanobis(f_tr, y_tr)
    l_va, f_va = logits_and_features(net, splits["val"][0])
    y_va = torch.as_tensor(splits["val"][1]).flatten().long().cpu()
    temperature = fit_temperature(l_va, y_va)
    p_va = (l_va / temperature).softmax(1)
    p_va_tta = tta_proba_calibrated(net, splits["val"][0], temperature)
    s_va = mahalanobis_score(f_va, gate["means"], gate["precision"])
    state = TrustState(temperature=temperature,
                       abstain_below=abstain_threshold(p_va.max(1).values, p_va.argmax(1) == y_va, MAX_ERROR),
                       max_error=MAX_ERROR, ood_means=gate["means"], ood_precision=gate["precision"],
                       ood_threshold=accept_threshold(s_va, ID_ACCEPT), id_accept=ID_ACCEPT,
                       feature_layer=feature_layer(net)[0],
                       abstain_below_tta=abstain_threshold(p_va_tta.max(1).values, p_va_tta.argmax(1) == y_va, MAX_ERROR),
                       conformal=(ConformalSets.fit(p_va, y_va, SetOptions(DEFAULT_COVERAGE))  # none on a tiny validation split
                                  if len(y_va) >= min_calibration_images(DEFAULT_COVERAGE) else None))
    return state, evaluate_trust(net, state, splits["test"], far_ood_n=far_ood_n, seed=seed,
                                 fitted_on={"train_images": len(y_tr), "val_images": len(y_va),
                                            "shrinkage": gate["shrinkage"]})


def evaluate_trust(net: nn.Module, state: TrustState, test: tuple[Any, Any], far_ood_n: int = 200, seed: int = 0,
                   fitted_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores of a fitted state on the test split and on the far-OOD sets (results.json's ``trust``)."""
    logits, feats = logits_and_features(net, test[0])
    labels = torch.as_tensor(test[1]).flatten().long().cpu()
    before = logits.softmax(1)
    out = state.assess(logits, feats)
    after = out["proba"]
    correct = after.argmax(1) == labels
    selective = selective_scores(out["confidence"], correct)
    accepted = ~out["abstain"]
    size = int(torch.as_tensor(test[0]).shape[1])
    far = {}
    all_ood = []
    for name, imgs in far_ood_sets(size, n=far_ood_n, seed=seed).items():
        lo, fo = logits_and_features(net, imgs)
        scores = mahalanobis_score(fo, state.ood_means, state.ood_precision)
        all_ood.append(scores)
        far[name] = _far_ood_entry(out["ood_score"], scores, state.ood_threshold)
    far["all"] = _far_ood_entry(out["ood_score"], torch.cat(all_ood), state.ood_threshold)
    return {
        "test_acc": float((before.argmax(1) == labels).double().mean()),  # fp32, as predict computes it
        "temperature": state.temperature,
        "calibration": {"before": calibration_scores(before, labels), "after": calibration_scores(after, labels)},
        "reliability": {"before": reliability_bins(before, labels), "after": reliability_bins(after, labels)},
        "selective": {**selective, "abstain_below": state.abstain_below, "abstain_below_tta": state.abstain_below_tta,
                      "max_error": state.max_error,
                      "coverage": float(accepted.double().mean()),
                      "accepted_acc": float(correct[accepted].double().mean()) if accepted.any() else None,
                      "curve": curve_points(out["confidence"], correct)},
        "gate": {"threshold": state.ood_threshold, "id_accept": state.id_accept, "feature_layer": state.feature_layer,
                 "fires_on_test": float((~out["in_distribution"]).double().mean()), "far_ood": far,
                 "warning": gate_warning(far["all"]["auroc"])},
        "sets": set_report(state.conformal, after, labels),
        "fitted_on": fitted_on or {},
    }


def set_report(conformal: ConformalSets | None, proba: torch.Tensor, labels: torch.Tensor) -> dict[str, Any] | None:
    """The prediction sets' fitted values and, on these images, their empirical ``coverage`` (against
    ``target_coverage``), mean size and share of single-class sets; None without a conformal threshold."""
    if conformal is None:
        return None
    fitted = conformal.to_dict()
    return {"target_coverage": fitted.pop("coverage"), **fitted, **set_scores(conformal.sets(proba), labels)}


def _far_ood_entry(id_scores: torch.Tensor, ood_scores: torch.Tensor, threshold: float) -> dict[str, Any]:
    """AUROC, FPR at 95 % TPR, and how many of the set the gate turns away (count and share)."""
    away = ood_scores > threshold
    return {**gate_scores(id_scores, ood_scores), "fires": float(away.double().mean()), "turned_away": int(away.sum())}


def summary(report: dict[str, Any]) -> dict[str, float]:
    """Flat scalars for trackers and tables (``trust/...``)."""
    cal, sel, gate, sets = report["calibration"], report["selective"], report["gate"], report.get("sets")
    extra = {"trust/set_coverage": sets["coverage"], "trust/set_size": sets["mean_size"]} if sets else {}
    return {"trust/test_acc": report["test_acc"], "trust/temperature": report["temperature"], "trust/ece_before": cal["before"]["ece"],
            "trust/ece_after": cal["after"]["ece"], "trust/nll_before": cal["before"]["nll"],
            "trust/nll_after": cal["after"]["nll"], "trust/brier_before": cal["before"]["brier"],
            "trust/brier_after": cal["after"]["brier"], "trust/aurc": sel["aurc"], "trust/augrc": sel["augrc"],
            "trust/acc_at_90": sel["acc_at_90"], "trust/acc_at_95": sel["acc_at_95"],
            "trust/coverage": sel["coverage"], "trust/far_ood_auroc": gate["far_ood"]["all"]["auroc"],
            "trust/far_ood_fpr95": gate["far_ood"]["all"]["fpr_at_95_tpr"],
            "trust/far_ood_turned_away": gate["far_ood"]["all"]["fires"], "trust/gate_fires_on_test": gate["fires_on_test"],
            **extra}
