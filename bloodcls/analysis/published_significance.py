"""The sweep report's significance tests over published records: the records of one footing read as the runs
:func:`bloodcls.analysis.report.compare_best` takes (per-image test predictions, paired by seed), so the test
itself is written once, in the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bloodcls.analysis.published import load_footing, record_path
from bloodcls.analysis.report import Report, compare_best, performance_row
from bloodcls.common.records import PublishedRecord, ResultsRecord
from bloodcls.errors import UserError
from bloodcls.inference.finished_run import FinishedRun


def as_run(record: PublishedRecord, labels: list[int], folder: Path) -> FinishedRun:
    """A published record as a completed run of the report (test scores, predictions, the footing's labels)."""
    doc = {"status": "completed", "experiment": record.experiment, "seed": record.seed, "recipe": record.recipe,
           "model": record.model, "img_size": record.img_size,
           "test": {**record.test, "labels": labels}, "efficiency": {"epochs_run": record.epochs_trained},
           "environment": {"device": record.device.get("name"), "commit": record.commit.get("ended"),
                           "date": record.finished}}
    return FinishedRun(folder=record_path(folder, record.experiment, record.seed), checkpoint=None,
                       results=ResultsRecord.from_dict(doc), status=None, robustness=None, trust=None)


def footing_report(footing: str | Path, experiments: Sequence[str] | None = None) -> Report:
    """A report over the footing's records (of ``experiments`` only, when given) with its significance: the best
    experiment against the runner-up, paired image by image on the seeds both have."""
    loaded = load_footing(footing)
    stored = loaded.labels
    if stored is None or not stored.get("labels"):
        raise UserError(f"{loaded.folder} has no test-labels.json, so its predictions cannot be paired with the "
                        "labels. It is written with the footing's first record: publish a run into it again.")
    exps = list(experiments) if experiments else loaded.experiments
    unknown = [e for e in exps if not loaded.of(e)]
    if unknown:
        raise UserError(f"{loaded.folder} holds no record of {', '.join(unknown)} (it has: "
                        f"{', '.join(sorted({r.experiment for r in loaded.records})) or 'none'}).")
    records = [r for r in loaded.records if r.experiment in exps]
    if odd := [r for r in records if r.test_split.get("labels_sha256") != stored.get("labels_sha256")]:
        raise UserError(f"{record_path(loaded.folder, odd[0].experiment, odd[0].seed)} was scored on another test "
                        "split than the footing's test-labels.json; its predictions cannot be paired. Publish it "
                        "into a footing of its own.")
    runs = [as_run(r, stored["labels"], loaded.folder) for r in records]
    rep = Report(loaded.folder, {"experiments": exps, "seeds": loaded.seeds}, runs, exps)
    rep.tables = {"performance": [performance_row(e, [r for r in runs if r.experiment == e]) for e in exps]}
    rep.significance = compare_best(rep)
    return rep
