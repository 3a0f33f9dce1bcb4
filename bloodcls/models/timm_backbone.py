"""Standard backbones from `timm`, trained on the same split, protocol and report as the study's CNNs.

``model=timm model.arch=resnet18`` builds any timm architecture with 8 classes at ``data.img_size``.
From scratch, inputs stay in [0, 1] as the study's; with ImageNet weights the network normalises its
input itself (the weights' mean/std as buffers saved in the checkpoint), so predict, export and the
robustness suite feed every model the same [0, 1] images. timm's own initialisation and BatchNorm settings
are kept (reference points as the literature trains them, not Keras ports); the recipe's optimiser,
schedule, epochs, loss and augmentation apply as to every model.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bloodcls.errors import UserError

HUB_HOST = ("huggingface.co", 443)


class TimmClassifier(nn.Module):
    """A timm network behind a fixed input normalisation (identity when trained from scratch)."""

    def __init__(self, backbone: nn.Module, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hugging Face hub, so an offline machine fails in seconds, not after retries."""
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _check_arch(arch: str | None) -> str:
    import timm

    if not arch:
        raise UserError("model=timm needs an architecture: add model.arch=<timm name>, e.g. "
                        "`python train.py model=timm model.arch=resnet18` (list them with timm.list_models()).")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise UserError(f"model.arch={arch!r} is not a timm architecture.{hint} "
                        "List them with `python -c \"import timm; print(timm.list_models('resnet*'))\"`.")
    return arch


def _create(arch: str, img_size: int, num_classes: int, **kwargs) -> nn.Module:
    """timm.create_model, passing the input size to the architectures that take one (ViTs and kin), then
    one forward pass at that size, so a network that shrinks the image below a kernel stops here, clearly."""
    import timm

    try:
        net = timm.create_model(arch, num_classes=num_classes, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        net = timm.create_model(arch, num_classes=num_classes, **kwargs)
    except (AssertionError, ValueError) as err:
        raise UserError(f"timm cannot build {arch} for {img_size} px inputs ({str(err).splitlines()[0][:160]}). "
                        "Pick another data.img_size (28, 64 or 128) or another model.arch.") from None
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, img_size, img_size))
    except RuntimeError as err:
        raise UserError(f"{arch} cannot take {img_size} px inputs: its downsampling leaves a feature map smaller "
                        f"than a kernel ({str(err).splitlines()[0][:160]}). Use a larger data.img_size "
                        "(e.g. 64 or 128) or an architecture with less downsampling (e.g. resnet18).") from None
    return net.train()


def build_timm(arch: str | None, img_size: int = 128, num_classes: int = 8, pretrained: bool = False,
               pretrained_path: str | None = None) -> TimmClassifier:
    """Build ``arch`` from timm; ``pretrained``/``pretrained_path`` load ImageNet weights (classifier reset)."""
    arch = _check_arch(arch)
    if not pretrained and not pretrained_path:
        return TimmClassifier(_create(arch, img_size, num_classes))
    overlay = None
    if pretrained_path:
        path = Path(str(pretrained_path)).expanduser()
        if not path.is_file():
            raise UserError(f"model.pretrained_path={pretrained_path} is not a file. Point it at the weights of "
                            f"{arch} (a .safetensors or .pth file from the Hugging Face hub, e.g. timm/{arch}).")
        overlay = {"file": str(path)}
    elif os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false") and not hub_reachable():
        raise UserError(
            f"model.pretrained=true asks for ImageNet weights of {arch} from the Hugging Face hub, which cannot be "
            f"reached from this machine. Download them where the hub is reachable (the model.safetensors of "
            f"timm/{arch} or a tagged variant) and point at that file with model.pretrained_path=<file.safetensors>, "
            "or set HF_HUB_OFFLINE=1 to use weights already in the local Hugging Face cache. "
            "model.pretrained=false trains from scratch."
        )
    try:
        net = _create(arch, img_size, num_classes, pretrained=True, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"Could not load ImageNet weights for {arch} ({str(err).splitlines()[0][:200]}). Check that "
                        "model.pretrained_path names weights of this architecture, or that the hub is reachable.") from None
    cfg = net.pretrained_cfg
    return TimmClassifier(net, mean=cfg.get("mean", (0.485, 0.456, 0.406)), std=cfg.get("std", (0.229, 0.224, 0.225)))
