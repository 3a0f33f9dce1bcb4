"""What a run prints besides its own lines: Lightning's model summary with the project's operation count,
and Lightning's advertisements and warnings a user cannot act on filtered where they are raised.

Lightning counts FLOPs only by running ``example_input_array`` through the model, which the study's
networks do not set, so its summary printed "Total FLOPs: 0" beside a column of zeros. The summary here
gives thop's count instead (the one in ``results.json``: :func:`bloodcls.models.profiling.operation_counts`)
and leaves the per-layer column blank. Only the named messages are silenced, never a whole category.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from bloodcls.models import build_from_hparams
from bloodcls.models.profiling import operation_counts

# Lightning 2.6's own use of torch's deprecated pytree LeafSpec (lightning/pytorch/utilities/_pytree.py);
# nothing a user can change, printed once per run.
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# Lightning's model summary on bf16-mixed: mixed precision keeps fp32 weights, so its "using 32 bits instead" is
# the right size and the warning has nothing for a user to do.
MIXED_SIZE = r"Precision .*-mixed is not supported by the model summary"
LIGHTNING_LOG = "lightning.pytorch.utilities.rank_zero"  # the logger rank_zero_info writes to
TIP = re.compile(r"^\W*Tip: ")  # "💡 Tip: ... litlogger / litmodels": advertisements for Lightning's cloud


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not TIP.match(record.getMessage())


def quiet_lightning() -> None:
    """Drop Lightning's cloud tips, its LeafSpec deprecation warning and the summary's mixed-precision size
    warning (idempotent)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC, category=FutureWarning,
                            module=r"lightning\.pytorch\.utilities\._pytree")
    warnings.filterwarnings("ignore", message=MIXED_SIZE, category=UserWarning)
    log = logging.getLogger(LIGHTNING_LOG)
    if not any(isinstance(f, _NoTips) for f in log.filters):
        log.addFilter(_NoTips())


_Base = RichModelSummary if _RICH_AVAILABLE else ModelSummary


class OperationCountSummary(_Base):
    """Lightning's model summary (rich when available) whose total is thop's FLOPs of one image."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a fresh copy of the network (never the live, possibly compiled one), counted as results.json counts it
        net = build_from_hparams(pl_module.hparams, weights=False)
        self._flops = int(operation_counts(net, int(pl_module.hparams["img_size"]))["flops"])
        super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        data = [(name, [""] * len(values) if name == "FLOPs" else values) for name, values in summary_data]
        _Base.summarize(data, total_parameters, trainable_parameters, model_size, total_training_modes,
                        self._flops, **kwargs)
