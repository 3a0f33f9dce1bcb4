"""Test-time augmentation over the dihedral group: blood cells have no preferred orientation.

:func:`average_views` is the one place views are averaged: the test's TTA score, predict, the demo, evaluate,
calibrate and the trust fit all reach it (through :func:`tta_proba` or :mod:`bloodcls.uncertainty.judgement`).
"""

from __future__ import annotations

import torch
from torch import nn

N_VIEWS = 8


def eight_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The dihedral group of a square batch (N x C x S x S): four rotations, each with and without a flip; the
    first view is ``x`` itself."""
    views = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        views += [r, torch.flip(r, dims=(3,))]
    return views


def average_views(view_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """V x N x C logits of the views -> N x C: the mean over views of softmax(logits / temperature)."""
    return (view_logits.float() / temperature).softmax(dim=-1).mean(dim=0)


def tta_proba(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities averaged over the eight rotations/flips of ``x`` (float32, N x classes)."""
    return average_views(torch.stack([net(v).float() for v in eight_views(x)]))
