"""Did early stopping stop on the weights or on lagging BatchNorm statistics? Score a run's checkpoints both ways.

    OMP_NUM_THREADS=1 python scripts/precise_bn_check.py <run> [<run> ...] [--max-images N] [--json out.json]

For each run, ``last.ckpt`` (the weights early stopping gave up on) is scored on validation and test with the
running statistics it trained with (what the run's early stopping read) and again with precise statistics
recomputed over the training split (:func:`bloodcls.training.batchnorm.recompute_batchnorm`, what
``+ablation=precise_bn`` would have read). ``best.ckpt`` already holds precise statistics (the test rewrote
them), so it is scored once. If ``last`` with precise statistics beats ``best`` on validation, the run stopped on
the statistics, not the weights. docs/results/study-table-cpu.md reports what this printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bloodcls.common.tensors import to_float_images
from bloodcls.data.files import class_weights
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.training.batchnorm import recompute_batchnorm

BATCH = 256


def _batches(images: torch.Tensor, stop: int | None = None):
    stop = len(images) if stop is None else min(stop, len(images))
    for start in range(0, stop, BATCH):
        yield to_float_images(images[start:start + BATCH]).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def _score(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict:
    logits = torch.cat([net(x).float() for x in _batches(images)])
    return {"acc": round(100 * (logits.argmax(1) == labels).float().mean().item(), 2),
            "loss": round(F.cross_entropy(logits, labels, weight=weights).item(), 4)}


def check(folder: Path, max_images: int | None) -> dict:
    run = FinishedRun.open(folder)
    splits = {k: (torch.from_numpy(x), torch.from_numpy(y).flatten().long()) for k, (x, y) in run.load_splits().items()}
    weights = class_weights(splits["train"][1])
    out: dict = {"run": run.name, "experiment": run.experiment, "seed": run.seed}
    for which in ("best", "last"):
        model = load_trained(run.paths.checkpoints / f"{which}.ckpt")
        net = model.net.to(memory_format=torch.channels_last).eval()
        row: dict = {"epoch": int(model.info.get("epoch", -1)) + 1}
        if which == "last":  # best.ckpt's statistics were made precise by the run's test
            row["running"] = {s: _score(net, *splits[s], weights) for s in ("val", "test")}
            recompute_batchnorm(net, _batches(splits["train"][0], max_images))
        row["precise"] = {s: _score(net, *splits[s], weights) for s in ("val", "test")}
        out[which] = row
        print(f"{run.name} {which} (epoch {row['epoch']}): " + "; ".join(
            f"{kind} val {r['val']['acc']} % (loss {r['val']['loss']}), test {r['test']['acc']} %"
            for kind, r in row.items() if kind != "epoch"), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--max-images", type=int, default=None, help="training images for the statistics (all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [check(folder, args.max_images) for folder in args.runs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
