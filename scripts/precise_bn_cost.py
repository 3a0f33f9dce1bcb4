"""What ``recipe=study``'s validation on precise statistics costs per epoch: the recomputation against an epoch.

    OMP_NUM_THREADS=1 python scripts/precise_bn_cost.py [experiment=baseline_aug] [--steps 12] [--max-images 2048 0]

Times, in one process on the fast path (the bench's :class:`bloodcls.training.benchmark.PathRunner`: tensor
loader, bf16 where the CPU has it, channels_last), ``--steps`` training steps, and the callback's own
recomputation (:class:`bloodcls.training.batchnorm.PreciseBatchNorm`, fp32 on a CPU) over ``max_images``
training images (0 = the whole training split; recipe=study uses 2,048). Prints seconds per training epoch, seconds per recomputation
and their ratio; docs/results/study-table-cpu.md reports what it printed. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from bloodcls.config import compose_config
from bloodcls.training.batchnorm import PreciseBatchNorm
from bloodcls.training.benchmark import PathRunner
from bloodcls.training.compute import native_bf16


class _Trainer:
    """The two attributes the callback's recomputation reads from a trainer."""

    def __init__(self, datamodule) -> None:
        self.datamodule, self.precision_plugin = datamodule, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["experiment=baseline_aug"])
    parser.add_argument("--steps", type=int, default=12, help="training steps timed (after 2 untimed)")
    parser.add_argument("--max-images", type=int, nargs="+", default=[2048, 0])
    args = parser.parse_args()
    cfg = compose_config([*args.overrides, "paths.output_dir=/tmp/bloodcls-bench"])
    device = torch.device("cpu")
    bf16 = native_bf16()[0]
    runner = PathRunner(cfg, device, fast=True, workers=0, steps=args.steps, bf16=bf16, channels_last=True,
                        compile=False)
    runner.train_once(2)
    seen, seconds = runner.train_once(args.steps)
    epoch = runner.n_train / (seen / seconds)
    print(f"{args.overrides}: {torch.get_num_threads()} thread(s), bf16={bf16}; training {seen / seconds:.1f} img/s, "
          f"{epoch:.0f} s per epoch of {runner.n_train} images (validation not counted)")
    module, trainer = runner.module, _Trainer(runner.dm)
    for count in args.max_images:
        callback = PreciseBatchNorm(when="validation", max_images=count or None)
        t0 = time.perf_counter()
        callback._recompute(trainer, module)
        spent = time.perf_counter() - t0
        print(f"  precise BN over {'all' if not count else count} training images: "
              f"{spent:.1f} s = {100 * spent / epoch:.0f} % of a training epoch")


if __name__ == "__main__":
    main()
