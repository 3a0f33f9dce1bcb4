"""The study's skip-connection (ResNet-style) CNN."""

from __future__ import annotations

import torch
from torch import nn

from bloodcls.models.layers import ConvReLUBN, classifier_head, keras_init_
from bloodcls.models.registry import register_model


class ResidualStage(nn.Sequential):
    """Two Conv3x3 -> ReLU -> BN layers; the shortcut (if any) is applied by the caller."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvReLUBN(in_channels, out_channels), ConvReLUBN(out_channels, out_channels))


class SkipCNN(nn.Module):
    """Experiment 4: three stages of 32/64/128 filters, linear 1x1 shortcuts on stages 2 and 3, GAP head."""

    def __init__(self, img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> None:
        super().__init__()
        self.img_size = img_size
        self.stage1 = ResidualStage(3, 32)
        self.stage2 = ResidualStage(32, 64)
        self.shortcut2 = nn.Conv2d(32, 64, 1)
        self.stage3 = ResidualStage(64, 128)
        self.shortcut3 = nn.Conv2d(64, 128, 1)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = classifier_head(128, 64, 0.3 * dropout_scale, num_classes)
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = self.pool(self.stage1(x))
        p2 = self.pool(self.stage2(p1) + self.shortcut2(p1))
        x = self.stage3(p2) + self.shortcut3(p2)
        return self.classifier(self.flatten(self.gap(x)))


@register_model("skip", experiments=("skip",))
def skip(img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> SkipCNN:
    """Architecture 4: the skip-connection (ResNet-style) CNN with 1x1-conv shortcuts."""
    return SkipCNN(img_size, num_classes, dropout_scale)
