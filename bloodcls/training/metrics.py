"""Classification scores with torchmetrics: accuracy, macro and per-class P/R/F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

PER_CLASS = ("precision", "recall", "f1")


class WeightedMean(Metric):
    """Mean of per-batch values weighted by batch size, summed across DDP ranks when computed.

    torchmetrics' ``MeanMetric`` checks every update for NaNs (a host sync per batch on the GPU), and
    with that check disabled it drops the weights (torchmetrics 1.9). A NaN loss shows as a NaN score.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        self.total += value.detach().double().sum() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return (self.total / self.weight).float()


def classification_metrics(num_classes: int) -> MetricCollection:
    """One collection per stage; states are synced across DDP ranks when computed.

    ``validate_args=False``: the argument checks read tensor values back to the host on every update
    (a GPU sync per batch); the inputs are always the network's logits and integer labels.
    """
    kw = {"num_classes": num_classes, "validate_args": False}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(average="micro", **kw),
            "precision": MulticlassPrecision(average="macro", **kw),
            "recall": MulticlassRecall(average="macro", **kw),
            "f1": MulticlassF1Score(average="macro", **kw),
            "precision_per_class": MulticlassPrecision(average=None, **kw),
            "recall_per_class": MulticlassRecall(average=None, **kw),
            "f1_per_class": MulticlassF1Score(average=None, **kw),
            "confmat": MulticlassConfusionMatrix(**kw),
        }
    )


def flatten_scores(computed: dict[str, torch.Tensor], class_names: Sequence[str], prefix: str) -> dict[str, float]:
    """Scalar scores keyed like ``test/f1`` and ``test/f1/monocyte`` (the confusion matrix is left out)."""
    out: dict[str, float] = {}
    for name in ("acc", "precision", "recall", "f1"):
        out[f"{prefix}/{name}"] = float(computed[name])
    for name in PER_CLASS:
        values = computed[f"{name}_per_class"].tolist()
        for cls, value in zip(class_names, values, strict=True):
            out[f"{prefix}/{name}/{cls}"] = float(value)
    return out
