"""Building blocks shared by the ported Keras architectures.

Keras orders a block as Conv -> ReLU -> BatchNorm and initialises with Glorot-uniform weights and
zero biases; its BatchNorm momentum 0.99 is PyTorch's 0.01 and its epsilon is 1e-3. Matching these
keeps the port's training dynamics close to the study's.
"""

from __future__ import annotations

from torch import nn

BN_MOMENTUM = 0.01
BN_EPS = 1e-3


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvReLU(nn.Sequential):
    """Keras ``Conv2D(..., padding='same', activation='relu')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
        )


class ConvReLUBN(nn.Sequential):
    """Keras ``Conv2D(relu)`` followed by ``BatchNormalization``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            batch_norm(out_channels),
        )


def keras_init_(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and dense layer, as Keras does."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def classifier_head(in_features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    """Dense(hidden, relu) -> Dropout -> Dense(num_classes); logits out (softmax lives in the loss)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
