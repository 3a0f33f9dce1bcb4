"""bloodcls: train, sweep and compare blood-cell image classifiers on BloodMNIST.

``from bloodcls import Classifier`` is the Python API (:mod:`bloodcls.inference.classifier`); it is imported
when first asked for, so ``import bloodcls`` stays light (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bloodcls.inference.classifier import Classifier

__version__ = "0.1.0"
__all__ = ["Classifier", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from bloodcls.inference.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'bloodcls' has no attribute {name!r}")
