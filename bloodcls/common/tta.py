"""Test-time augmentation over the dihedral group: blood cells have no preferred orientation."""

from __future__ import annotations

import torch
from torch import nn


def eight_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The dihedral group of a square batch (N x C x S x S): four rotations, each with and without a flip."""
    views = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        views += [r, torch.flip(r, dims=(3,))]
    return views


def tta_proba(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities averaged over the eight rotations/flips of ``x`` (float32, N x classes)."""
    return torch.stack([net(v).float().softmax(dim=1) for v in eight_views(x)]).mean(dim=0)
