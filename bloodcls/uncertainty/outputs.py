"""A network's outputs on a set of images, computed once: logits (of every TTA view when asked) and features.

Every fit, score and judgement of a split reads these instead of running the network again: the trust fit
takes the validation split's single-view logits from the first of its eight views, and the gate's features
from that same (unrotated) pass. Eval mode, fp32 without autocast, batches moved to the network's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bloodcls.common.tensors import to_float_images
from bloodcls.common.tta import eight_views
from bloodcls.uncertainty.ood import feature_layer, penultimate


@dataclass
class NetworkOutputs:
    """Plain CPU tensors: ``logits`` N x C and ``features`` N x D of the images as they are, and ``views``
    V x N x C, the logits of the 8 rotations/flips (``views[0]`` is ``logits``) when TTA was computed."""

    logits: torch.Tensor
    features: torch.Tensor
    views: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.logits)

    def for_judgement(self, tta: bool) -> torch.Tensor:
        """The logits a judgement reads: the 8 views (V x N x C) with ``tta``, else the single view (N x C)."""
        if tta and self.views is None:
            raise ValueError("these outputs were computed without TTA views")
        return self.views if tta else self.logits

    def subset(self, index: torch.Tensor | np.ndarray) -> NetworkOutputs:
        """The outputs of some of the images (a hold-out part, the images the gate accepts)."""
        index = torch.as_tensor(index)
        return NetworkOutputs(self.logits[index], self.features[index],
                              None if self.views is None else self.views[:, index])


@torch.no_grad()
def network_outputs(net: nn.Module, images: torch.Tensor | np.ndarray, tta: bool = False, batch_size: int = 256,
                    device: torch.device | str | None = None) -> NetworkOutputs:
    """The outputs of N x S x S x 3 uint8 images, or float N x 3 x S x S images in [0, 1]; ``tta``: also the
    logits of the 8 rotations/flips, in the same pass over the images (8 forward passes per image, not 9)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:  # Pillow's arrays: torch warns on those
        images = images.copy()
    images = torch.as_tensor(images)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    logits: list[torch.Tensor] = []
    features: list[torch.Tensor] = []
    try:
        with penultimate(net) as seen, torch.autocast(device.type, enabled=False):
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(device)
                x = to_float_images(x) if x.dtype == torch.uint8 else x.float()
                batch = []
                for v in (eight_views(x) if tta else [x]):
                    batch.append(net(v.contiguous(memory_format=torch.channels_last)).float().cpu())
                    if len(batch) == 1:  # the unrotated view: the gate reads its features
                        features.append(seen[-1].cpu())
                    seen.clear()
                logits.append(torch.stack(batch))
    finally:
        net.train(was_training)
    if not logits:
        empty = torch.zeros(8 if tta else 1, 0, class_count(net))
        return NetworkOutputs(empty[0], torch.zeros(0, 0), empty if tta else None)
    views = torch.cat(logits, dim=1)  # V x N x C
    return NetworkOutputs(views[0].clone(), torch.cat(features), views if tta else None)


def class_count(net: nn.Module) -> int:
    """The number of classes the network's classifier scores."""
    return int(feature_layer(net)[1].out_features)
