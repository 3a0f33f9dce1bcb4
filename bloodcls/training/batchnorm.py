"""Precise BatchNorm statistics: what validation, early stopping and the test read, made exact.

With Keras's BatchNorm (momentum 0.01 in PyTorch terms) the running statistics are a slow moving
average of batch statistics taken under dropout while the weights move, so the validation loss that
early stopping and the plateau schedule read depends as much on that estimate as on the weights: on
this project's CPU runs the *same* weights (identical training losses through epoch 7) scored 86.8 %
or 81.4 % validation accuracy with momentum 0.01 or 0.1 (docs/results/batchnorm-statistics.md), and the
runs that early-stopped within 11 epochs were stopped by the estimate, not by the weights
(docs/results/study-table-cpu.md). Recomputing the statistics as an exact average over training images,
dropout off and no augmentation (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021: "precise BN"),
before each validation takes that estimate out; the checkpoint then holds the recomputed statistics, so
test, predict and export read what validation read.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from bloodcls.common.checkpoints import read_checkpoint, write_checkpoint
from bloodcls.common.sampling import stratified_sample
from bloodcls.models.batchnorm import batchnorm_buffers, recompute_batchnorm
from bloodcls.schema import check_value

__all__ = ["PreciseBatchNorm", "recompute_batchnorm", "write_statistics"]


class PreciseBatchNorm(Callback):
    """Recompute the BatchNorm statistics over the training split before validation or before the test.

    ``when="validation"``: before every validation epoch, so early stopping, the plateau schedule and
    the checkpoints read statistics that are exact for the current weights. ``when="test"``: once, for
    the weights the test scores (the restored best checkpoint); training and the choice of checkpoint
    are untouched, and the recomputed statistics are written into that checkpoint, so predict and
    export use what the test used. Uses ``max_images`` of the datamodule's in-memory training images
    (all of them when None), a seeded sample stratified by class (:func:`stratified_sample`: the same
    images at every validation of a run, each class in its share of the split; a folder dataset's arrays
    are in class order, so the first N would be the first classes), prepared as for evaluation: uint8 ->
    float in [0, 1], no augmentation. Every process uses the same images, so DDP ranks agree.
    """

    def __init__(self, when: str = "validation", max_images: int | None = None, seed: int = 0) -> None:
        check_value("callbacks.precise_bn.when", when)  # bloodcls.schema.PRECISE_BN_WHEN
        if max_images is not None and (not isinstance(max_images, int) or isinstance(max_images, bool)
                                       or max_images < 1):
            raise ValueError(f"callbacks.precise_bn.max_images must be a whole number >= 1 or null, got {max_images!r}")
        self.when, self.max_images, self.seed = when, max_images, seed
        self._sample: tuple[int, torch.Tensor] | None = None  # (split size, indices)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "validation" and not trainer.sanity_checking and not _frozen(pl_module):
            self._recompute(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when != "test" or _frozen(pl_module):
            return
        self._recompute(trainer, pl_module)
        own = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        path = Path(trainer.ckpt_path) if trainer.ckpt_path else None
        # only this run's own checkpoint is rewritten, never one a user handed in (train=false ckpt_path=...)
        if path and own and path.parent.resolve() == Path(own).resolve() and trainer.is_global_zero:
            write_statistics(path, pl_module)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        """The indices of the training images the statistics are recomputed from (drawn once per run)."""
        if self._sample is None or self._sample[0] != len(labels):
            indices = stratified_sample(labels.cpu().numpy(), self.max_images, self.seed)
            self._sample = (len(labels), torch.from_numpy(indices))
        return self._sample[1]

    def _recompute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not datamodule.splits:
            datamodule.setup()
        images, labels = datamodule.splits["train"]
        chosen = self.sample(labels).to(images.device)
        size = datamodule.eval_batch_size

        def batches():
            for start in range(0, len(chosen), size):
                x = images[chosen[start:start + size]]
                yield datamodule.prepare_batch(x.to(pl_module.device), train=False)

        # The statistics of the activations evaluation will see: fp32 on a CPU (the module evaluates there in
        # fp32 even when training in bf16), the trainer's precision elsewhere.
        context = (torch.autocast("cpu", enabled=False) if pl_module.device.type == "cpu"
                   else trainer.precision_plugin.forward_context())
        with context:
            recompute_batchnorm(pl_module.net, batches())


def _frozen(pl_module: L.LightningModule) -> bool:
    """model.freeze=backbone: the frozen BatchNorm layers keep the statistics the network was fine-tuned from."""
    return getattr(pl_module, "frozen", None) == "backbone"


def write_statistics(checkpoint: Path, module: nn.Module) -> None:
    """Replace the BatchNorm buffers in a Lightning checkpoint file by the module's (atomically)."""
    ckpt = read_checkpoint(checkpoint)
    names = batchnorm_buffers(module)
    state = module.state_dict()
    for name in names & set(ckpt["state_dict"]):
        ckpt["state_dict"][name] = state[name].detach().cpu()
    ckpt["precise_batchnorm"] = True
    write_checkpoint(checkpoint, ckpt)
