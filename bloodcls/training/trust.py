"""Fit the trust state (temperature, abstention threshold, out-of-distribution gate) after the test.

Runs once the test has scored the restored best weights (after precise BatchNorm statistics, when the
recipe recomputes them), so the state matches the network predict and export load. It is written into
the run's own checkpoint (never one a user handed in with ``train=false ckpt_path=...``), its report
goes to ``results.json`` (``trust``), and the reliability diagram to ``<run>/trust/reliability.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from bloodcls.common.checkpoints import read_checkpoint, write_checkpoint
from bloodcls.common.rundir import RELIABILITY_PNG, TRUST_DIR
from bloodcls.training.callbacks import EvalResults
from bloodcls.uncertainty.conformal import DEFAULT_COVERAGE, SetOptions
from bloodcls.uncertainty.figures import reliability_diagram
from bloodcls.uncertainty.fitting import check_fit_data, fit_trust
from bloodcls.uncertainty.outputs import class_count
from bloodcls.uncertainty.state import CHECKPOINT_KEY, TrustState

log = logging.getLogger(__name__)
FIGURE = Path(TRUST_DIR) / RELIABILITY_PNG


def write_trust(checkpoint: Path, state: TrustState) -> None:
    """Store the fitted state in a Lightning checkpoint file as plain values (atomically)."""
    ckpt = read_checkpoint(checkpoint)
    ckpt[CHECKPOINT_KEY] = state.to_dict()
    write_checkpoint(checkpoint, ckpt)


class FitTrust(Callback):
    """``max_train_images``: a seeded sample of the training split, stratified by class, for the gate's class means
    and covariance (64-128 features need far fewer than 12k images; a full pass at 128 px costs minutes on a
    CPU); null uses all. ``far_ood_n``: images per far-OOD set scored in the report. ``coverage``, ``method`` and
    ``per_class``: the prediction sets (``method`` None: the default score chosen on evidence; one threshold per
    class with ``per_class``: every class needs enough validation images, checked before training)."""

    def __init__(self, max_train_images: int | None = 4000, far_ood_n: int = 200, seed: int = 0,
                 coverage: float = DEFAULT_COVERAGE, per_class: bool = False, method: str | None = None) -> None:
        self.max_train_images, self.far_ood_n, self.seed = max_train_images, far_ood_n, seed
        self.sets = SetOptions(coverage=coverage, per_class=per_class, **({"method": method} if method else {}))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse splits the fit after the test could not use (a class without training images; for per-class
        sets, too few validation images of a class) before any epoch is trained."""
        datamodule = trainer.datamodule
        if datamodule is None or not getattr(datamodule, "splits", None):
            return
        labels = {s: y for s, (_, y) in datamodule.splits.items()}
        check_fit_data(labels, class_count(pl_module.net), list(pl_module.class_names), self.sets)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not datamodule.splits:
            datamodule.setup()
        t0 = time.perf_counter()
        state, report = fit_trust(pl_module.net, datamodule.splits, self.max_train_images, self.seed, self.far_ood_n,
                                  self.sets, getattr(pl_module, "class_names", None))
        if trainer.is_global_zero:
            reliability_diagram(report, Path(trainer.default_root_dir) / FIGURE)
        for callback in trainer.callbacks:
            if isinstance(callback, EvalResults):
                callback.trust, callback.trust_time_s = report, time.perf_counter() - t0
        cal, gate = report["calibration"], report["gate"]
        log.info("trust: temperature %.3f, test ECE %.4f -> %.4f, far-OOD AUROC %.4f, gate fires on %.1f %% of the "
                 "test split", state.temperature, cal["before"]["ece"], cal["after"]["ece"],
                 gate["far_ood"]["all"]["auroc"], 100 * gate["fires_on_test"])
        if gate.get("warning"):
            log.warning("trust: %s", gate["warning"])
        if not trainer.is_global_zero:
            return
        own = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        path = Path(trainer.ckpt_path) if trainer.ckpt_path else None
        if path and own and path.parent.resolve() == Path(own).resolve():
            write_trust(path, state)
