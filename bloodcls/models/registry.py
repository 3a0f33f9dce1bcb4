"""Name -> builder map, so configs, checkpoints and the CLI refer to models by a stable name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bloodcls.errors import UserError
from bloodcls.models.inception import hybrid, inception
from bloodcls.models.plain import baseline, unet
from bloodcls.models.skip import skip

MODELS: dict[str, Callable[..., nn.Module]] = {
    "baseline": baseline,
    "unet": unet,
    "inception": inception,
    "skip": skip,
    "hybrid": hybrid,
}


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(
    name: str,
    img_size: int = 128,
    num_classes: int = 8,
    dropout_scale: float = 1.0,
    bn_momentum: float | None = None,
) -> nn.Module:
    """Build a registered architecture; an unknown name is a user error listing the known ones.

    ``bn_momentum`` (PyTorch convention) overrides the Keras-equivalent 0.01, e.g. 0.1 for very
    short runs, where running statistics that move 1 % per step never settle.
    """
    if name not in MODELS:
        raise UserError(
            f"Unknown model '{name}'. Known models: {', '.join(model_names())}. "
            "Pick one with model=<name> (e.g. `python train.py model=skip`)."
        )
    model = MODELS[name](img_size=img_size, num_classes=num_classes, dropout_scale=dropout_scale)
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = bn_momentum
    return model
