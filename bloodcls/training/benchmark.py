"""Benchmark the plain DataLoader path against the fast path, same model and batch size, one process.

    bloodcls bench experiment=inception [--all] [--reps 3] [--steps N] [--workers 4] [--ablate]
                             [--json bench.json] [hydra overrides ...]

(a) plain: torch DataLoader over the arrays, per-sample torchvision v2 transforms in ``--workers``
    worker processes, fp32, NCHW, host-to-device copy of every batch;
(b) fast:  the whole dataset resident on the device, batches as index slices, batched augmentation
    on the device; on CUDA also bf16 autocast, channels_last and fused Adam (``trainer=gpu``);
(c) tensor_fp32: the fast path's batches in fp32 and NCHW, the default before bf16. plain differs from fast in
    three ways at once (loader, precision, memory layout); fast against tensor_fp32 isolates the numerics, like
    with like (``speedup_train_vs_fp32``).

Both paths run the same training step (forward, class-weighted cross-entropy, backward, Adam) in a
plain loop, so the numbers are the data path and numerics, not Lightning's bookkeeping; the timed
sweep (docs/results/gpu-fast-path.md) gives the end-to-end figure. Warm-up steps are excluded; each figure is the median
of ``--reps`` repetitions. Training FLOPs per image are taken as 3x the forward FLOPs (6 x MACs).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import hydra
import torch
import torch.nn.functional as F

from bloodcls.common.markdown import md_table
from bloodcls.models.profiling import operation_counts

# Dense bf16 tensor-core peaks from vendor datasheets (TFLOP/s); only a reference line.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0,
                    "T4": 65.0, "V100": 125.0}


def peak_tflops(device_name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


@dataclass
class PathResult:
    path: str
    train_images_per_s: float
    epoch_s: float
    epoch_measured: bool
    infer_images_per_s: float
    train_tflops: float
    infer_tflops: float
    settings: dict = field(default_factory=dict)
    reps_train_images_per_s: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(loader, limit: int | None) -> Iterator:
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch


def _compose(overrides: list[str]):
    from bloodcls.config import compose_config

    return compose_config([*overrides, "paths.output_dir=/tmp/bloodcls-bench"])


class PathRunner:
    """One configuration of the data path and numerics, ready to time training and inference."""

    def __init__(self, cfg, device: torch.device, *, fast: bool, workers: int, steps: int | None, bf16: bool,
                 channels_last: bool, compile: bool | str) -> None:
        # the configured data (BloodMNIST or data=folder), read once per process; on_device moves it
        dm = hydra.utils.instantiate(cfg.data, loader="tensor" if fast else "torch", num_workers=0 if fast else workers,
                                     on_device="true" if fast and device.type == "cuda" else "false",
                                     channels_last=channels_last)
        dm.setup()
        torch.manual_seed(0)
        self.module = hydra.utils.instantiate(cfg.model, num_classes=dm.num_classes, class_names=dm.class_names,
                                              channels_last=channels_last, compile=compile).to(device)
        captured = self.module.compile_for(device) if compile == "graphs" else False
        opt_kw = {"fused": True} if fast and device.type == "cuda" else {}
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=float(cfg.model.optimizer.lr), **opt_kw)
        self.dm, self.device, self.steps, self.bf16 = dm, device, steps, bf16
        self.weight = dm.class_weights.to(device)
        self.n_train = len(dm.splits["train"][1])
        self.train_loader, self.test_loader = dm.train_dataloader(), dm.test_dataloader()
        # On the CPU a full test pass is minutes: time a few eval batches there.
        self.infer_steps = None if steps is None else max(1, steps // 4)
        self.settings = {"bf16": bf16, "channels_last": channels_last, "compile": compile, "cuda_graphs": captured,
                         "workers": 0 if fast else workers, "on_device": fast and device.type == "cuda"}

    def train_once(self, limit: int | None) -> tuple[int, float]:
        module, device = self.module, self.device
        module.train()
        _sync(device)
        t0, seen = time.perf_counter(), 0
        for x, y in _batches(self.train_loader, limit):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = self.dm.prepare_batch(x, train=True)
            with _autocast(device, self.bf16):
                logits = module(x)
            loss = F.cross_entropy(logits.float(), y, weight=self.weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seen += len(y)
        _sync(device)
        return seen, time.perf_counter() - t0

    def warm_up(self, steps: int) -> float:
        """Untimed steps (worker start-up, cuDNN autotuning, torch.compile); returns their wall time, so
        a compiled path's compile cost can be set against its gain."""
        t0 = time.perf_counter()
        self.train_once(steps)
        self.infer_once()
        return time.perf_counter() - t0

    @torch.no_grad()
    def infer_once(self) -> float:
        self.module.eval()
        _sync(self.device)
        t0, seen = time.perf_counter(), 0
        for x, y in _batches(self.test_loader, self.infer_steps):
            x = self.dm.prepare_batch(x.to(self.device, non_blocking=True), train=False)
            with _autocast(self.device, self.bf16):
                self.module(x)
            seen += len(y)
        _sync(self.device)
        return seen / (time.perf_counter() - t0)


