"""The study's baseline CNN and its U-Net-encoder variant: three conv blocks and a dense head.

Both share one layout and differ only in dropout rates and head width, so one class serves both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bloodcls.models.layers import ConvReLUBN, classifier_head, keras_init_
from bloodcls.models.registry import register_model


class PlainCNN(nn.Module):
    """[Conv3x3 -> ReLU -> BN -> MaxPool -> Dropout] x 3, Flatten, Dense head."""

    def __init__(
        self,
        img_size: int = 128,
        num_classes: int = 8,
        widths: Sequence[int] = (32, 64, 128),
        block_dropout: Sequence[float] = (0.25, 0.25, 0.3),
        hidden: int = 128,
        head_dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        blocks = []
        c_in = in_channels
        for width, p in zip(widths, block_dropout, strict=True):
            blocks.append(nn.Sequential(ConvReLUBN(c_in, width), nn.MaxPool2d(2), nn.Dropout(p)))
            c_in = width
        self.features = nn.Sequential(*blocks)
        side = img_size
        for _ in widths:
            side //= 2  # Keras MaxPool 'valid' floors odd sides (28 -> 14 -> 7 -> 3)
        self.flatten = nn.Flatten()
        self.classifier = classifier_head(c_in * side * side, hidden, head_dropout, num_classes)
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


@register_model("baseline", experiments=("baseline_64", "baseline_128", "baseline_aug"))
def baseline(img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> PlainCNN:
    """Experiment 1: the baseline CNN (dropout 0.25/0.25/0.3, Dense(128), dropout 0.5)."""
    s = dropout_scale
    return PlainCNN(img_size, num_classes, block_dropout=(0.25 * s, 0.25 * s, 0.3 * s), hidden=128, head_dropout=0.5 * s)


@register_model("unet", experiments=("unet",))
def unet(img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> PlainCNN:
    """Experiment 2: U-Net-encoder CNN (dropout 0.1/0.15/0.2, Dense(64), dropout 0.3)."""
    s = dropout_scale
    return PlainCNN(img_size, num_classes, block_dropout=(0.1 * s, 0.15 * s, 0.2 * s), hidden=64, head_dropout=0.3 * s)
