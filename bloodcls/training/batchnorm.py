"""Precise BatchNorm statistics: what validation, early stopping and the test read, made exact.

With Keras's BatchNorm (momentum 0.01 in PyTorch terms) the running statistics are a slow moving
average of batch statistics taken under dropout while the weights move, so the validation loss that
early stopping and the plateau schedule read depends as much on that estimate as on the weights: on
this project's CPU runs the *same* weights (identical training losses through epoch 7) scored 86.8 %
or 81.4 % validation accuracy with momentum 0.01 or 0.1 (docs/results/batchnorm-statistics.md). Recomputing the
statistics as an exact average over the training split, dropout off and no augmentation (Wu &
Johnson, "Rethinking 'Batch' in BatchNorm", 2021: "precise BN"), before each validation or once for
the weights the test scores, takes that estimate out; the checkpoint then holds the recomputed
statistics, so test, predict and export agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from bloodcls.common.checkpoints import read_checkpoint, write_checkpoint
from bloodcls.schema import check_value


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm's running mean/variance to their average over ``batches``; returns the batch count.

    The network runs in eval mode except its BatchNorm layers (so dropout is off); each layer's
    momentum and the network's train/eval mode are restored afterwards.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training, momenta = net.training, [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
        m.train()
    count = 0
    for x in batches:
        net(x)
        count += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)
    return count


class PreciseBatchNorm(Callback):
    """Recompute the BatchNorm statistics over the training split before validation or before the test.

    ``when="validation"``: before every validation epoch, so early stopping, the plateau schedule and
    the checkpoints read statistics that are exact for the current weights. ``when="test"``: once, for
    the weights the test scores (the restored best checkpoint); training and the choice of checkpoint
    are untouched, and the recomputed statistics are written into that checkpoint, so predict and
    export use what the test used. Uses the datamodule's in-memory training images (``max_batches`` of
    them at the evaluation batch size, all by default), prepared as for evaluation: uint8 -> float in
    [0, 1], no augmentation. Every process uses the whole split, so DDP ranks agree.
    """

    def __init__(self, when: str = "validation", max_batches: int | None = None) -> None:
        check_value("callbacks.precise_bn.when", when)  # bloodcls.schema.PRECISE_BN_WHEN
        self.when, self.max_batches = when, max_batches

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

    def _recompute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not datamodule.splits:
            datamodule.setup()
        images = datamodule.splits["train"][0]
        size = datamodule.eval_batch_size
        stop = len(images) if self.max_batches is None else min(len(images), self.max_batches * size)

        def batches():
            for start in range(0, stop, size):
                yield datamodule.prepare_batch(images[start:start + size].to(pl_module.device), train=False)

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
    names = {f"{prefix}.{buffer}" if prefix else buffer
             for prefix, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buffer in ("running_mean", "running_var", "num_batches_tracked")}
    state = module.state_dict()
    for name in names & set(ckpt["state_dict"]):
        ckpt["state_dict"][name] = state[name].detach().cpu()
    ckpt["precise_batchnorm"] = True
    write_checkpoint(checkpoint, ckpt)