def time_paths(runners: dict[str, PathRunner], *, reps: int, warmup: int, macs: float) -> dict[str, PathResult]:
    """Warm every runner up, then interleave their repetitions so background load hits all alike."""
    for r in runners.values():
        r.train_once(warmup)  # worker start-up, cuDNN autotuning, compilation
        r.infer_once()
    rates: dict[str, list[float]] = {k: [] for k in runners}
    epochs: dict[str, list[float]] = {k: [] for k in runners}
    infers: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(reps):
        for name, r in runners.items():
            seen, dt = r.train_once(r.steps)
            rates[name].append(seen / dt)
            epochs[name].append(dt if r.steps is None else r.n_train / (seen / dt))
            infers[name].append(r.infer_once())
    out = {}
    for name, r in runners.items():
        train_rate, infer = statistics.median(rates[name]), statistics.median(infers[name])
        out[name] = PathResult(
            path=name, train_images_per_s=train_rate, epoch_s=statistics.median(epochs[name]),
            epoch_measured=r.steps is None, infer_images_per_s=infer,
            train_tflops=train_rate * 6 * macs / 1e12, infer_tflops=infer * 2 * macs / 1e12,
            settings=r.settings, reps_train_images_per_s=rates[name])
    return out


def augmentation_microbench(size: int, device: torch.device, batch: int = 64, reps: int = 20) -> dict[str, float]:
    """ms per batch of the study's augmentation: our single grid_sample vs. kornia's three ops."""
    from bloodcls.data.augmentation import GeometricAugment

    x = torch.rand(batch, 3, size, size, device=device)
    candidates = {"torch_grid_sample": GeometricAugment()}
    try:
        import kornia.augmentation as K

        candidates["kornia"] = K.AugmentationSequential(
            K.RandomRotation90(times=(0, 3), p=1.0), K.RandomHorizontalFlip(),
            K.RandomResizedCrop((size, size), scale=(0.9, 1.0), ratio=(1.0, 1.0)))
    except ImportError:
        pass
    out = {}
    for name, aug in candidates.items():
        aug(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            aug(x)
        _sync(device)
        out[name] = (time.perf_counter() - t0) / reps * 1e3
    return out


def bench_experiment(experiment: str, overrides: list[str], device: torch.device, args) -> dict:
    """Every path of one experiment, at each of ``args.threads`` (CPU thread counts; one pass on CUDA).

    ``paths`` holds the first thread count's results (one thread on a CPU), ``by_threads`` all of them.
    """
    cfg = _compose([f"experiment={experiment}", *overrides])
    size = int(cfg.data.img_size)
    from bloodcls.models import build_from_hparams
    from bloodcls.training.compute import native_bf16

    macs = operation_counts(build_from_hparams({**cfg.model, "img_size": size}, weights=False), size)["macs"]
    cuda = device.type == "cuda"
    # bf16 where the device runs it natively: a GPU with bf16, a CPU with AVX512-BF16 or AMX (else emulated, slower)
    bf16_ok = torch.cuda.is_bf16_supported() if cuda else native_bf16()[0]
    common = dict(workers=args.workers, steps=args.steps)
    variants = [("plain", dict(fast=False, bf16=False, channels_last=False, compile=False)),
                ("fast", dict(fast=True, bf16=bf16_ok, channels_last=True, compile=args.compile)),
                ("tensor_fp32", dict(fast=True, bf16=False, channels_last=False, compile=False))]
    if cuda:  # model.compile=graphs: CUDA graphs via torch.compile(mode="reduce-overhead")
        variants.append(("fast_graphs", dict(fast=True, bf16=bf16_ok, channels_last=True, compile="graphs")))
    if args.ablate:
        variants += [("fast_fp32", dict(fast=True, bf16=False, channels_last=True, compile=False)),
                     ("fast_nchw", dict(fast=True, bf16=bf16_ok, channels_last=False, compile=False))]
        if args.compile_ablate:
            variants.append(("fast_compile", dict(fast=True, bf16=bf16_ok, channels_last=True, compile=True)))
    thread_counts = [None] if cuda else list(args.threads)
    by_threads: dict[str, dict] = {}
    for threads in thread_counts:
        if threads is not None:
            torch.set_num_threads(threads)
        runners = {name: PathRunner(cfg, device, **kw, **common) for name, kw in variants}
        t0 = time.perf_counter()
        warm = {name: r.warm_up(args.warmup) for name, r in runners.items()}
        timed = time_paths(runners, reps=args.reps, warmup=0, macs=macs)
        results = {name: {**asdict(res), "threads": threads, "warmup_s": warm[name]} for name, res in timed.items()}
        for name, res in timed.items():
            print(f"  {experiment:13s} {name:13s} {'' if threads is None else f'{threads} thr ':6s}"
                  f"train {res.train_images_per_s:9.0f} img/s  epoch {res.epoch_s:7.2f} s"
                  f"{'' if res.epoch_measured else ' (est.)'}  infer {res.infer_images_per_s:9.0f} img/s",
                  file=sys.stderr, flush=True)
        by_threads[str(threads or "default")] = {"paths": results, "wall_s": time.perf_counter() - t0}
    first = next(iter(by_threads.values()))["paths"]
    plain, fast, fp32 = first["plain"], first["fast"], first["tensor_fp32"]
    row = {
        "experiment": experiment, "model": cfg.model.name, "img_size": size, "batch_size": int(cfg.data.batch_size),
        "macs": macs, "paths": first, "by_threads": by_threads,
        "speedup_train": fast["train_images_per_s"] / plain["train_images_per_s"],
        "speedup_infer": fast["infer_images_per_s"] / plain["infer_images_per_s"],
        "speedup_train_vs_fp32": fast["train_images_per_s"] / fp32["train_images_per_s"],
        "augmentation_ms_per_batch": augmentation_microbench(size, device, int(cfg.data.batch_size)),
    }
    if "fast_graphs" in first:
        row["speedup_train_graphs"] = first["fast_graphs"]["train_images_per_s"] / plain["train_images_per_s"]
    return row


def format_table(report: dict) -> str:
    peak = report.get("peak_bf16_tflops")
    header = ["experiment", "path", "threads", "train img/s", "epoch (s)", "infer img/s", "train TFLOP/s",
              *(["% bf16 peak"] if peak else []), "vs. plain", "vs. tensor fp32", "bf16", "channels_last"]
    rows = []
    for row in report["experiments"]:
        for threads, result in row.get("by_threads", {"default": {"paths": row["paths"]}}).items():
            paths = result["paths"]
            for name, p in paths.items():
                speed = p["train_images_per_s"] / paths["plain"]["train_images_per_s"]
                like = paths.get("tensor_fp32")
                vs_fp32 = f"{p['train_images_per_s'] / like['train_images_per_s']:.2f}x" if like else "–"
                epoch = f"{p['epoch_s']:.2f}" + ("" if p["epoch_measured"] else " (est.)")
                cells = [row["experiment"], name, threads, f"{p['train_images_per_s']:,.0f}", epoch,
                         f"{p['infer_images_per_s']:,.0f}", f"{p['train_tflops']:.2f}"]
                if peak:
                    cells.append(f"{100 * p['train_tflops'] / peak:.1f}")
                settings = p.get("settings", {})
                cells += [f"{speed:.2f}x", vs_fp32, "yes" if settings.get("bf16") else "no",
                          "yes" if settings.get("channels_last") else "no"]
                rows.append(cells)
    return "\n".join(md_table(header, rows))
