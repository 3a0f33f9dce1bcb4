"""Training: the LightningModule, its metrics, callbacks and loggers, ``train(cfg)`` and the benchmark.

``train`` is imported on first use (PEP 562): ``bloodcls.training.compute`` and the other light modules are read
by the sweep's parent process, which has no use for Lightning."""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name != "train":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from bloodcls.training.fit import train

    globals()["train"] = train
    return train
