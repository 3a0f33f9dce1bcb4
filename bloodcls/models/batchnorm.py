"""BatchNorm statistics recomputed for a network's current weights, without labels and without training.

Shared by training (precise statistics before validation and the test: :mod:`bloodcls.training.batchnorm`)
and by anything that takes a trained network to new images: it lives here, below both, so inference can
use it without Lightning.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def batchnorm_buffers(net: nn.Module) -> set[str]:
    """The state_dict names of every BatchNorm layer's statistics (running mean and variance, batch count): all
    that recomputing them changes."""
    return {f"{prefix}.{buffer}" if prefix else buffer
            for prefix, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for buffer in ("running_mean", "running_var", "num_batches_tracked")}


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm's running mean/variance to their average over ``batches``; returns the batch count.

    The network runs in eval mode except its BatchNorm layers (so dropout is off); each layer's
    momentum and the network's train/eval mode are restored afterwards.
    """
    norms = batchnorm_layers(net)
    if not norms:
        return 0
    was_training, momenta = net.training, [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
        m.train()
    count = 0
    for x in batches:
        net(x)
        count += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)
    return count
