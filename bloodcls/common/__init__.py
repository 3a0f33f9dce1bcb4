"""Shared leaves: what every layer may use, importing nothing of bloodcls but each other and ``errors``.

Kept free of Lightning, Hydra and SciPy at import (``stats`` aside), so predict and the demo stay light; this
``__init__`` re-exports nothing, so importing one leaf never pulls in the others.
"""
