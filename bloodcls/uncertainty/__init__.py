"""Whether to trust a prediction: calibrated probabilities, abstention and a "not a blood-cell image" gate.

Pure tensor maths on logits and features, used by training (fitted once after the test) and by
inference (predict, the demo); the fitted state is plain tensors and numbers (:mod:`.state`).
"""

from bloodcls.uncertainty.state import TrustState

__all__ = ["TrustState"]
