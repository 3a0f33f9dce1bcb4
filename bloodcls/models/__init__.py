"""Architectures of the reference study, registered by name (see :mod:`bloodcls.models.registry`)."""

from bloodcls.models.registry import FAMILIES, MODELS, build_from_hparams, build_model, model_names

__all__ = ["FAMILIES", "MODELS", "build_from_hparams", "build_model", "model_names"]
