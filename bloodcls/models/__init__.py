"""Architectures of the reference study, registered by name (see :mod:`bloodcls.models.registry`), and
timm's standard backbones as the ``timm`` family."""

from bloodcls.models.registry import (
    FAMILIES,
    ModelSpec,
    build_from_hparams,
    build_model,
    list_models,
    model_names,
    model_spec,
    register_model,
)

# Importing the architecture modules registers their builders.
from bloodcls.models import inception, plain, skip  # noqa: E402,F401  isort: skip

__all__ = ["FAMILIES", "ModelSpec", "build_from_hparams", "build_model", "list_models", "model_names", "model_spec",
           "register_model"]
