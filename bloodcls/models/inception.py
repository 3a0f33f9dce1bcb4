"""The study's Inception CNN and its Inception + skip hybrid."""

from __future__ import annotations

import torch
from torch import nn

from bloodcls.models.layers import ConvReLU, ConvReLUBN, classifier_head, keras_init_
from bloodcls.models.registry import register_model

# (f1, f3in, f3out, f5in, f5out, proj) of the study's two Inception blocks.
BLOCK1 = (16, 16, 24, 4, 8, 8)
BLOCK2 = (32, 32, 48, 8, 16, 16)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1, 1x1->3x3, 1x1->5x5, pool->1x1), each ending in BN, concatenated."""

    def __init__(self, in_channels: int, f1: int, f3in: int, f3out: int, f5in: int, f5out: int, proj: int) -> None:
        super().__init__()
        self.branch1x1 = ConvReLUBN(in_channels, f1, 1)
        self.branch3x3 = nn.Sequential(ConvReLU(in_channels, f3in, 1), ConvReLUBN(f3in, f3out, 3))
        self.branch5x5 = nn.Sequential(ConvReLU(in_channels, f5in, 1), ConvReLUBN(f5in, f5out, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvReLUBN(in_channels, proj, 1))
        self.out_channels = f1 + f3out + f5out + proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], dim=1)


class InceptionCNN(nn.Module):
    """Experiment 3: Conv3x3(32) -> pool -> Inception -> pool -> Inception -> pool -> GAP -> head.

    ``shortcuts=True`` is experiment 5, the hybrid: a BN stem and a linear 1x1 shortcut around each
    block. Layers are created in the same order either way, so a seed gives the same initial weights.
    """

    def __init__(self, img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0,
                 shortcuts: bool = False) -> None:
        super().__init__()
        self.img_size = img_size
        self.stem = (ConvReLUBN if shortcuts else ConvReLU)(3, 32, 3)
        self.pool = nn.MaxPool2d(2)
        self.inception1 = InceptionBlock(32, *BLOCK1)
        c1 = self.inception1.out_channels
        self.shortcut1 = nn.Conv2d(32, c1, 1) if shortcuts else None
        self.inception2 = InceptionBlock(c1, *BLOCK2)
        c2 = self.inception2.out_channels
        self.shortcut2 = nn.Conv2d(c1, c2, 1) if shortcuts else None
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = classifier_head(c2, 64, 0.3 * dropout_scale, num_classes)
        keras_init_(self)

    def _block(self, block: InceptionBlock, shortcut: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        return self.pool(block(x) if shortcut is None else block(x) + shortcut(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = self._block(self.inception1, self.shortcut1, x)
        x = self._block(self.inception2, self.shortcut2, x)
        return self.classifier(self.flatten(self.gap(x)))


class HybridCNN(InceptionCNN):
    """Experiment 5: the Inception CNN with a BN stem and a linear 1x1 shortcut around each block."""

    def __init__(self, img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> None:
        super().__init__(img_size, num_classes, dropout_scale, shortcuts=True)


@register_model("inception", experiments=("inception",))
def inception(img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> InceptionCNN:
    """Architecture 3: the Inception CNN (two inception blocks, global average pooling)."""
    return InceptionCNN(img_size, num_classes, dropout_scale)


@register_model("hybrid", experiments=("hybrid",))
def hybrid(img_size: int = 128, num_classes: int = 8, dropout_scale: float = 1.0) -> HybridCNN:
    """Architecture 5: the Inception + skip hybrid (inception blocks with 1x1-conv shortcuts)."""
    return HybridCNN(img_size, num_classes, dropout_scale)
