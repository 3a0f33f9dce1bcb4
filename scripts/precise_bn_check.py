"""Did early stopping stop on the weights or on the BatchNorm statistics? Score a run's checkpoints both ways.

    OMP_NUM_THREADS=1 python scripts/precise_bn_check.py <run or sweep> [...] [--max-images N] [--json out.json]
        [--table]
    python scripts/precise_bn_check.py --from-json results/evidence/pbn_check_128.json --table

For each run, ``best.ckpt`` (the epoch early stopping kept) and ``last.ckpt`` (the epoch it gave up on) are
scored on validation with the statistics they hold (``saved``: the running average under
``+ablation=running_bn``'s training, the 2,048-image recomputation under ``recipe=study``'s) and again with
statistics recomputed over the whole training split (``exact``, :func:`bloodcls.models.batchnorm.recompute_batchnorm`).
Early stopping *fired on noise* when the weights it gave up on read better on exact statistics (lower validation
loss) than the weights it kept. ``--table`` prints the choice of docs/results/validation-statistics.md, one row
per recipe, from validation only, then one row per run; the test accuracies come after, once the choice is made.
``--json`` adds the runs scored to the file (a run scored again replaces its row), so pairs that finish in different
stretches of work accumulate in one record; ``--from-json`` prints the tables from such files without scoring, and
tests/test_precise_bn_check.py checks that the page's tables are what it prints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bloodcls.common.tensors import to_float_images
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.models.batchnorm import recompute_batchnorm

BATCH = 256


def _batches(images: torch.Tensor, stop: int | None = None):
    stop = len(images) if stop is None else min(stop, len(images))
    for start in range(0, stop, BATCH):
        yield to_float_images(images[start:start + BATCH]).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def _score(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy and the loss early stopping monitors: ``val/loss`` is the plain cross-entropy averaged over images
    (the class weights are the training loss's only), so kept and last epochs compare on what the run read."""
    logits = torch.cat([net(x).float() for x in _batches(images)])
    return {"acc": round(100 * (logits.argmax(1) == labels).float().mean().item(), 2),
            "loss": round(F.cross_entropy(logits, labels).item(), 4)}


