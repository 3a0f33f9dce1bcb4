"""Shift suite: how far trained classifiers fall under lab variability (python -m bloodcls.robustness)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bloodcls.errors import report_user_errors
from bloodcls.robustness.plots import plot, plot_examples
from bloodcls.robustness.runs import _run_results, load_model, load_split
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import EXAMPLES_FILE, JSON_FILE, OUT_DIR, PNG_FILE, evaluate
from bloodcls.robustness.tables import summary_table
from bloodcls.runs.rundir import find_checkpoints, read_json, write_json

log = logging.getLogger(__name__)

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bloodcls.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="+", help="run folder(s), multirun folder(s) or .ckpt file(s)")
    p.add_argument("--out", help="output folder (default <run>/robustness; with several runs, <out>/<run name>)")
    p.add_argument("--data-root", help="folder with bloodmnist_<size>.npz (default: the run's data.root, else "
                                       "~/.medmnist)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--shifts", help=f"comma-separated subset of: {','.join(SHIFTS)}")
    p.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES))
    p.add_argument("--no-download", action="store_true", help="never try to download a missing data file")
    p.add_argument("--reuse", action="store_true",
                   help="keep an existing robustness.json scored with the same seed, split, shifts and severities")
    p.add_argument("--table", action="store_true", help="print Markdown summary tables grouped by experiment")
    p.add_argument("--examples", action="store_true",
                   help="also write shift_examples.png: one test image under every shift and severity")
    return p


def score_run(run: Path, ckpt: Path, out: Path, args: argparse.Namespace,
              cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, Path]]) -> dict[str, Any]:
    """Score one checkpoint and write its JSON and PNG into ``out``."""
    from bloodcls.runs.environment import environment

    net, hparams = load_model(ckpt)
    img_size = int(hparams.get("img_size", 128))
    previous = _run_results(run)
    root = args.data_root or (previous.get("config", {}).get("data", {}) or {}).get("root")
    key = (str(root), img_size)
    if key not in cache:
        cache[key] = load_split(root, img_size, args.split, download=not args.no_download)
    images, labels, data_path = cache[key]
    shifts = args.shifts.split(",") if args.shifts else None
    result = evaluate(net, images, labels, seed=args.seed, batch_size=args.batch_size, device=args.device,
                      shifts=shifts, severities=args.severities, num_classes=int(hparams.get("num_classes", 8)))
    payload = {
        **result,
        "run": str(run),
        "checkpoint": str(ckpt),
        "experiment": previous.get("experiment"),
        "recipe": previous.get("recipe"),
        "model": hparams.get("name"),
        "train_seed": previous.get("seed"),
        "augment": previous.get("augment"),
        "results_json_test_acc": previous.get("test", {}).get("acc") if args.split == "test" else None,
        "data": {"path": str(data_path), "split": args.split},
        "environment": environment(result["device"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / JSON_FILE, payload)
    name = previous.get("run_name") or run.name
    if args.examples:
        plot_examples(images[0], out / EXAMPLES_FILE, seed=args.seed)
    plot(result, out / PNG_FILE, title=f"{name}: clean {100 * result['clean_acc']:.1f} %, "
                                        f"mean under shift {100 * result['mean_acc']:.1f} %")
    return payload


@report_user_errors
def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = find_checkpoints(args.targets)
    cache: dict = {}
    payloads = []
    for run, ckpt in runs:
        if args.out:
            out = Path(args.out) / run.name if len(runs) > 1 else Path(args.out)
        else:
            out = run / OUT_DIR
        payload = _reusable(out / JSON_FILE, ckpt, args) if args.reuse else None
        if payload is None:
            payload = score_run(run, ckpt, out, args, cache)
        payloads.append(payload)
        print(f"{run.name}: clean acc {100 * payload['clean_acc']:.2f} %, mean under shift "
              f"{100 * payload['mean_acc']:.2f} % (drop {100 * payload['drop_acc']:.2f}), worst "
              f"{100 * payload['worst_acc']:.2f} % ({payload['worst']}), {payload['time_s']:.0f} s -> {out / JSON_FILE}",
              flush=True)
    if args.table:
        print(summary_table(payloads))
    return payloads


def _reusable(path: Path, ckpt: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    payload = read_json(path)
    if payload is None:
        return None
    wanted = args.shifts.split(",") if args.shifts else list(SHIFTS)
    same = (payload.get("checkpoint") == str(ckpt) and payload.get("seed") == args.seed
            and payload.get("data", {}).get("split") == args.split and list(payload.get("shifts", {})) == wanted
            and payload.get("severities") == list(args.severities))
    return payload if same else None
