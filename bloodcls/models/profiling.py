"""Efficiency figures reported by the study: parameters, memory, operations."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """Trainable parameters; plus BatchNorm running statistics (Keras's "Total params"); memory in MiB.

    The study's memory column is that total in float32: ``total * 4 / 2**20``.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    bn_stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    total = trainable + frozen + bn_stats
    return {"params_trainable": trainable, "params_with_bn_stats": total, "memory_mib": total * 4 / 2**20}


def operation_counts(model: nn.Module, img_size: int, in_channels: int = 3) -> dict[str, float]:
    """Forward MACs for one image as counted by thop, and FLOPs taken as 2 x MACs.

    thop attaches ``total_ops``/``total_params`` buffers to every module it visits, so it runs on a
    deep copy in float32 on the CPU and the caller's model is left untouched.
    """
    import thop

    probe = copy.deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        macs, _ = thop.profile(probe, inputs=(torch.zeros(1, in_channels, img_size, img_size),), verbose=False)
    return {"macs": float(macs), "flops": 2.0 * float(macs)}


def efficiency(model: nn.Module, img_size: int) -> dict[str, float]:
    return {**parameter_counts(model), **operation_counts(model, img_size)}
