"""Stored images to network inputs: the one place that conversion happens."""

from __future__ import annotations

import torch

PIXEL_SCALE = 255  # stored uint8 values are divided by this: network inputs lie in [0, 1]


def to_float_images(u8: torch.Tensor) -> torch.Tensor:
    """N x S x S x 3 uint8 (how images are stored) -> N x 3 x S x S float in [0, 1] (what the networks take).

    Training batches, the shift suite and predict all use it. The result keeps the NHWC memory layout, i.e. it
    is channels_last already.
    """
    return u8.permute(0, 3, 1, 2).float().div_(PIXEL_SCALE)
