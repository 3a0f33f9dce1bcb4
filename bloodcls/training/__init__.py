"""Training: the LightningModule, its metrics, callbacks and loggers, ``train(cfg)`` and the benchmark."""

from bloodcls.training.fit import train

__all__ = ["train"]
