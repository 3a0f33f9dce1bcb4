"""``bloodcls evaluate``'s work: a checkpoint scored on a lab's labelled images, the files written and the text.

The scores are :mod:`bloodcls.inference.evaluation`'s; here the images are read for the model, and the report
goes to ``report.json``, ``predictions.csv`` (one row per image) and ``confusion.png`` in the output folder:
``<run>/evaluate/<data name>`` when the checkpoint lies in a run's ``checkpoints/`` folder, else
``./evaluate/<data name>``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bloodcls.common.files import atomic_write
from bloodcls.common.rundir import EVALUATE_DIR, EvaluationFiles, RunPaths, run_folder_of, write_json
from bloodcls.data.class_names import load_class_map
from bloodcls.data.folder import listing
from bloodcls.data.labelled import load_labelled
from bloodcls.inference.adaptation import adaptation_status
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.evaluation import ROW_FIELDS, Evaluation, evaluate


def data_name(data: str | Path) -> str:
    """The name the output folder takes from the labelled images: the folder's name, or the CSV's stem."""
    path = Path(str(data)).expanduser().resolve()
    return path.stem if path.suffix.lower() == ".csv" else path.name


def default_output(checkpoint: str | Path, data: str | Path) -> EvaluationFiles:
    """``<run>/evaluate/<data>`` for a run's checkpoint, else ``./evaluate/<data>``."""
    run = run_folder_of(Path(checkpoint).expanduser())
    if run is not None:
        return RunPaths(run).evaluation(data_name(data))
    return EvaluationFiles(Path(EVALUATE_DIR) / data_name(data))


def write_files(evaluation: Evaluation, files: EvaluationFiles) -> EvaluationFiles:
    """report.json, predictions.csv and confusion.png (counts, rows = true class) in ``files.folder``."""
    from bloodcls.training.summaries import confusion_figure

    files.folder.mkdir(parents=True, exist_ok=True)
    write_json(files.report, evaluation.report)

    def rows(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:  # folder labels in any script
            writer = csv.DictWriter(fh, fieldnames=ROW_FIELDS)
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in evaluation.rows)

    atomic_write(files.predictions, rows)
    import matplotlib.pyplot as plt

    report = evaluation.report
    fig = confusion_figure(report["confusion_matrix"], report["class_names"])
    fig.axes[0].set_title(f"{Path(report['data']).name}: {report['n']} images, accuracy "
                          f"{100 * report['accuracy']:.1f} %", fontsize=10)
    fig.tight_layout()
    atomic_write(files.confusion, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return files


def run_evaluation(checkpoint: str | Path, data: str | Path, class_map: str | Path | None = None,
                   batch_size: int = 256, out: str | Path | None = None) -> tuple[Evaluation, EvaluationFiles]:
    """Load, read, score and write; bad inputs are one UserError each (checkpoint, folder, map, no class in
    common). The report's ``files`` names what was written."""
    mapping = load_class_map(class_map)  # a bad map file is refused before the (slower) checkpoint and images
    model = load_trained(checkpoint)
    images = load_labelled(data, model.class_names, model.img_size, mapping)
    evaluation = evaluate(model, images, batch_size=batch_size)
    evaluation.report["adapted"] = adaptation_status(model)  # None unless `bloodcls adapt` wrote the model
    files = EvaluationFiles(Path(out).expanduser()) if out is not None else default_output(model.path, data)
    evaluation.report["files"] = {"report": str(files.report), "predictions": str(files.predictions),
                                  "confusion": str(files.confusion)}
    return evaluation, write_files(evaluation, files)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _calibration(scores: dict[str, float]) -> str:
    return f"ECE {100 * scores['ece']:.2f} %, NLL {scores['nll']:.3f}, Brier {scores['brier']:.3f}"


def set_lines(sets: dict[str, Any]) -> list[str]:
    """The prediction sets: marginal figures over the images the gate accepts, SSCV, then one line per class."""
    size = "-" if sets["mean_size"] is None else f"{sets['mean_size']:.2f}"
    lines = [f"prediction sets ({sets['score']}, {_pct(sets['target_coverage'])} asked), over the {sets['images']} "
             f"images the gate accepts ({_pct(sets['gate_refused_share'])} refused): hold the true class for "
             f"{_pct(sets['coverage'])}, {size} classes on average, {_pct(sets['singletons'])} single-class; worst "
             f"class {_pct(sets['worst_class_coverage'])}; size-stratified violation (SSCV) "
             f"{_pct(sets['sscv'])}"]
    for row in sets["per_class"]:
        if row["images"]:
            lines.append(f"  {row['class']}: {_pct(row['coverage'])} of {row['images']}, "
                         f"{row['mean_size']:.2f} classes on average")
    return lines


def format_text(report: dict[str, Any]) -> str:
    """The report as a reader sees it: headline scores, a per-class table, calibration, review and gate firing,
    what was not scored, and where the files are."""
    lines = [f"{report['model']} model ({report['checkpoint']}) on {report['data']}",
             f"classes: {report['classes']['matched']}",
             f"{report['n']} images scored: accuracy {_pct(report['accuracy'])}, macro-F1 {_pct(report['macro_f1'])} "
             f"(over the {report['classes_scored']} of {len(report['class_names'])} classes the images hold)", ""]
    width = max(len(c) for c in report["class_names"]) + 2
    lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>9}{'predicted':>11}")
    for row in report["per_class"]:
        note = "   (no image of this class: not in the macro mean)" if not row["support"] else ""
        lines.append(f"{row['class']:<{width}}{_pct(row['precision']):>10}{_pct(row['recall']):>10}"
                     f"{_pct(row['f1']):>10}{row['support']:>9}{row['predicted']:>11}{note}")
    lines.append("")
    cal = report["calibration"]
    lines.append(f"calibration before scaling: {_calibration(cal['before'])}")
    if report["trust"]["available"]:
        review, gate = report["review"], report["gate"]
        lines.append(f"calibration after (T = {report['trust']['temperature']:.2f}): {_calibration(cal['after'])}")
        lines.append(f"review (calibrated confidence < {review['threshold']:.3f}): {_pct(review['share'])} of the "
                     f"images ({review['fires']}); accuracy on the accepted {_pct(review['accepted_accuracy'])}")
        lines.append(f"not-a-cell gate: fires on {_pct(gate['share'])} ({gate['fires']} images)")
        if report.get("sets"):
            lines += set_lines(report["sets"])
        lines += [f"note: {note}" for note in report["trust"].get("unavailable") or []]
    else:
        lines.append(f"note: {report['trust']['why']}")
    if report.get("adapted"):
        lines.append(f"note: {report['adapted']['note']}")
    unknown = report["classes"]["unknown"]
    if unknown:
        lines.append(f"not scored, classes the model does not know: "
                     f"{', '.join(f'{name} ({n})' for name, n in unknown.items())}")
    if report["skipped"]:
        lines.append(f"skipped {len(report['skipped'])} files that are not readable images: "
                     f"{listing([s['path'] for s in report['skipped']])} "
                     "(reasons in report.json)")
    if "files" in report:
        lines.append(f"written: {report['files']['report']}, {Path(report['files']['predictions']).name}, "
                     f"{Path(report['files']['confusion']).name}")
    return "\n".join(lines)
