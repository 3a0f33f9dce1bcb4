"""Where a result came from: device, library versions, code commit, date."""

from __future__ import annotations

import datetime as dt
import os
import platform

import torch

from bloodcls.common.checkout import git_commit


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when there is a GPU, else the CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device | str | None = None) -> str:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says) with its core count and the
    vector instructions torch's kernels use here (``AMD EPYC, 2 cores, AVX2``): the published records' processor,
    which ``device_name`` leaves out (``platform.processor()`` is empty on most Linux machines). Two machines that
    both call themselves "AMD EPYC" can differ in AVX512-BF16, which decides the fast path."""
    name = None
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.partition(":")[2].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = None
    cores = os.cpu_count()
    return ", ".join(x for x in (name, f"{cores} cores" if cores else None, capability) if x)


def environment(device: torch.device | str | None = None) -> dict[str, str | None]:
    import lightning

    return {
        "device": device_name(device),
        "processor": processor_name(),
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }
