"""Finished runs under the shift suite: each run's network and test split in, its record and figure out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bloodcls.common.records import RobustnessRecord
from bloodcls.common.rundir import SuiteFiles, read_json, write_json
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.robustness.plots import plot, plot_examples
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import evaluate


@dataclass(frozen=True)
class SuiteOptions:
    """How the suite scores runs; the defaults are ``bloodcls robustness``'s (bloodcls.cli.robustness parses them).

    ``out``: where records go (default ``<run>/robustness``; with several runs, ``<out>/<run name>``);
    ``shifts``: a comma-separated subset (None: all); ``reuse``: keep a record already scored with the same
    checkpoint, seed, split, shifts and severities; ``examples``: also draw one test image under every shift.
    """

    out: str | None = None
    data_root: str | None = None
    split: str = "test"
    seed: int = 0
    batch_size: int = 512
    device: str = "auto"
    shifts: str | None = None
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    no_download: bool = False
    reuse: bool = False
    examples: bool = False

    @property
    def shift_names(self) -> list[str]:
        return self.shifts.split(",") if self.shifts else list(SHIFTS)


def suite_options(**given: Any) -> SuiteOptions:
    """The suite's options with ``given`` set (sweep.py calls it; an unknown option is a TypeError)."""
    return SuiteOptions(**given)


Split = tuple[torch.Tensor, torch.Tensor]


def score_run(run: FinishedRun, files: SuiteFiles, options: SuiteOptions, cache: dict[Path, Split]) -> RobustnessRecord:
    """Score the run's checkpoint and write its record and figure into ``files``; ``cache`` keeps loaded splits
    between runs of the same data file."""
    from bloodcls.runs.environment import environment

    model = run.load_model()
    data_file = run.data_file(model.img_size, options.data_root, download=not options.no_download)
    if data_file not in cache:
        cache[data_file] = run.load_split(options.split, model.img_size, options.data_root)
    images, labels = cache[data_file]
    result = evaluate(model.net, images, labels, seed=options.seed, batch_size=options.batch_size,
                      device=options.device, shifts=options.shift_names, severities=options.severities,
                      num_classes=len(model.class_names))
    results = run.results
    payload = {
        **result,
        "run": str(run.folder),
        "checkpoint": str(run.checkpoint),
        "experiment": results.experiment if results else None,
        "recipe": results.recipe if results else None,
        "model": model.name,
        "train_seed": results.seed if results else None,
        "augment": results.augment if results else None,
        "results_json_test_acc": results.test.get("acc") if results and options.split == "test" else None,
        "data": {"path": str(data_file), "split": options.split},
        "environment": environment(result["device"]),
    }
    files.folder.mkdir(parents=True, exist_ok=True)
    write_json(files.record, payload)
    if options.examples:
        plot_examples(images[0], files.examples, seed=options.seed)
    plot(result, files.figure, title=f"{run.name}: clean {100 * result['clean_acc']:.1f} %, "
                                     f"mean under shift {100 * result['mean_acc']:.1f} %")
    return RobustnessRecord.from_dict(payload)


def reusable(files: SuiteFiles, run: FinishedRun, options: SuiteOptions) -> RobustnessRecord | None:
    """The suite record in ``files`` if it scored this checkpoint with the same options, else None."""
    doc = read_json(files.record)
    if doc is None:
        return None
    record = RobustnessRecord.from_dict(doc)
    same = (record.checkpoint == str(run.checkpoint) and record.seed == options.seed
            and record.data.get("split") == options.split and list(record.shifts) == options.shift_names
            and record.severities == list(options.severities))
    return record if same else None


def score_targets(targets: Sequence[str | Path], options: SuiteOptions) -> list[RobustnessRecord]:
    """Score every run the targets name (run, multirun or checkpoint), one progress line each; with
    ``options.reuse`` a record already scored with the same options is kept."""
    runs = FinishedRun.find(targets)
    cache: dict[Path, Split] = {}
    records = []
    for run in runs:
        if options.out:
            files = SuiteFiles(Path(options.out) / run.folder.name if len(runs) > 1 else Path(options.out))
        else:
            files = run.paths.robustness
        record = reusable(files, run, options) if options.reuse else None
        if record is None:
            record = score_run(run, files, options, cache)
        records.append(record)
        print(f"{run.folder.name}: clean acc {100 * record.clean_acc:.2f} %, mean under shift "
              f"{100 * record.mean_acc:.2f} % (drop {100 * record.drop_acc:.2f}), worst "
              f"{100 * record.worst_acc:.2f} % ({record.worst}), {record.time_s:.0f} s -> {files.record}", flush=True)
    return records
