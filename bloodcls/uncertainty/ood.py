"""The "not a blood-cell image" gate: Mahalanobis distance on the classifier's penultimate features.

Class means and one shared covariance fitted on the training split (Lee et al., 2018), the strong simple
baseline of the medical OOD studies; the score is half the squared distance to the closest class mean (as
pytorch-ood's ``Mahalanobis`` scores), and the gate fires above a threshold set on the validation split so
that at least 95 % of in-distribution images pass (with 95 % confidence, see ``accept_threshold``).

The covariance is Ledoit-Wolf shrunk (scikit-learn), not pytorch-ood's unnormalised sum plus 1e-6 I: units
that are dead on the training images (ReLU networks have some) or few images per class leave that sum
near-singular, its inverse then weighs a dead unit's slightest activation a million-fold, and a trained
network's gate let 20 % of non-cell images through (issue 30; docs/results/trust.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ID_ACCEPT = 0.95  # share of in-distribution validation images the gate lets through
MIN_FAR_OOD_AUROC = 0.99  # a run whose gate scores below this on the far-OOD sets is reported as unreliable


def feature_layer(net: nn.Module) -> tuple[str, nn.Linear]:
    """The network's last ``nn.Linear`` (its classifier): the gate reads that layer's input."""
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(net).__name__} has no nn.Linear classifier whose input could serve as features")
    return found[-1]


@contextmanager
def penultimate(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the classifier's input features of every forward pass inside the block."""
    _, layer = feature_layer(net)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().float().flatten(1)))
    try:
        yield seen
    finally:
        handle.remove()


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """Class means and a well-conditioned shared precision matrix (plain float32 CPU tensors), and the
    Ledoit-Wolf shrinkage used: the covariance of the class-centred features, fitted in float64 and shrunk
    towards a scaled identity, so constant (dead) units and few images per class keep it invertible."""
    from sklearn.covariance import LedoitWolf

    z, y = features.detach().double().cpu(), labels.detach().long().cpu().flatten()
    n_classes = int(y.max()) + 1 if len(y) else 0
    counts = torch.bincount(y, minlength=n_classes)
    if len(y) < 2 or (counts == 0).any():
        raise ValueError(f"the gate needs images of every class 0..{n_classes - 1}; got counts {counts.tolist()}")
    means = torch.stack([z[y == c].mean(dim=0) for c in range(n_classes)])
    lw = LedoitWolf(assume_centered=True).fit((z - means[y]).numpy())
    return {"means": means.float().contiguous(), "precision": torch.from_numpy(lw.precision_).float().contiguous(),
            "shrinkage": float(lw.shrinkage_)}


def mahalanobis_score(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Outlier score (larger = less like the training images): half the squared Mahalanobis distance to the
    closest class mean (a test checks it against scikit-learn's), in float64. Plain torch, so predict and
    the demo import neither scikit-learn nor SciPy per image."""
    z = features.double()
    centred = z[:, None, :] - means.to(z)[None]  # N x C x D
    d2 = torch.einsum("ncd,de,nce->nc", centred, precision.to(z), centred)
    return (0.5 * d2.min(dim=1).values).float()


def gate_warning(far_ood_auroc: float) -> str | None:
    """One sentence for the log and the trust report when a gate's far-OOD AUROC is below ``MIN_FAR_OOD_AUROC``."""
    if far_ood_auroc >= MIN_FAR_OOD_AUROC:
        return None
    return (f"the 'not a blood-cell image' gate scores a far-OOD AUROC of {far_ood_auroc:.4f}, below "
            f"{MIN_FAR_OOD_AUROC}: it lets non-cell images through. Refit it with `bloodcls trust "
            "<run folder> --refit`, and see docs/guide/trust.md if it stays low.")


def accept_threshold(id_scores: torch.Tensor, accept: float = ID_ACCEPT, confidence: float = 0.95) -> float:
    """The gate's threshold from in-distribution (validation) scores: an upper order statistic chosen so
    that, with ``confidence``, at least ``accept`` of new in-distribution images fall at or below it
    (a distribution-free tolerance bound; the plain ``accept`` quantile would accept 95 % only on
    average, i.e. turn away more than 5 % of clean images about half the time)."""
    from scipy.stats import binom

    scores = torch.sort(id_scores.double()).values
    n = len(scores)
    k = int(binom.ppf(confidence, n, accept)) + 1  # rank (1-based) whose coverage is >= accept w.p. confidence
    return float(scores[min(n, max(1, k)) - 1])


def gate_scores(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    """AUROC (pytorch-ood; OOD positive) and the share of OOD images let through when 95 % of the
    in-distribution images are accepted (FPR at 95 % TPR, in-distribution as the positive class)."""
    from pytorch_ood.metrics import AUROC

    scores = torch.cat([id_scores, ood_scores]).float().cpu()
    labels = torch.cat([torch.zeros(len(id_scores)), -torch.ones(len(ood_scores))]).long()
    auroc = float(AUROC().update(scores, labels).compute()["AUROC"])
    cut = float(torch.quantile(id_scores.double(), ID_ACCEPT))
    return {"auroc": auroc, "fpr_at_95_tpr": float((ood_scores.double() <= cut).double().mean()), "n_ood": len(ood_scores)}
