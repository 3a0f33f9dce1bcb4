"""A run's progress where a background job can be watched: one line per epoch, and the same in ``status.json``.

Lightning's progress bar draws only on a terminal; under ``nohup``, a cluster scheduler or a sweep's
launcher nothing says whether a run is alive. :class:`EpochProgress` logs one line per finished epoch
through the ``logging`` module, so Hydra's handlers put it in the run's ``train.log`` and, when stdout
is not a terminal (or no progress bar is drawn), on stdout too; it also keeps a ``progress`` record in
``status.json`` that ``sweep.py`` reads for its per-job status file.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping

from bloodcls.runs.status import RunRecord, clock, now_iso
from bloodcls.training.callbacks import History

log = logging.getLogger(__name__)
RECENT = 5  # epochs whose median wall time estimates the time left: the median, so that one slow epoch (warm-up,
# a job paused with SIGSTOP while the test suite ran, a resume) does not multiply the estimate


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "–" if value is None else format(value, fmt)


def progress_line(p: dict[str, Any]) -> str:
    """One epoch as a line: ``epoch 3/40 | train loss .. acc .. | val loss .. acc .. | lr .. | s/epoch | left``."""
    patience = p.get("patience_left")
    stop = f", patience {patience} left" if patience is not None else ""
    return (f"epoch {p['epoch']}/{p['max_epochs']} | train loss {_num(p.get('train_loss'))} acc "
            f"{_pct(p.get('train_acc'))} | val loss {_num(p.get('val_loss'))} acc {_pct(p.get('val_acc'))} | "
            f"lr {_num(p.get('lr'), '.2e')} | {p['epoch_s']:.0f} s/epoch | at most {clock(p['eta_s'])} left "
            f"(best epoch {_counted(p.get('best_epoch'))}{stop})")


def _counted(epoch: int | None) -> str:
    """Lightning's 0-based epoch index as the line counts epochs (from 1), so ``epoch 6/40 (best epoch 6)`` says
    the epoch just ended is the best so far."""
    return "–" if epoch is None else str(epoch + 1)


def epoch_seconds(epochs: list[dict[str, Any]]) -> float:
    """The typical wall time of an epoch: the median of the last RECENT epochs' (0 before the first)."""
    recent = [r["time_s"] for r in epochs[-RECENT:] if "time_s" in r]
    return statistics.median(recent) if recent else 0.0


def patience_left(stopper: EarlyStopping, epochs: list[dict[str, Any]]) -> int:
    """Epochs early stopping still waits, counted from the recorded epochs as the stopper counts them. Not its
    ``wait_count``: Lightning runs the stopper in ``on_train_epoch_end`` too, after this callback, so that count
    is one epoch behind (an epoch-36 line said "patience 1 left" and the run stopped there)."""
    sign = 1.0 if stopper.mode == "min" else -1.0
    best, wait = None, 0
    for record in epochs:
        if stopper.monitor not in record:
            continue
        value = sign * float(record[stopper.monitor])
        if best is None or value < best - abs(stopper.min_delta):
            best, wait = value, 0
        else:
            wait += 1
    return max(0, stopper.patience - wait)


class EpochProgress(Callback):
    """Logs :func:`progress_line` after every training epoch (validation included) and records it in the run's
    ``status.json`` under ``progress``; ``phase`` says ``training``, then ``testing`` once the test starts."""

    def __init__(self, history: History, record: RunRecord | None = None) -> None:
        self.history, self.record = history, record

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history.epochs or trainer.sanity_checking:
            return
        p = self.snapshot(trainer)
        self._emit(trainer, progress_line(p))
        if self.record is not None:
            self.record.update(progress=p)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.record is not None and self.record.fields.get("progress"):
            self.record.update(progress={**self.record.fields["progress"], "phase": "testing", "at": now_iso()})

    def snapshot(self, trainer: L.Trainer) -> dict[str, Any]:
        """The progress record of the epoch that just ended (History has recorded it: it runs first)."""
        epochs = self.history.epochs
        last = epochs[-1]
        done = int(last["epoch"]) + 1
        max_epochs = int(trainer.max_epochs) if trainer.max_epochs and trainer.max_epochs > 0 else done
        epoch_s = epoch_seconds(epochs)
        scored = [(r["val/loss"], int(r["epoch"])) for r in epochs if "val/loss" in r]
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        return {
            "phase": "training", "epoch": done, "max_epochs": max_epochs, "at": now_iso(), "time": time.time(),
            "train_loss": last.get("train/loss"), "train_acc": last.get("train/acc"),
            "val_loss": last.get("val/loss"), "val_acc": last.get("val/acc"), "lr": last.get("lr"),
            "epoch_s": epoch_s, "eta_s": epoch_s * max(0, max_epochs - done),
            "best_epoch": min(scored)[1] if scored else None,
            "patience_left": patience_left(stopper, epochs) if stopper is not None else None,
        }

    @staticmethod
    def _emit(trainer: L.Trainer, line: str) -> None:
        """To train.log always; to the console only where no progress bar is drawn (not a terminal, or no bar)."""
        if trainer.progress_bar_callback is not None and sys.stdout.isatty():
            record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None)
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.handle(record)
            return
        log.info(line)
