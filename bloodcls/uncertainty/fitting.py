"""Fit the trust state of a trained network, and score it on the test split.

The trust-fitting sequence exists once, in :func:`fit_calibration`: on labelled images the network never trained
on (the validation split after training; a lab's images in ``bloodcls calibrate``) it fits the temperature, the
review thresholds (single view and TTA), the gate's threshold on those images' distances to the class means, and
the conformal sets on single-view and on TTA probabilities. :func:`fit_trust` adds what only training has: the
gate's class means and covariance from a stratified sample of the training split, and the test split's report.
Each split's logits (every view) and features are computed once (:mod:`bloodcls.uncertainty.outputs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bloodcls.common.sampling import stratified_sample
from bloodcls.errors import UserError
from bloodcls.uncertainty.calibration import calibration_scores, fit_temperature, reliability_bins
from bloodcls.uncertainty.conformal import (
    ConformalSets,
    SetOptions,
    check_class_counts,
    min_calibration_images,
)
from bloodcls.uncertainty.far_ood import far_ood_sets
from bloodcls.uncertainty.judgement import calibrated_proba, judge
from bloodcls.uncertainty.ood import (
    ID_ACCEPT,
    accept_threshold,
    feature_layer,
    fit_mahalanobis,
    gate_scores,
    gate_warning,
)
from bloodcls.uncertainty.outputs import NetworkOutputs, class_count, network_outputs
from bloodcls.uncertainty.scores import sets_scores
from bloodcls.uncertainty.selective import abstain_threshold, curve_points, selective_scores
from bloodcls.uncertainty.state import TrustState

MAX_ERROR = 0.01  # abstention: validation error rate of the accepted predictions
DEFAULT_SETS = SetOptions()  # 90 % sets, the default score, one threshold for all classes


def _labels(y: Any) -> torch.Tensor:
    return torch.as_tensor(y).detach().cpu().flatten().long()


def check_fit_data(labels: dict[str, Any], n_classes: int, class_names: list[str],
                   sets: SetOptions | None = None) -> None:
    """Refuse, in one paragraph, splits the trust fit cannot use, before any work (training calls it before its
    first epoch): a class without a training image (the gate needs each class's mean) and, for class-conditional
    sets, a class with too few validation images for the coverage asked."""
    counts = torch.bincount(_labels(labels["train"]), minlength=n_classes).tolist()
    missing = [class_names[c] for c in range(n_classes) if counts[c] == 0]
    if missing:
        raise UserError(f"The training split has no image of {', '.join(missing)}: the 'not a blood-cell image' gate "
                        "is fitted on each class's mean features, so every class of the model needs training "
                        "images. Add images of that class to the training data, or turn the trust fit off with "
                        "callbacks.trust=null.")
    if sets is not None and sets.per_class and "val" in labels:
        check_class_counts(torch.bincount(_labels(labels["val"]), minlength=n_classes).tolist(), sets.coverage,
                           class_names)


def _take(x: Any, index: np.ndarray) -> Any:
    return x[torch.as_tensor(index, device=x.device)] if isinstance(x, torch.Tensor) else np.asarray(x)[index]


def fit_gate(net: nn.Module, images: Any, labels: Any, max_images: int | None = None,
             seed: int = 0) -> tuple[dict[str, Any], int]:
    """The gate's class means and shrunk covariance on a seeded sample of ``images`` stratified by class (every
    class keeps its share, at least one image), and the number of images it used."""
    y = _labels(labels)
    index = np.sort(stratified_sample(y.numpy(), max_images, seed))
    return fit_mahalanobis(network_outputs(net, _take(images, index)).features, y[index]), len(index)


def fit_sets(proba: torch.Tensor | None, labels: torch.Tensor, options: SetOptions | None,
             class_names: list[str] | None = None) -> ConformalSets | None:
    """Conformal sets on these probabilities; None without options, or for one threshold on too few images (a
    tiny validation split). Class-conditional sets refuse a class with too few images (UserError)."""
    if proba is None or options is None:
        return None
    if not options.per_class and len(labels) < min_calibration_images(options.coverage):
        return None
    return ConformalSets.fit(proba, labels, options, class_names)


def fit_calibration(outputs: NetworkOutputs, labels: Any, means: torch.Tensor, precision: torch.Tensor,
                    layer: str, sets: SetOptions | None = DEFAULT_SETS, class_names: list[str] | None = None,
                    id_accept: float = ID_ACCEPT, max_error: float = MAX_ERROR) -> TrustState:
    """The trust state fitted on labelled images the network never trained on (``outputs`` with TTA views for
    the TTA review threshold and sets), with the gate's class means and precision given."""
    y = _labels(labels)
    temperature = fit_temperature(outputs.logits, y)
    proba = calibrated_proba(outputs.logits, temperature)
    tta = calibrated_proba(outputs.views, temperature) if outputs.views is not None else None
    state = TrustState(temperature=temperature, max_error=max_error, ood_means=means, ood_precision=precision,
                       abstain_below=abstain_threshold(proba.max(1).values, proba.argmax(1) == y, max_error),
                       ood_threshold=0.0, id_accept=id_accept, feature_layer=layer,
                       abstain_below_tta=(abstain_threshold(tta.max(1).values, tta.argmax(1) == y, max_error)
                                          if tta is not None else None),
                       conformal=fit_sets(proba, y, sets, class_names),
                       conformal_tta=fit_sets(tta, y, sets, class_names))
    state.ood_threshold = accept_threshold(judge(outputs.logits, outputs.features, state).gate_score, id_accept)
    return state


