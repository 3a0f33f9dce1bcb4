"""Post-hoc temperature scaling (Guo et al., 2017) and the calibration scores reported before and after.

The temperature is one scalar fitted on the validation split by minimising the negative log-likelihood
with L-BFGS over log T (so T stays positive). Maintained implementations (torch-uncertainty's
``TemperatureScaler``) do the same few lines but would pull a large dependency tree into every install.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 that minimises NLL(softmax(logits / T), labels); argmax is unchanged by T.

    Gradients are switched back on: Lightning calls ``on_test_end`` inside ``torch.inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().clone().double(), labels.detach().clone().long()
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        opt.step(closure)
        return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibration_scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Expected calibration error (torchmetrics, 15 equal-width bins, top-label), NLL and multiclass Brier score."""
    probs, labels = probs.detach().float(), labels.detach().long()
    onehot = F.one_hot(labels, probs.shape[1]).float()
    return {
        "ece": float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")),
        "nll": float(F.nll_loss(probs.clamp_min(1e-12).log(), labels)),
        "brier": float(((probs - onehot) ** 2).sum(dim=1).mean()),
    }


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin: its range, count, mean confidence and accuracy (the reliability diagram's bars)."""
    conf, pred = probs.max(dim=1)
    edges = torch.linspace(0, 1, n_bins + 1)
    out = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        inside = (conf > lo) & (conf <= hi)
        n = int(inside.sum())
        out.append({"lo": lo, "hi": hi, "count": n,
                    "confidence": float(conf[inside].mean()) if n else None,
                    "accuracy": float((pred[inside] == labels[inside]).float().mean()) if n else None})
    return out
