"""Models registered by name, like torchvision's and timm's: configs, checkpoints and the CLI refer to a
model by a stable name, and each registration carries the study's figures for it (``ModelSpec.study``), the
way torchvision's weights carry their ``meta``: the figures live beside the models (:mod:`bloodcls.models.study`).

An architecture module registers its builders with ``@register_model("name", experiments=(...))``;
``list_models()`` is the set the tests, the report and the docs loop over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from bloodcls.errors import UserError
from bloodcls.models.study import COUNTS, PERFORMANCE
from bloodcls.schema import check_value


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder and the study's rows (experiments) that use it."""

    name: str
    builder: Callable[..., nn.Module]
    experiments: tuple[str, ...]
    summary: str

    @property
    def study(self) -> dict[str, dict[str, Any]]:
        """Per study row: input size, parameter counts, memory, MACs, accuracy and more (bloodcls.models.study)."""
        return {e: {**COUNTS[e], **PERFORMANCE[e]} for e in self.experiments}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, experiments: tuple[str, ...] = ()) -> Callable:
    """Register ``builder(img_size, num_classes, dropout_scale) -> nn.Module`` under ``name`` (once)."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY or name in FAMILIES:
            raise ValueError(f"a model named {name!r} is already registered")
        summary = (builder.__doc__ or name).strip().splitlines()[0]
        _REGISTRY[name] = ModelSpec(name, builder, tuple(experiments), summary)
        return builder

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise UserError(f"Unknown model '{name}'. Known models: {', '.join(list_models())}.")
    return _REGISTRY[name]


# Families built from another library by architecture name (model.arch): `model=timm model.arch=resnet18`.
FAMILIES = ("timm",)

# model.init (bloodcls.schema.INITS): "keras": Glorot-uniform weights, zero biases (what the architectures build);
# "torch": PyTorch's default (Kaiming-uniform with a=sqrt(5), fan-in-scaled uniform biases).


def model_names() -> list[str]:
    return list_models()


def build_model(
    name: str,
    img_size: int = 128,
    num_classes: int = 8,
    dropout_scale: float = 1.0,
    bn_momentum: float | None = None,
    bn_eps: float | None = None,
    init: str = "keras",
    arch: str | None = None,
    pretrained: bool = False,
    pretrained_path: str | None = None,
) -> nn.Module:
    """Build a registered architecture; an unknown name is a user error listing the known ones.

    The architectures are built with the Keras layer details (BatchNorm momentum 0.01 and eps 1e-3 in
    PyTorch terms, Glorot-uniform weights). ``bn_momentum``/``bn_eps`` replace the BatchNorm values and
    ``init="torch"`` re-initialises every conv and dense layer with PyTorch's default: the ``study``
    recipe uses both, because they, not the Keras values, reproduce the study's accuracy
    (docs/results/ablation.md). ``name="timm"`` builds the timm architecture ``arch``
    (optionally with ImageNet weights) with timm's own initialisation and BatchNorm values.
    """
    check_value("model.init", init)
    if name == "timm":
        # timm's own layer details: the recipe's init and Keras BatchNorm are for the study's ports. With
        # BatchNorm momentum 0.01 a from-scratch ResNet-18's running statistics lag its weights so far that
        # validation stays near chance for the first epochs (docs/guide/models.md#standard-backbones-from-timm).
        from bloodcls.models.timm_backbone import build_timm

        return build_timm(arch, img_size=img_size, num_classes=num_classes, pretrained=bool(pretrained),
                          pretrained_path=pretrained_path)
    if name in _REGISTRY:
        model = _REGISTRY[name].builder(img_size=img_size, num_classes=num_classes, dropout_scale=dropout_scale)
    else:
        raise UserError(
            f"Unknown model '{name}'. Known models: {', '.join(model_names())}, "
            "or any timm architecture with model=timm model.arch=<timm name>. "
            "Pick one with model=<name> (e.g. `python train.py model=skip`)."
        )
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn_momentum is not None:
                m.momentum = bn_momentum
            if bn_eps is not None:
                m.eps = bn_eps
        elif init == "torch" and isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return model


def build_from_hparams(hparams: Mapping[str, Any], num_classes: int | None = None, weights: bool = True) -> nn.Module:
    """The network a model config or a checkpoint's hyper-parameters describe (one home for that mapping).

    ``weights=False`` skips downloading pretrained weights: for a checkpoint, whose own weights are loaded
    next, and for counting parameters and operations.
    """
    return build_model(
        str(hparams["name"]), img_size=int(hparams["img_size"]),
        num_classes=int(num_classes if num_classes is not None else hparams.get("num_classes", 8)),
        dropout_scale=float(hparams.get("dropout_scale", 1.0)), bn_momentum=hparams.get("bn_momentum"),
        bn_eps=hparams.get("bn_eps"), init=str(hparams.get("init") or "keras"), arch=hparams.get("arch"),
        pretrained=bool(hparams.get("pretrained")) and weights,
        pretrained_path=hparams.get("pretrained_path") if weights else None,
    )