def fit_trust(net: nn.Module, splits: dict[str, tuple[Any, Any]], max_train_images: int | None = None,
              seed: int = 0, far_ood_n: int = 200, sets: SetOptions | None = DEFAULT_SETS,
              class_names: list[str] | None = None) -> tuple[TrustState, dict[str, Any]]:
    """The fitted state and the test-split report (calibration before/after, abstention, the gate, the sets)."""
    names = class_names or [f"class {c}" for c in range(class_count(net))]
    check_fit_data({s: y for s, (_, y) in splits.items()}, class_count(net), names, sets)
    gate, n_train = fit_gate(net, *splits["train"], max_train_images, seed)
    val = network_outputs(net, splits["val"][0], tta=True)  # single view = view 0, computed once
    state = fit_calibration(val, splits["val"][1], gate["means"], gate["precision"], feature_layer(net)[0], sets,
                            names)
    fitted_on = {"train_images": n_train, "val_images": len(val), "shrinkage": gate["shrinkage"]}
    return state, evaluate_trust(net, state, splits["test"], far_ood_n=far_ood_n, seed=seed, fitted_on=fitted_on,
                                 class_names=names)


def evaluate_trust(net: nn.Module, state: TrustState, test: tuple[Any, Any], far_ood_n: int = 200, seed: int = 0,
                   fitted_on: dict[str, Any] | None = None, class_names: list[str] | None = None) -> dict[str, Any]:
    """Scores of a fitted state on the test split and on the far-OOD sets (results.json's ``trust``)."""
    outputs = network_outputs(net, test[0])
    labels = _labels(test[1])
    names = class_names or [f"class {c}" for c in range(outputs.logits.shape[1])]
    before = calibrated_proba(outputs.logits)
    judged = judge(outputs.logits, outputs.features, state)
    correct = judged.predicted == labels
    accepted = ~judged.review
    size = int(torch.as_tensor(test[0]).shape[1])
    far, all_ood = {}, []
    for name, imgs in far_ood_sets(size, n=far_ood_n, seed=seed).items():
        ood = network_outputs(net, imgs)
        scores = judge(ood.logits, ood.features, state).gate_score
        all_ood.append(scores)
        far[name] = _far_ood_entry(judged.gate_score, scores, state.ood_threshold)
    far["all"] = _far_ood_entry(judged.gate_score, torch.cat(all_ood), state.ood_threshold)
    return {
        "test_acc": float((before.argmax(1) == labels).double().mean()),  # fp32, as predict computes it
        "temperature": state.temperature,
        "calibration": {"before": calibration_scores(before, labels), "after": calibration_scores(judged.proba, labels)},
        "reliability": {"before": reliability_bins(before, labels), "after": reliability_bins(judged.proba, labels)},
        "selective": {**selective_scores(judged.confidence, correct), "abstain_below": state.abstain_below,
                      "abstain_below_tta": state.abstain_below_tta, "max_error": state.max_error,
                      "coverage": float(accepted.double().mean()),
                      "accepted_acc": float(correct[accepted].double().mean()) if accepted.any() else None,
                      "curve": curve_points(judged.confidence, correct)},
        "gate": {"threshold": state.ood_threshold, "id_accept": state.id_accept, "feature_layer": state.feature_layer,
                 "fires_on_test": float((~judged.accepted).double().mean()), "far_ood": far,
                 "warning": gate_warning(far["all"]["auroc"])},
        # over the test images the gate accepts (gate_refused_share beside it), single view
        "sets": sets_scores(judged, labels, names, state.conformal),
        "fitted_on": fitted_on or {},
    }


def _far_ood_entry(id_scores: torch.Tensor, ood_scores: torch.Tensor, threshold: float) -> dict[str, Any]:
    """AUROC, FPR at 95 % TPR, and how many of the set the gate turns away (count and share)."""
    away = ood_scores > threshold
    return {**gate_scores(id_scores, ood_scores), "fires": float(away.double().mean()), "turned_away": int(away.sum())}


def summary(report: dict[str, Any]) -> dict[str, float]:
    """Flat scalars for trackers and tables (``trust/...``)."""
    cal, sel, gate, sets = report["calibration"], report["selective"], report["gate"], report.get("sets")
    extra = {f"trust/{out}": sets[key] for out, key in (("set_coverage", "coverage"), ("set_size", "mean_size"),
                                                         ("set_worst_class", "worst_class_coverage"))
             if sets and sets.get(key) is not None}
    return {"trust/test_acc": report["test_acc"], "trust/temperature": report["temperature"], "trust/ece_before": cal["before"]["ece"],
            "trust/ece_after": cal["after"]["ece"], "trust/nll_before": cal["before"]["nll"],
            "trust/nll_after": cal["after"]["nll"], "trust/brier_before": cal["before"]["brier"],
            "trust/brier_after": cal["after"]["brier"], "trust/aurc": sel["aurc"], "trust/augrc": sel["augrc"],
            "trust/acc_at_90": sel["acc_at_90"], "trust/acc_at_95": sel["acc_at_95"],
            "trust/coverage": sel["coverage"], "trust/far_ood_auroc": gate["far_ood"]["all"]["auroc"],
            "trust/far_ood_fpr95": gate["far_ood"]["all"]["fpr_at_95_tpr"],
            "trust/far_ood_turned_away": gate["far_ood"]["all"]["fires"], "trust/gate_fires_on_test": gate["fires_on_test"],
            **extra}
