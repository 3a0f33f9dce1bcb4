"""Callbacks that make runs reproducible and their history reportable."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.lr_scheduler import ReduceLROnPlateau

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**31 - 1)


class EvalResults(Callback):
    """Where the LightningModule hands each evaluation's outcome (``BloodCellClassifier.publish``): scores,
    confusion matrix and, for the test split, the predictions in dataset order. ``train()`` reads the
    run's results from here, so they flow one way, out of the module, not back out of its attributes."""

    def __init__(self) -> None:
        self.scores: dict[str, dict[str, float]] = {}
        self.confusion: dict[str, list[list[int]]] = {}
        self.predictions: dict[str, list[int]] = {}
        self.trust: dict | None = None  # bloodcls.training.trust.FitTrust's report on the test split
        self.trust_time_s = 0.0  # seconds FitTrust spent inside the test (timed apart from the test itself)

    def record(self, stage: str, scores: dict[str, float] | None = None, confusion: list[list[int]] | None = None,
               predictions: list[int] | None = None) -> None:
        if scores is not None:
            self.scores[stage] = scores
        if confusion is not None:
            self.confusion[stage] = confusion
        if predictions is not None:
            self.predictions[stage] = predictions


class EpochSeed(Callback):
    """Reseed every RNG at the start of each training epoch from (seed, epoch).

    Dropout, augmentation and the shuffling order then depend only on the seed and the epoch, not
    on how many epochs ran in this process: a run resumed from a checkpoint continues exactly as
    the uninterrupted run would have.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        s = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s + trainer.global_rank)


def best_epoch(epochs: list[dict[str, float]], monitor: str = "val/loss", mode: str = "min") -> int | None:
    """The first epoch with the best monitored value (what ModelCheckpoint keeps as best)."""
    scored = [(r[monitor], int(r["epoch"])) for r in epochs if monitor in r]
    if not scored:
        return None
    pick = min if mode == "min" else max
    best = pick(v for v, _ in scored)
    return next(e for v, e in scored if v == best)


class History(Callback):
    """Per-epoch record of the logged scalars, learning rate and epoch wall time.

    Its state is saved in checkpoints, so a resumed run keeps the curves of the epochs before it.
    Checkpoints are written at train-epoch end, after this callback has recorded the epoch.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record: dict[str, float] = {"epoch": trainer.current_epoch, "time_s": time.perf_counter() - self._start}
        if trainer.optimizers:
            record["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        for key, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                record[key] = float(value)
            elif isinstance(value, (int, float)):
                record[key] = float(value)
        self.epochs.append(record)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))


class ResumeLikeUninterrupted(Callback):
    """On resume, redo the two end-of-epoch decisions that ``last.ckpt`` cannot carry.

    ``last.ckpt`` is written at the end of epoch k, after EarlyStopping has decided but before
    Lightning steps a ReduceLROnPlateau scheduler with epoch k's ``val/loss``; on resume Lightning
    neither replays that step nor stops a run that had already stopped early (it was interrupted
    or failed while being tested). The plateau step uses the value recorded by the History
    callback, which the checkpoint restored.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        done = trainer.current_epoch  # epochs finished before this run
        if any(isinstance(c, EarlyStopping) and c.stopped_epoch and c.stopped_epoch == done - 1
               for c in trainer.callbacks):
            trainer.should_stop = True  # it had stopped early at the end of that epoch
        history = next((c for c in trainer.callbacks if isinstance(c, History)), None)
        record = next((r for r in reversed(history.epochs) if r.get("epoch") == done - 1), None) if history else None
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            if not isinstance(sched, ReduceLROnPlateau) or config.interval != "epoch" or config.frequency != 1:
                continue
            if sched.last_epoch != done - 1:
                continue  # already stepped for every finished epoch
            if record is None or config.monitor not in record:
                log.warning("Resumed run: no recorded %s for epoch %d, the LR scheduler skips that epoch.",
                            config.monitor, done - 1)
                continue
            sched.step(record[config.monitor])


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` really is the end of the last finished epoch.

    Lightning 2.6 writes ``last.ckpt`` only in an epoch that also saved a top-k checkpoint, so with one
    best-``val/loss`` checkpoint it stays a copy of ``best.ckpt`` after the best epoch, and a resumed
    run would restart there, losing the epochs after it. This writes it after every training epoch.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (self.save_last and self._should_save_on_train_epoch_end(trainer)
                and not self._should_skip_saving_checkpoint(trainer)):  # nothing was saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class EMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, scored and shipped as the model.

    Lightning validates with the averaged weights and writes them as a checkpoint's ``state_dict``
    (the raw weights go to ``current_model_state``), so predict and export read the average. But
    ``trainer.test(ckpt_path=...)`` after ``fit`` would load the raw weights back into the module;
    outside fitting this callback leaves the checkpoint's averaged ``state_dict`` in place, so the
    test split is scored with the same weights that were validated and checkpointed.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
