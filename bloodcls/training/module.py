"""The LightningModule: one of the study's networks, its losses, optimiser and scores."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from bloodcls.common.tta import tta_proba
from bloodcls.data import CLASS_NAMES
from bloodcls.errors import UserError
from bloodcls.models import build_from_hparams
from bloodcls.schema import check_value
from bloodcls.training.callbacks import EvalResults
from bloodcls.training.metrics import WeightedMean, classification_metrics, flatten_scores
from bloodcls.uncertainty.ood import feature_layer

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """Training diverged: the loss became NaN or infinite."""


class BloodCellClassifier(L.LightningModule):
    """Logits out. Training loss is class-weighted cross-entropy; val/test loss is unweighted, as Keras reports it.

    Only plain values go into the checkpoint's hyper-parameters (model name, input size, class
    names), so a checkpoint can be rebuilt and loaded with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        name: str = "skip",
        img_size: int = 128,
        num_classes: int = 8,
        class_names: Sequence[str] | None = None,
        dropout_scale: float = 1.0,
        bn_momentum: float | None = None,
        bn_eps: float | None = None,
        init: str = "keras",
        label_smoothing: float = 0.0,
        tta: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
        monitor: str = "val/loss",
        channels_last: bool | str = False,
        compile: bool | str = False,
        arch: str | None = None,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        freeze: str | None = None,
    ) -> None:
        super().__init__()
        class_names = list(class_names or CLASS_NAMES)
        channels_last = channels_last is True  # auto is resolved by train(); a module built on its own is NCHW
        self.save_hyperparameters(
            {"name": name, "img_size": img_size, "num_classes": num_classes, "class_names": class_names,
             "dropout_scale": dropout_scale, "bn_momentum": bn_momentum, "bn_eps": bn_eps, "init": init,
             "label_smoothing": label_smoothing, "tta": tta, "channels_last": channels_last, "compile": compile,
             "arch": arch, "pretrained": pretrained, "pretrained_path": pretrained_path, "freeze": freeze}
        )
        self.class_names = class_names
        self.net = build_from_hparams(self.hparams)
        self.label_smoothing = label_smoothing
        self.tta = tta
        # Their settings live in conf/optimizer and conf/scheduler only; no scheduler (None) keeps the rate fixed.
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.monitor = monitor
        self.register_buffer("class_weights", torch.ones(num_classes), persistent=False)
        self.register_buffer("_finite", torch.tensor(True), persistent=False)
        self.finite_check_every = 50
        # validate_args=False: torchmetrics' input checks read values back to the host on every update,
        # a sync per training step on the GPU; the inputs here are the network's own logits and labels.
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        self.eval_loss = nn.ModuleDict({s: WeightedMean() for s in ("val", "test")})  # no per-batch host sync
        # "test_tta": the same scores with probabilities averaged over the 8 rotations/flips (model.tta=true),
        # reported beside the plain test scores, never instead of them.
        self.eval_metrics = nn.ModuleDict({s: classification_metrics(num_classes) for s in ("val", "test", "test_tta")})
        self._test_preds: list[torch.Tensor] = []
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        check_value("model.freeze", freeze)
        self.frozen = freeze  # (LightningModule.freeze is a method)
        if freeze == "backbone":  # only the classifier (the last nn.Linear) learns
            head = feature_layer(self.net)[1]
            for p in self.net.parameters():
                p.requires_grad_(False)
            head.requires_grad_(True)
        check_value("model.compile", compile)  # bloodcls.schema.COMPILE_MODES
        self.compile_mode = compile
        self.compiled = False
        if compile is True:
            self.net.compile()
            self.compiled = True

    def compile_for(self, device: torch.device) -> bool:
        """``compile=graphs``: capture the network's steps in CUDA graphs (torch.compile's reduce-overhead
        mode, static shapes; the last, smaller batch of an epoch gets a graph of its own). CUDA only: on
        any other device the network stays eager and this returns False."""
        if self.compile_mode != "graphs" or self.compiled:
            return self.compiled
        if torch.device(device).type != "cuda":
            log.info("model.compile=graphs captures CUDA graphs; on %s the network runs eagerly", device)
            return False
        self.net.compile(mode="reduce-overhead", dynamic=False)
        self.compiled = True
        return True

    def on_train_epoch_start(self) -> None:
        """``model.freeze=backbone``: the frozen part's BatchNorm layers stay in eval mode while the head trains,
        so their running statistics (the checkpoint's) do not drift towards the new images. (Lightning restores
        each layer's mode after validation, so this holds for the whole epoch.)"""
        if self.frozen == "backbone":
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def setup(self, stage: str) -> None:
        self.compile_for(self.trainer.strategy.root_device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def set_class_weights(self, weights: torch.Tensor) -> None:
        self.class_weights.copy_(torch.as_tensor(weights, dtype=self.class_weights.dtype))

    # -- steps -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self._finite &= torch.isfinite(loss.detach())  # no host sync here: checked in on_train_batch_end
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Stop on a NaN/inf loss. On the GPU the check syncs only every few steps and on the epoch's
        last batch, which still runs before the epoch-end checkpoint, so no bad weights are saved."""
        last = batch_idx + 1 >= self.trainer.num_training_batches
        if self._finite.device.type == "cpu" or last or batch_idx % self.finite_check_every == 0:
            if not bool(self._finite):
                raise NonFiniteLossError(
                    f"The training loss became NaN or infinite in epoch {self.current_epoch} (by batch {batch_idx}): "
                    "training diverged and was stopped. The last good checkpoint (last.ckpt, end of the last "
                    "finished epoch) is kept. Lower the learning rate (model.optimizer.lr=...), check the "
                    "input data for NaNs, or use trainer.precision=32-true."
                )

    def _fp32_on_cpu(self):
        """Evaluation on a CPU runs in fp32 even when training uses bf16 autocast: bf16 changed test
        predictions of a trained checkpoint (docs/results/cpu-fast-path.md), and evaluation is cheap."""
        return torch.autocast("cpu", enabled=False) if self.device.type == "cpu" else contextlib.nullcontext()

    def _eval_step(self, stage: str, batch) -> None:
        with self._fp32_on_cpu():
            self._eval_scores(stage, *batch)

    def _eval_scores(self, stage: str, x: torch.Tensor, y: torch.Tensor) -> None:
        logits = self(x).float()
        self.eval_loss[stage].update(F.cross_entropy(logits, y), weight=len(y))
        self.eval_metrics[stage].update(logits, y)
        if stage == "test":
            self._test_preds.append(logits.argmax(dim=1))
            if self.tta:
                self.eval_metrics["test_tta"].update(tta_proba(self, x), y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        with self._fp32_on_cpu():
            return self(x).float().softmax(dim=1)

    def _eval_epoch_end(self, stage: str) -> None:
        loss = self.eval_loss[stage].compute()
        computed = self.eval_metrics[stage].compute()
        self.eval_loss[stage].reset()
        self.eval_metrics[stage].reset()
        scores = {f"{stage}/loss": float(loss), **flatten_scores(computed, self.class_names, stage)}
        self.publish(stage, scores=scores, confusion=computed["confmat"].long().tolist())
        # States were synced across ranks by compute(), so every rank holds the same values; the
        # (cheap) sync_dist only tells Lightning so.
        sync = self.trainer.world_size > 1
        for key, value in scores.items():
            self.log(key, value, prog_bar=key in (f"{stage}/loss", f"{stage}/acc"), sync_dist=sync)

    def _tta_epoch_end(self) -> None:
        computed = self.eval_metrics["test_tta"].compute()
        self.eval_metrics["test_tta"].reset()
        scores = flatten_scores(computed, self.class_names, "test_tta")
        self.publish("test_tta", scores=scores, confusion=computed["confmat"].long().tolist())
        sync = self.trainer.world_size > 1
        for key, value in scores.items():
            self.log(key, value, sync_dist=sync)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._test_preds = []

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
        if self.tta:
            self._tta_epoch_end()
        preds = torch.cat(self._test_preds) if self._test_preds else torch.empty(0, dtype=torch.long, device=self.device)
        if self.trainer.world_size > 1:
            preds = self._gather_shards(preds)
        self.publish("test", predictions=preds.cpu().tolist())

    def publish(self, stage: str, **outcome) -> None:
        """Hand an evaluation's outcome to the trainer's :class:`~bloodcls.training.callbacks.EvalResults` callbacks."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, EvalResults):
                callback.record(stage, **outcome)

    def _gather_shards(self, local: torch.Tensor) -> torch.Tensor:
        """Reassemble per-rank predictions in dataset order. Evaluation shards are ``rank::world_size``
        slices without padding (``bloodcls.data.ShardSampler``), so sizes differ by at most one."""
        world = self.trainer.world_size
        sizes = self.all_gather(torch.tensor([len(local)], device=self.device)).reshape(world)
        padded = torch.full((int(sizes.max()),), -1, dtype=local.dtype, device=self.device)
        padded[: len(local)] = local
        gathered = self.all_gather(padded).reshape(world, -1)
        out = torch.empty(int(sizes.sum()), dtype=local.dtype, device=self.device)
        for rank in range(world):
            out[rank::world] = gathered[rank, : int(sizes[rank])]
        return out

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise UserError("This model has no optimizer: build it from the config (model.optimizer, conf/optimizer/, "
                            "e.g. optimizer=adam) or pass optimizer=functools.partial(torch.optim.Adam, lr=1e-4).")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch", "frequency": 1},
        }

