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


# "keras": Glorot-uniform weights, zero biases (what the architectures build); "torch": PyTorch's default
# (Kaiming-uniform with a=sqrt(5), fan-in-scaled uniform biases).
INITS = ("keras", "torch")


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(
    name: str,
    img_size: int = 128,
    num_classes: int = 8,
    dropout_scale: float = 1.0,
    bn_momentum: float | None = None,
    bn_eps: float | None = None,
    init: str = "keras",
) -> nn.Module:
    """Build a registered architecture; an unknown name is a user error listing the known ones.

    The architectures are built with the Keras layer details (BatchNorm momentum 0.01 and eps 1e-3 in
    PyTorch terms, Glorot-uniform weights). ``bn_momentum``/``bn_eps`` replace the BatchNorm values and
    ``init="torch"`` re-initialises every conv and dense layer with PyTorch's default: the ``study``
    recipe uses both, because they, not the Keras values, reproduce the study's accuracy (README,
    "Why the defaults are what they are").
    """
    if name not in MODELS:
        raise UserError(
            f"Unknown model '{name}'. Known models: {', '.join(model_names())}. "
            "Pick one with model=<name> (e.g. `python train.py model=skip`)."
        )
    model = MODELS[name](img_size=img_size, num_classes=num_classes, dropout_scale=dropout_scale)
    if init not in INITS:
        raise UserError(f"model.init={init!r} is not a known initialisation. Use one of: {', '.join(INITS)}.")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn_momentum is not None:
                m.momentum = bn_momentum
            if bn_eps is not None:
                m.eps = bn_eps
        elif init == "torch" and isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return model