def check(folder: Path, max_images: int | None = None) -> dict:
    run = FinishedRun.open(folder)
    splits = {k: (torch.from_numpy(x), torch.from_numpy(y).flatten().long()) for k, (x, y) in run.load_splits().items()}
    config = run.results.config if run.results else {}
    out: dict = {"run": run.name, "experiment": run.experiment, "seed": run.seed,
                 "recipe": run.results.recipe_label if run.results else None,
                 "epochs": len(run.results.history) if run.results else None,
                 "max_epochs": (config.get("trainer") or {}).get("max_epochs")}
    for which in ("best", "last"):
        model = load_trained(run.paths.checkpoints / f"{which}.ckpt")
        net = model.net.to(memory_format=torch.channels_last).eval()
        row: dict = {"epoch": int(model.info.get("epoch", -1)) + 1,
                     "saved": {s: _score(net, *splits[s]) for s in ("val", "test")}}
        recompute_batchnorm(net, _batches(splits["train"][0], max_images))
        row["exact"] = {s: _score(net, *splits[s]) for s in ("val", "test")}
        out[which] = row
        print(f"{run.name} {which} (epoch {row['epoch']}): " + "; ".join(
            f"{kind} val {row[kind]['val']['acc']} % (loss {row[kind]['val']['loss']})" for kind in ("saved", "exact")),
            flush=True)
    out["early_stopped"] = out["epochs"] is not None and out["max_epochs"] is not None and out["epochs"] < out["max_epochs"]
    out["stopped_on_noise"] = out["early_stopped"] and out["last"]["exact"]["val"]["loss"] < out["best"]["exact"]["val"]["loss"]
    return out


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "–"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def choice_table(rows: list[dict]) -> str:
    """Validation only: per recipe and experiment, the kept epoch's validation loss on exact statistics and how often
    early stopping fired on noise."""
    lines = ["| experiment | recipe | runs | epochs trained | kept epoch | kept val loss, exact statistics | "
             "early stopped | stopped on noise |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["experiment"], r["recipe"]), []).append(r)
    for (experiment, recipe), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        lines.append(f"| {experiment} | `{recipe}` | {len(runs)} | {' / '.join(str(r['epochs']) for r in runs)} | "
                     f"{' / '.join(str(r['best']['epoch']) for r in runs)} | "
                     f"{_mean_std([r['best']['exact']['val']['loss'] for r in runs], 4)} | "
                     f"{sum(r['early_stopped'] for r in runs)} of {len(runs)} | "
                     f"{sum(r['stopped_on_noise'] for r in runs)} of {len(runs)} |")
    return "\n".join(lines)


def runs_table(rows: list[dict]) -> str:
    """Validation only, one row per run: what validation read of the kept and the last checkpoint (saved statistics)
    against what the weights are worth (exact statistics); the last in bold where early stopping fired on noise."""
    lines = ["| experiment | seed | recipe | epochs trained | kept epoch | kept val loss, saved → exact | "
             "last val loss, saved → exact | stopped on noise |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["experiment"], r["seed"], r["recipe"])):
        kept, last = (f"{r[w]['saved']['val']['loss']:.4f} → {r[w]['exact']['val']['loss']:.4f}" for w in ("best", "last"))
        noise = r["stopped_on_noise"]
        lines.append(f"| {r['experiment']} | {r['seed']} | `{r['recipe']}` | {r['epochs']} | {r['best']['epoch']} | "
                     f"{kept} | {f'**{last}**' if noise else last} | {'yes' if noise else 'no'} |")
    return "\n".join(lines)


def merged(path: Path, rows: list[dict]) -> list[dict]:
    """The rows already in ``path`` with ``rows`` added; a run scored again (same run and recipe) replaces its row."""
    key = lambda r: (r["run"], r["recipe"])  # noqa: E731
    kept = {key(r): r for r in (json.loads(path.read_text()) if path.is_file() else [])}
    kept.update({key(r): r for r in rows})
    return sorted(kept.values(), key=lambda r: (r["experiment"], r["recipe"], r["seed"]))


def test_table(rows: list[dict]) -> str:
    """After the choice: the test accuracy of the kept checkpoint as the run scored it (saved statistics)."""
    lines = ["| experiment | recipe | seeds | test acc (%), kept checkpoint | per seed |", "|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["experiment"], r["recipe"]), []).append(r)
    for (experiment, recipe), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        accs = [r["best"]["saved"]["test"]["acc"] for r in runs]
        lines.append(f"| {experiment} | `{recipe}` | {', '.join(str(r['seed']) for r in runs)} | "
                     f"{_mean_std(accs, 2)} | {' / '.join(f'{a:.2f}' for a in accs)} |")
    return "\n".join(lines)


def run_folders(targets: list[Path]) -> list[Path]:
    """Run folders as given, and the completed runs of sweep folders (``<sweep>/runs/*``)."""
    found = []
    for target in targets:
        runs = target / "runs"
        found += sorted(p for p in runs.iterdir() if (p / "results.json").is_file()) if runs.is_dir() else [target]
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders or sweep folders")
    parser.add_argument("--max-images", type=int, default=None, help="training images for the statistics (all)")
    parser.add_argument("--json", type=Path, default=None, help="add the runs scored to this file (kept rows stay)")
    parser.add_argument("--from-json", type=Path, nargs="+", default=[], help="rows scored before: print, don't score")
    parser.add_argument("--table", action="store_true", help="print the choice (validation), the runs, then the test")
    args = parser.parse_args(argv)
    if not args.runs and not args.from_json:
        parser.error("give run or sweep folders to score, or --from-json files scored before")
    torch.set_num_threads(1)
    results = [check(folder, args.max_images) for folder in run_folders(args.runs)]
    if args.json:
        args.json.write_text(json.dumps(merged(args.json, results), indent=1))
    for path in args.from_json:
        results = merged(path, results)
    if args.table:
        print("\n" + choice_table(results) + "\n\n" + runs_table(results) + "\n\nAfter the choice, the test:\n\n"
              + test_table(results))


if __name__ == "__main__":
    sys.exit(main())
