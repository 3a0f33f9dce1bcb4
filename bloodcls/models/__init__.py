"""Architectures of the reference study, registered by name (see :mod:`bloodcls.models.registry`)."""

from bloodcls.models.registry import MODELS, build_model, model_names

__all__ = ["MODELS", "build_model", "model_names"]
