"""How prediction sets did on labelled images: coverage, size, per class, and size-stratified (TorchCP's metrics).

Coverage is the share of images whose set holds the true class (TorchCP's ``coverage_rate``), the mean set size
its ``average_size``. Per class: the same over the images of each class, whose worst value is what a lab with a
rare class needs to read (TorchCP's class-conditional ``coverage_rate(..., "macro")`` averages them). SSCV, the
size-stratified coverage violation (Angelopoulos et al., 2021; TorchCP's ``SSCV``): images grouped by set size
(0-1, 2-3, 4-10, 11-100, 101-1000 classes), the largest distance between a group's coverage and the target.
"""

from __future__ import annotations

from typing import Any

import torch

SIZE_STRATA = ((0, 1), (2, 3), (4, 10), (11, 100), (101, 1000))  # TorchCP's SSCV default strata


def set_scores(inside: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """Empirical coverage, mean set size and share of single-class sets (None each over no image)."""
    if not len(labels):
        return {"coverage": None, "mean_size": None, "singletons": None}
    size = inside.sum(1).double()
    return {"coverage": float(_covered(inside, labels).mean()), "mean_size": float(size.mean()),
            "singletons": float((size == 1).double().mean())}


def _covered(inside: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return inside.gather(1, labels.long().cpu().view(-1, 1)).flatten().double()


def per_class(inside: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> list[dict[str, Any]]:
    """Per class: its images, their coverage and mean set size (None for a class with no image)."""
    labels = labels.long().cpu()
    out = []
    for c, name in enumerate(class_names):
        mine = labels == c
        scores = set_scores(inside[mine], labels[mine])
        out.append({"class": name, "images": int(mine.sum()), "coverage": scores["coverage"],
                    "mean_size": scores["mean_size"]})
    return out


def size_stratified(inside: torch.Tensor, labels: torch.Tensor, target: float) -> dict[str, Any]:
    """SSCV (None over no image) and each non-empty size stratum's images and coverage."""
    size, covered = inside.sum(1), _covered(inside, labels)
    strata = []
    for lo, hi in SIZE_STRATA:
        mine = (size >= lo) & (size <= hi)
        if mine.any():
            strata.append({"sizes": f"{lo}-{hi}", "images": int(mine.sum()), "coverage": float(covered[mine].mean())})
    return {"sscv": max((abs(target - s["coverage"]) for s in strata), default=None), "strata": strata}


def set_report(inside: torch.Tensor, labels: torch.Tensor, target: float, class_names: list[str],
               accepted: torch.Tensor | None = None) -> dict[str, Any]:
    """Every figure of the sets, over the images the gate accepts (``accepted``; all when None), with the share
    it refused beside them: marginal coverage, size and singletons, per class (and the worst class's coverage),
    and SSCV."""
    n = len(labels)
    keep = torch.ones(n, dtype=torch.bool) if accepted is None else accepted.bool().cpu()
    inside, labels = inside[keep], labels.long().cpu()[keep]
    classes = per_class(inside, labels, class_names)
    covered = [c["coverage"] for c in classes if c["coverage"] is not None]
    return {"target_coverage": target, "images": int(keep.sum()),
            "gate_refused_share": float((~keep).double().mean()) if n else None,
            **set_scores(inside, labels), "worst_class_coverage": min(covered, default=None),
            "per_class": classes, **size_stratified(inside, labels, target)}
