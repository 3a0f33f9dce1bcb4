"""Abstention: the risk-coverage curve of the calibrated confidence, its areas, and the review threshold.

AURC (Geifman et al., 2019) and AUGRC (Traub et al., 2024) are computed here in a few lines: neither
torchmetrics nor pytorch-ood has them. Risk is the error rate among the accepted images; the
generalized risk counts an accepted error against all images, which AUGRC averages over coverages.
"""

from __future__ import annotations

import torch


def _sorted_errors(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(confidence, descending=True, stable=True)
    return (~correct[order].bool()).double()


def risk_coverage(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coverage, risk) when accepting the k most confident images, k = 1..N."""
    errors = _sorted_errors(confidence, correct)
    k = torch.arange(1, len(errors) + 1, dtype=torch.float64)
    return k / len(errors), errors.cumsum(0) / k


def curve_points(confidence: torch.Tensor, correct: torch.Tensor, points: int = 100) -> dict[str, list[float]]:
    """The risk-coverage curve at ``points`` evenly spaced coverages (1/points .. 1), small enough for
    results.json: what a reader uses to pick an operating point, beyond its area."""
    coverage, risk = risk_coverage(confidence, correct)
    n = len(coverage)
    k = sorted({max(1, round(n * i / points)) for i in range(1, points + 1)})
    return {"coverage": [float(coverage[j - 1]) for j in k], "risk": [float(risk[j - 1]) for j in k]}


def selective_scores(confidence: torch.Tensor, correct: torch.Tensor,
                     coverages: tuple[float, ...] = (0.9, 0.95)) -> dict[str, float]:
    """AURC, AUGRC (both as error rates, lower is better) and accuracy at the given coverages."""
    coverage, risk = risk_coverage(confidence, correct)
    scores = {"aurc": float(risk.mean()), "augrc": float((risk * coverage).mean())}
    n = len(coverage)
    for c in coverages:
        k = max(1, int(round(c * n)))
        scores[f"acc_at_{round(c * 100)}"] = float(1 - risk[k - 1])
    return scores


def abstain_threshold(confidence: torch.Tensor, correct: torch.Tensor, max_error: float = 0.01) -> float:
    """The lowest confidence t such that the images with confidence >= t have an error rate <= ``max_error``
    (fitted on validation); predictions below t are sent for review. If no t qualifies, the highest
    confidence seen (almost everything is reviewed)."""
    values, inverse = torch.unique(confidence.double(), sorted=True, return_inverse=True)  # ascending
    errors = (~correct.bool()).double()
    count = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(errors))
    wrong = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, errors)
    at_or_above = count.flip(0).cumsum(0).flip(0)
    wrong_above = wrong.flip(0).cumsum(0).flip(0)
    ok = torch.nonzero(wrong_above / at_or_above <= max_error).flatten()
    return float(values[ok[0]] if len(ok) else values[-1])
