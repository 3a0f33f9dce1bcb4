"""Class-activation maps: the right shape and range, for every architecture, and where the evidence is."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bloodcls.inference.saliency import cam_layer, overlay, saliency_map
from bloodcls.models import build_model


@pytest.mark.parametrize(("name", "arch", "size"), [
    ("baseline", None, 64), ("unet", None, 64), ("inception", None, 64), ("skip", None, 64), ("hybrid", None, 64),
    ("timm", "resnet18", 28), ("timm", "vit_tiny_patch16_224", 64),
])
def test_maps_have_the_images_shape_and_unit_range(name, arch, size):
    torch.manual_seed(0)
    net = build_model(name, size, arch=arch).eval()
    m = saliency_map(net, torch.rand(1, 3, size, size))
    assert m.heat.shape == (size, size) and m.heat.min() == 0 and m.heat.max() == pytest.approx(1)
    assert 0 <= m.target < 8 and m.method.startswith("HiResCAM")
    assert net.training is False and not any(h for mod in net.modules() for h in mod._forward_hooks.values())


def test_the_map_is_taken_after_branches_merge():
    """Skip CNN: the input of the global pooling (residual sums done), not the last shortcut conv."""
    name, _, on_input = cam_layer(build_model("skip", 64), 64)
    assert (name, on_input) == ("gap", True)
    name, _, on_input = cam_layer(build_model("timm", 64, arch="resnet18"), 64)
    assert (name, on_input) == ("backbone.global_pool", True)


def _corner_task(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey noise everywhere; the class is only in the top-left corner (red square: 0, green square: 1)."""
    x = torch.rand(n, 3, size, size, generator=g) * 0.5 + 0.25
    y = torch.randint(0, 2, (n,), generator=g)
    q = size // 4
    x[y == 0, 0, :q, :q] = 1.0
    x[y == 1, 1, :q, :q] = 1.0
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("name", ["baseline", "inception"])  # a dense head and a global-pooling head
def test_the_maps_mass_lies_where_the_signal_is(name):
    torch.manual_seed(0)
    g, size = torch.Generator().manual_seed(0), 32
    net = build_model(name, size, num_classes=2, init="torch", bn_momentum=0.1)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(60):
        x, y = _corner_task(32, size, g)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = _corner_task(8, size, g)
    assert (net(x).argmax(1) == y).all()  # it learnt the task
    for i in range(len(x)):
        heat = saliency_map(net, x[i:i + 1]).heat
        assert heat.std() > 0.05  # not uniform
        assert heat[: size // 2, : size // 2].sum() / heat.sum() > 0.6  # a uniform map would put 0.25 there


def test_overlay_is_an_rgb_image_of_the_same_size():
    img = np.full((16, 16, 3), 200, np.uint8)
    heat = np.zeros((16, 16))
    heat[:4, :4] = 1
    out = overlay(img, heat)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > out[15, 15, 0]  # hot is red in 'jet', cold is blue
