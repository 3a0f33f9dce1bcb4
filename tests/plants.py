"""Test-only callbacks that plant trouble in a run at a chosen epoch (added with +callbacks.<name>=...).

Each fires once: a marker file records that it fired, so a resumed run replaying the same
overrides is not interrupted again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class _Once(Callback):
    """``seed``/``only_seed``: in a sweep, fire only in the job whose seed (``+callbacks.x.seed=${seed}``) is
    ``only_seed``."""

    def __init__(self, epoch: int, marker: str, seed: int | None = None, only_seed: int | None = None) -> None:
        self.epoch, self.marker = epoch, Path(marker)
        self.seed, self.only_seed = seed, only_seed

    def _due(self, trainer: L.Trainer) -> bool:
        if trainer.current_epoch != self.epoch or self.marker.exists():
            return False
        if self.only_seed is not None and self.seed != self.only_seed:
            return False
        self.marker.write_text(str(os.getpid()))
        return True


class SendSignal(_Once):
    """Send this process ``signum`` (e.g. 2 = SIGINT, Ctrl-C) at the start of ``epoch``."""

    def __init__(self, epoch: int, marker: str, signum: int = int(signal.SIGINT), **which: int) -> None:
        super().__init__(epoch, marker, **which)
        self.signum = signum

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer):
            os.kill(os.getpid(), self.signum)
            time.sleep(1)  # the signal is handled here, as it would be in the middle of real work


class AwaitSignal(_Once):
    """At the start of ``epoch``, write the marker (holding the pid) and wait for a SIGTERM from outside."""

    def __init__(self, epoch: int, marker: str, timeout: float = 120.0, **which: int) -> None:
        super().__init__(epoch, marker, **which)
        self.timeout = timeout

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer):
            deadline = time.monotonic() + self.timeout
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)


class PlantNaN(_Once):
    """Turn the first weight into NaN before the first batch of ``epoch``: the loss becomes NaN."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0 and self._due(trainer):
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class Crash(_Once):
    """Raise a plain RuntimeError (a bug, not a user error) at the start of ``epoch``."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer):
            raise RuntimeError("planted crash for the test")


class CrashOnTest(_Once):
    """Raise a RuntimeError when the final test starts (training itself finished); ``epoch`` is unused."""

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.marker.exists():
            self.marker.write_text("fired")
            raise RuntimeError("planted crash while testing")
