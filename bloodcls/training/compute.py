"""How a run computes: precision, memory layout and threads, chosen once from the hardware and the config.

Most users train on a CPU. One whose instruction set has native bf16 dot products (AVX512-BF16 or
AMX) trains these small CNNs about 2.6x faster with bf16 autocast and channels_last activations
(docs/results/cpu-fast-path.md); one without them would emulate bf16, which is slower than fp32.
So ``trainer.precision=auto`` (the default) picks bf16 on such a CPU and fp32 elsewhere, and
``data.channels_last=auto`` picks the memory layout each kind of processor was measured to train faster
with (:data:`LAYOUT_BY_PROCESSOR`); anything explicit (``trainer.precision=32-true``, ``trainer=gpu``'s
``bf16-mixed``, ``data.channels_last=false``) is used as given. Evaluation stays fp32 on the CPU either way (see
``BloodCellClassifier._eval_step``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def native_bf16() -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively, why), as torch's own CPU feature probe sees it."""
    cpu = getattr(torch, "cpu", None)
    probes = {"AMX": "_is_amx_tile_supported", "AVX512-BF16": "_is_avx512_bf16_supported"}
    found = [name for name, fn in probes.items() if callable(getattr(cpu, fn, None)) and getattr(cpu, fn)()]
    if found:
        return True, f"this CPU has {' and '.join(found)} (native bf16)"
    if not any(callable(getattr(cpu, fn, None)) for fn in probes.values()):
        return False, f"torch {torch.__version__} cannot tell whether this CPU has native bf16"
    return False, "this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, slower than fp32"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (containers,
    Slurm), not the host's core count that ``os.cpu_count()`` reports."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


# The layout data.channels_last=auto picks on a CPU, by what the processor runs training with, as measured
# (docs/results/cpu-fast-path.md). Keys: (native bf16 used, torch's CPU capability). A kind not listed keeps NCHW,
# PyTorch's default, until someone measures it.
LAYOUT_BY_PROCESSOR: dict[tuple[bool, str], tuple[bool, str]] = {
    # AVX512 with native bf16: bf16 autocast with channels_last is the measured fast path
    (True, "AVX512"): (True, "channels_last (measured faster with bf16: docs/results/cpu-fast-path.md)"),
    # AVX2 only, fp32, one thread: channels_last measured faster end to end than NCHW at the same losses
    (False, "AVX2"): (True, "channels_last (measured faster in fp32 on AVX2: docs/results/cpu-fast-path.md)"),
    # AVX512, fp32 (trainer.precision=32-true), one thread: channels_last measured faster than NCHW (bench --ablate)
    (False, "AVX512"): (True, "channels_last (measured faster in fp32 on AVX512: docs/results/cpu-fast-path.md)"),
}


def cpu_capability() -> str:
    """torch's name for the vector instructions its CPU kernels use here: AVX512, AVX2, DEFAULT, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def cpu_layout(bf16: bool) -> tuple[bool, str]:
    """(channels_last, why) for training on this CPU at this precision: the measured choice or NCHW."""
    capability = cpu_capability()
    key = (bf16, "AVX512" if capability.startswith("AVX512") else capability)
    if key in LAYOUT_BY_PROCESSOR:
        return LAYOUT_BY_PROCESSOR[key]
    return False, f"NCHW (no measurement for {'bf16' if bf16 else 'fp32'} on {capability})"


@dataclass(frozen=True)
class ComputePlan:
    """What a run uses, recorded in ``results.json`` under ``compute``."""

    device: str  # cpu | gpu (the accelerator's kind)
    precision: str  # Lightning's precision string for training
    channels_last: bool
    native_bf16: bool | None  # None on a GPU: not asked
    threads: int  # torch intra-op threads of this process
    eval_precision: str  # validation, test, TTA and predict
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _on_cpu(accelerator: str) -> bool:
    accelerator = str(accelerator).lower()
    return accelerator == "cpu" or (accelerator == AUTO and not torch.cuda.is_available())


def plan_compute(precision: Any = AUTO, channels_last: Any = AUTO, accelerator: Any = AUTO,
                 threads: Any = AUTO) -> ComputePlan:
    """Resolve ``auto`` settings for this machine. Explicit values win; ``threads=auto`` follows
    ``usable_cpus()`` unless OMP_NUM_THREADS says otherwise."""
    cpu = _on_cpu(accelerator)
    fast, why = (native_bf16() if cpu else (None, "GPU: trainer=gpu picks its own fast path"))
    if str(precision) == AUTO:
        precision = (BF16 if fast else FP32) if cpu else FP32
        reason = f"trainer.precision=auto -> {precision}: {why}"
    else:
        reason = f"trainer.precision={precision} as given"
    bf16 = "bf16" in str(precision)
    if str(channels_last) == AUTO:
        if cpu:
            channels_last, layout_why = cpu_layout(bf16)
            reason += f"; data.channels_last=auto -> {layout_why}"
        else:  # trainer=gpu sets it explicitly; a GPU run with auto follows its precision
            channels_last = bf16
    if str(threads) == AUTO:
        threads = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit() \
            else usable_cpus()
    return ComputePlan(device="cpu" if cpu else "gpu", precision=str(precision), channels_last=bool(channels_last),
                       native_bf16=fast, threads=int(threads), eval_precision="32" if cpu else str(precision),
                       reason=reason)


def apply_threads(plan: ComputePlan) -> None:
    """Set torch's intra-op threads for a CPU run (a GPU run's host threads are left as they are)."""
    if plan.device == "cpu" and torch.get_num_threads() != plan.threads:
        torch.set_num_threads(plan.threads)


def describe(plan: ComputePlan) -> str:
    layout = "channels_last" if plan.channels_last else "NCHW"
    return (f"compute: {plan.device}, {plan.precision} training ({plan.eval_precision} evaluation), {layout}, "
            f"{plan.threads} thread{'s' if plan.threads != 1 else ''}; {plan.reason}")
