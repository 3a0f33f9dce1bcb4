"""Shift suite: how far a trained classifier's accuracy falls under lab variability.

``python -m bloodcls.robustness <run folder | checkpoint | multirun folder> [...]`` scores the test
split clean and under every shift of :mod:`bloodcls.shifts` at severities 1..5, and writes
``robustness.json`` and ``robustness.png`` (accuracy vs. severity, one line per shift) into
``<run>/robustness/`` (or ``--out``). :func:`evaluate` is the library entry point (``sweep.py``).

Determinism: the shifted images depend only on the seed, the shift, the severity and the image's
position in the split: shifts run on fixed chunks of :data:`CHUNK` images, each with its own CPU
generator, so the batch size and the device (CPU or GPU) do not change which images a model sees.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from bloodcls.errors import UserError, report_user_errors
from bloodcls.images import to_float_images
from bloodcls.rundir import CHECKPOINT_DIR, RESULTS_FILE, read_json, run_checkpoint, write_json
from bloodcls.shifts import SEVERITIES, SHIFTS
from bloodcls.stats import format_mean_std

log = logging.getLogger(__name__)

CHUNK = 512  # images shifted together with one generator (fixed, so results do not depend on batch_size)
OUT_DIR = "robustness"
JSON_FILE = "robustness.json"
PNG_FILE = "robustness.png"
EXAMPLES_FILE = "shift_examples.png"


# -- the suite ---------------------------------------------------------------------------------------------------

def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _generator(seed: int, shift: str, severity: int, chunk: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{shift}/{severity}/{chunk}".encode()))


@torch.inference_mode()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


def _scores(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, float]:
    acc = multiclass_accuracy(preds, labels, num_classes=num_classes, average="micro")
    f1 = multiclass_f1_score(preds, labels, num_classes=num_classes, average="macro")
    return float(acc), float(f1)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    shifts: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    num_classes: int = 8,
) -> dict[str, Any]:
    """Score ``model`` (logits out, float N x 3 x S x S in [0, 1] in) clean and under graded shifts.

    ``images`` are uint8 N x S x S x 3 (a split as the DataModule holds it), ``labels`` int N.
    A copy of the model is run in eval mode, channels-last (about 1.6x faster on CPU), on ``device``
    (None/"auto": CUDA when available); the caller's model is left as it was.

    Returns a JSON-ready dict:

    - ``clean_acc``, ``clean_f1``: accuracy and macro-F1 on the unshifted images;
    - ``mean_acc``, ``mean_f1``: the mean over every shift x severity scored;
    - ``drop_acc``, ``drop_f1``: clean minus mean (positive = worse under shift);
    - ``worst_acc`` and ``worst`` (``"<shift>@<severity>"``): the lowest accuracy;
    - ``severities``: the severities scored, e.g. ``[1, 2, 3, 4, 5]``;
    - ``per_severity``: ``{"acc": [...], "f1": [...]}``, the mean over shifts at each severity;
    - ``shifts``: ``{name: {"description", "levels", "acc", "f1", "mean_acc", "mean_f1"}}`` with
      lists aligned with ``severities`` (``levels``: the shift's parameter at each severity);
    - ``seed``, ``n_images``, ``img_size``, ``device``, ``time_s``.
    """
    names = list(shifts) if shifts is not None else list(SHIFTS)
    if unknown := [n for n in names if n not in SHIFTS]:
        raise UserError(f"Unknown shift(s) {unknown}; known shifts: {', '.join(SHIFTS)}.")
    severities = [int(s) for s in severities]
    if bad := [s for s in severities if s not in SEVERITIES]:
        raise UserError(f"Severities must be in {list(SEVERITIES)}, got {bad}.")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 N x S x S x 3, got {images.dtype} {tuple(images.shape)}")
    dev = _resolve_device(device)
    t0 = time.perf_counter()
    model = copy.deepcopy(model).to(dev, memory_format=torch.channels_last).eval()
    images, labels = images.to(dev), labels.to(dev).long().reshape(-1)
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]

    def to_float(u8: torch.Tensor) -> torch.Tensor:
        return to_float_images(u8).contiguous(memory_format=torch.channels_last)

    clean_preds = torch.cat([_predict(model, to_float(c), batch_size) for c in chunks])
    clean_acc, clean_f1 = _scores(clean_preds, labels, num_classes)
    per_shift: dict[str, dict[str, Any]] = {}
    for name in names:
        shift = SHIFTS[name]
        accs, f1s = [], []
        for sev in severities:
            preds = [_predict(model, shift(to_float(c), sev, _generator(seed, name, sev, k))
                                   .contiguous(memory_format=torch.channels_last), batch_size)
                     for k, c in enumerate(chunks)]
            acc, f1 = _scores(torch.cat(preds), labels, num_classes)
            accs.append(acc)
            f1s.append(f1)
        per_shift[name] = {
            "description": shift.description,
            "levels": [shift.levels[s - 1] for s in severities],
            "acc": accs,
            "f1": f1s,
            "mean_acc": sum(accs) / len(accs) if accs else None,
            "mean_f1": sum(f1s) / len(f1s) if f1s else None,
        }
    all_acc = [(a, f"{n}@{s}") for n, r in per_shift.items() for a, s in zip(r["acc"], severities, strict=True)]
    all_f1 = [f for r in per_shift.values() for f in r["f1"]]
    mean_acc = sum(a for a, _ in all_acc) / len(all_acc) if all_acc else clean_acc
    mean_f1 = sum(all_f1) / len(all_f1) if all_f1 else clean_f1
    worst_acc, worst = min(all_acc) if all_acc else (clean_acc, "clean")
    per_severity = {
        key: [sum(r[key][i] for r in per_shift.values()) / len(per_shift) for i in range(len(severities))]
        if per_shift else [] for key in ("acc", "f1")
    }
    return {
        "clean_acc": clean_acc,
        "clean_f1": clean_f1,
        "mean_acc": mean_acc,
        "mean_f1": mean_f1,
        "drop_acc": clean_acc - mean_acc,
        "drop_f1": clean_f1 - mean_f1,
        "worst_acc": worst_acc,
        "worst": worst,
        "severities": severities,
        "per_severity": per_severity,
        "shifts": per_shift,
        "seed": seed,
        "n_images": len(labels),
        "img_size": int(images.shape[1]),
        "device": str(dev),
        "time_s": time.perf_counter() - t0,
    }


def plot(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Accuracy vs. severity (0 = clean), one line per shift, the mean over shifts in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [0, *result["severities"]]
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab20")
    for i, (name, r) in enumerate(result["shifts"].items()):
        ax.plot(x, [100 * result["clean_acc"], *(100 * a for a in r["acc"])], marker="o", ms=3, lw=1.2,
                color=cmap(i % 20), label=name)
    ax.plot(x, [100 * result["clean_acc"], *(100 * a for a in result["per_severity"]["acc"])], color="black",
            lw=2.5, ls="--", label="mean over shifts")
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(x)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"clean {100 * result['clean_acc']:.1f} %, mean under shift {100 * result['mean_acc']:.1f} %",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_examples(image: torch.Tensor, path: str | Path, seed: int = 0) -> Path:
    """One uint8 S x S x 3 image under every shift at severities 0..5 (to judge what a severity looks like)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = image.permute(2, 0, 1).unsqueeze(0).float().div(255)
    fig, axes = plt.subplots(len(SHIFTS), 6, figsize=(6 * 1.2, len(SHIFTS) * 1.25), squeeze=False)
    for r, (name, shift) in enumerate(SHIFTS.items()):
        for sev in range(6):
            ax = axes[r][sev]
            ax.imshow(shift(x, sev, _generator(seed, name, sev, 0))[0].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if sev == 0:
                ax.set_ylabel(name, fontsize=7)
            if r == 0:
                ax.set_title("clean" if sev == 0 else f"severity {sev}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- runs, checkpoints and data ----------------------------------------------------------------------------------

def load_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a training checkpoint (weights only, never unpickled code) and its hyper-parameters."""
    from bloodcls.checkpoint import load_trained

    trained = load_trained(checkpoint)
    return trained.net.eval(), dict(trained.hparams)


def find_checkpoints(targets: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """``(run folder, checkpoint)`` per target: a .ckpt file, a run folder, or a multirun folder of runs."""
    found: list[tuple[Path, Path]] = []
    for target in map(Path, targets):
        if target.is_file():
            run = target.parent.parent if target.parent.name == CHECKPOINT_DIR else target.parent
            found.append((run, target))
        elif target.is_dir():
            ckpt = run_checkpoint(target)
            if ckpt is not None:
                found.append((target, ckpt))
                continue
            runs = [(d, c) for d in sorted(p for p in target.iterdir() if p.is_dir())
                    if (c := run_checkpoint(d)) is not None]
            if not runs:
                raise UserError(f"{target} holds no checkpoints: expected a run folder with checkpoints/best.ckpt "
                                "(or last.ckpt), a multirun folder of such runs, or a .ckpt file.")
            found.extend(runs)
        else:
            raise UserError(f"{target} does not exist: pass a run folder (outputs/runs/...), a multirun folder or a "
                            ".ckpt file.")
    return found


def _run_results(run: Path) -> dict[str, Any]:
    return read_json(run / RESULTS_FILE) or {}


def load_split(root: str | Path | None, img_size: int, split: str = "test",
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """One split of the BloodMNIST file at ``img_size`` as uint8 images and int64 labels, and its path."""
    from bloodcls.data import default_root, ensure_file, load_npz

    path = ensure_file(root or default_root(), img_size, download)
    images, labels = load_npz(path, img_size)[split]
    return torch.from_numpy(images), torch.from_numpy(labels), path


# -- report ------------------------------------------------------------------------------------------------------

def _pct(values: Sequence[float]) -> str:
    return format_mean_std(values, scale=100, bare_single=True)


def summary_table(payloads: Sequence[dict[str, Any]]) -> str:
    """Markdown tables over scored runs, grouped by experiment: mean ± std (sample) over the runs.

    The first table has clean and shifted accuracy / macro-F1 and the drop; the second the mean
    accuracy of each shift over its severities, and of each severity over the shifts.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in payloads:
        name = str(p.get("experiment") or p.get("model") or Path(p["run"]).name)
        name += f" `recipe={p['recipe']}`" if p.get("recipe") else ""  # runs of one experiment, two recipes
        groups.setdefault(name, []).append(p)
    lines = ["| recipe | runs | seeds | clean acc (%) | acc under shift (%) | drop (points) | clean macro-F1 (%) "
             "| macro-F1 under shift (%) |", "|---|---|---|---|---|---|---|---|"]
    for name, runs in groups.items():
        seeds = ",".join(str(r.get("train_seed")) for r in runs)
        lines.append(f"| {name} | {len(runs)} | {seeds} | {_pct([r['clean_acc'] for r in runs])} | "
                     f"{_pct([r['mean_acc'] for r in runs])} | {_pct([r['drop_acc'] for r in runs])} | "
                     f"{_pct([r['clean_f1'] for r in runs])} | {_pct([r['mean_f1'] for r in runs])} |")
    names = list(groups)
    lines += ["", "| mean acc (%) over severities | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    shifts = list(next(iter(groups.values()))[0]["shifts"]) if groups else []
    for shift in shifts:
        cells = [_pct([r["shifts"][shift]["mean_acc"] for r in runs if shift in r["shifts"]])
                 for runs in groups.values()]
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    severities = next(iter(groups.values()))[0]["severities"] if groups else []
    for i, sev in enumerate(severities):
        cells = [_pct([r["per_severity"]["acc"][i] for r in runs]) for runs in groups.values()]
        lines.append(f"| all shifts, severity {sev} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- CLI ---------------------------------------------------------------------------------------------------------

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
    from bloodcls.environment import environment

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


if __name__ == "__main__":
    main(sys.argv[1:])
