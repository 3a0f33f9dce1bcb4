"""A run under the shift suite: its network, results and data split in, its record and plot out."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bloodcls.common.rundir import RESULTS_FILE, find_checkpoints, read_json, write_json
from bloodcls.robustness.plots import plot, plot_examples
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import EXAMPLES_FILE, JSON_FILE, OUT_DIR, PNG_FILE, evaluate


def load_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a training checkpoint (weights only, never unpickled code) and its hyper-parameters."""
    from bloodcls.inference.checkpoint import load_trained

    trained = load_trained(checkpoint)
    return trained.net.eval(), dict(trained.hparams)


def _run_results(run: Path) -> dict[str, Any]:
    return read_json(run / RESULTS_FILE) or {}


def load_split(root: str | Path | None, img_size: int, split: str = "test", download: bool = True,
               run: Path | None = None, data: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """One split of the run's data at ``img_size`` as uint8 images and int64 labels, and where it was read: the
    BloodMNIST file under ``root``, or, for a run trained on a folder (``data``: its config), that folder with
    the run's own split (:func:`bloodcls.data.sources.run_splits`)."""
    from bloodcls.data.sources import run_splits

    arrays, path = run_splits(run, data, img_size, root=root, download=download)
    images, labels = arrays[split]
    return torch.from_numpy(images), torch.from_numpy(labels), path


def score_run(run: Path, ckpt: Path, out: Path, args: argparse.Namespace,
              cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, Path]]) -> dict[str, Any]:
    """Score one checkpoint and write its JSON and PNG into ``out``.

    ``args`` holds the suite's options as ``python -m bloodcls.robustness`` parses them (data_root,
    split, seed, batch_size, device, shifts, severities, no_download, examples); ``cache`` keeps loaded
    splits between runs of the same data file and size.
    """
    from bloodcls.data.sources import is_folder_run
    from bloodcls.runs.environment import environment

    net, hparams = load_model(ckpt)
    img_size = int(hparams.get("img_size", 128))
    previous = _run_results(run)
    data = previous.get("config", {}).get("data", {}) or {}
    root = args.data_root or data.get("root")
    key = (str(run) if is_folder_run(data) else str(root), img_size)  # a folder run has its own split
    if key not in cache:
        cache[key] = load_split(root, img_size, args.split, download=not args.no_download, run=run, data=data)
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


def reusable(path: Path, ckpt: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """The suite record at ``path`` if it scored this checkpoint with the same options, else None."""
    payload = read_json(path)
    if payload is None:
        return None
    wanted = args.shifts.split(",") if args.shifts else list(SHIFTS)
    same = (payload.get("checkpoint") == str(ckpt) and payload.get("seed") == args.seed
            and payload.get("data", {}).get("split") == args.split and list(payload.get("shifts", {})) == wanted
            and payload.get("severities") == list(args.severities))
    return payload if same else None


# What `python -m bloodcls.robustness` does when an option is not given (bloodcls.robustness.cli parses them).
DEFAULTS: dict[str, Any] = {"out": None, "data_root": None, "split": "test", "seed": 0, "batch_size": 512,
                            "device": "auto", "shifts": None, "severities": list(SEVERITIES), "no_download": False,
                            "reuse": False, "table": False, "examples": False}


def suite_options(**given: Any) -> argparse.Namespace:
    """The suite's options as the command line would parse them, with ``given`` set (sweep.py uses it)."""
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown shift-suite option(s): {sorted(unknown)}")
    return argparse.Namespace(**{**DEFAULTS, **given})


def score_targets(targets: Sequence[str | Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Score every run the targets name (run, multirun or checkpoint), one progress line each; with
    ``args.reuse`` a record already scored with the same options is kept."""
    runs = find_checkpoints(targets)
    cache: dict = {}
    payloads = []
    for run, ckpt in runs:
        if args.out:
            out = Path(args.out) / run.name if len(runs) > 1 else Path(args.out)
        else:
            out = run / OUT_DIR
        payload = reusable(out / JSON_FILE, ckpt, args) if args.reuse else None
        if payload is None:
            payload = score_run(run, ckpt, out, args, cache)
        payloads.append(payload)
        print(f"{run.name}: clean acc {100 * payload['clean_acc']:.2f} %, mean under shift "
              f"{100 * payload['mean_acc']:.2f} % (drop {100 * payload['drop_acc']:.2f}), worst "
              f"{100 * payload['worst_acc']:.2f} % ({payload['worst']}), {payload['time_s']:.0f} s -> {out / JSON_FILE}",
              flush=True)
    return payloads
