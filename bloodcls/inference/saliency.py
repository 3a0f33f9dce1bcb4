"""Where a model looked: class-activation maps (captum) over the image, for any registered network.

A classifier that answers from the red cells around the white one, or from a stain artefact, is one
to distrust; a class-activation map shows that at a glance. The map is HiResCAM (Draelos & Carin,
2020), Grad-CAM's close relative that multiplies gradient and activation cell by cell instead of
averaging the gradient over the map first: the two agree on networks that end in global average
pooling (inception, skip, hybrid, timm's CNNs), but on the study's baseline and U-Net, whose dense
head sees every position separately, Grad-CAM's average pointed away from the evidence on a
corner-signal task (tests/test_saliency.py, 32 px baseline: 4-10 % of Grad-CAM's mass in the signal's
quadrant against 74-83 % of HiResCAM's). The layer is found, not configured (:func:`cam_layer`): the
input of the global pooling or flatten that ends the feature extractor, so the study's five CNNs and
timm's CNNs all work without a per-model table; a ViT gets its patch embedding. A network with no
spatial feature map at all gets captum's input-gradient saliency, smoothed to the same kind of map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SaliencyMap:
    """An ``S x S`` map in [0, 1] (1 where the evidence for ``target`` is strongest) and how it was made."""

    heat: np.ndarray
    target: int
    method: str  # "HiResCAM @ <layer>" or "input gradient"


def _spatial(t: object) -> bool:
    """A feature map (N x C x H x W, square, more than one cell), not an attention tensor."""
    return isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-1] == t.shape[-2] > 1


def cam_layer(net: nn.Module, img_size: int) -> tuple[str, nn.Module, bool] | None:
    """(name, module, use its input) for the map, or None when the network has no spatial feature map.

    First choice: the input of the module that reduces the last feature map to a vector (global pooling
    or flatten), which is the map after every branch has been merged (skip sums, inception concats).
    Otherwise the output of the last module that still gives a feature map.
    """
    reducers: list[tuple[str, nn.Module]] = []
    producers: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in net.named_modules()}

    def record(module: nn.Module, inputs, output) -> None:
        if inputs and _spatial(inputs[0]) and isinstance(output, torch.Tensor) and not _spatial(output):
            if output.dim() == 2 or (output.dim() == 4 and output.shape[-1] == output.shape[-2] == 1):
                reducers.append((names[module], module))
        if _spatial(output):
            producers.append((names[module], module))

    hooks = [m.register_forward_hook(record) for m in net.modules() if m is not net]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, img_size, img_size, device=_device(net)))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    inner = [(n, m) for n, m in reducers if not any(p is not m and p in set(m.modules()) for _, p in producers)]
    if inner:  # a wrapper around the whole network also "reduces" the image: take the innermost reducer
        return (*inner[-1], True)
    return (*producers[-1], False) if producers else None


def _device(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _normalise(heat: torch.Tensor) -> np.ndarray:
    heat = heat.detach().float()
    heat = heat - heat.min()
    top = float(heat.max())
    return (heat / top).cpu().numpy() if top > 0 else heat.cpu().numpy()


def saliency_map(net: nn.Module, x: torch.Tensor, target: int | None = None,
                 layer: tuple[str, nn.Module, bool] | None | bool = True) -> SaliencyMap:
    """HiResCAM of one image ``x`` (1 x 3 x S x S, in [0, 1] as the network takes it) for class ``target``
    (None: the predicted class), up-sampled bilinearly to S x S. ``layer``: what :func:`cam_layer` found for
    this network (callers that map many images find it once); True finds it now."""
    from captum.attr import LayerAttribution, LayerGradientXActivation, Saliency

    net.eval()
    size = x.shape[-1]
    if target is None:
        with torch.no_grad():
            target = int(net(x).argmax(dim=1)[0])
    found = cam_layer(net, size) if layer is True else layer
    if found is not None:
        name, layer, on_input = found
        attr = LayerGradientXActivation(net, layer).attribute(x, target=target, attribute_to_layer_input=on_input)
        attr = attr.sum(dim=1, keepdim=True).clamp_min(0)  # HiResCAM: sum over channels of gradient x activation
        heat = LayerAttribution.interpolate(attr, (size, size), interpolate_mode="bilinear")[0, 0]
        return SaliencyMap(_normalise(heat), target, f"HiResCAM @ {'input of ' if on_input else ''}{name}")
    grad = Saliency(net).attribute(x.clone().requires_grad_(True), target=target, abs=True)
    heat = grad.amax(dim=1, keepdim=True)
    k = max(3, size // 16) | 1  # a small box blur: gradients are speckled, a map should show regions
    heat = F.avg_pool2d(heat, k, stride=1, padding=k // 2)[0, 0]
    return SaliencyMap(_normalise(heat), target, "input gradient")


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The map over the image (both S x S; uint8 RGB out), in matplotlib's 'jet' colours."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    mixed = np.clip((1 - alpha) * image.astype(np.float32) / 255 + alpha * colours, 0, 1)
    return (mixed * 255).round().astype(np.uint8)
