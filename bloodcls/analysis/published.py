"""Published runs: the compact record of each finished run that the repository keeps in ``results/<footing>/``.

A *footing* is what a table's runs share: the recipe, the training precision and the kind of device (``cpu`` or
``gpu``); figures on different footings are never averaged together. Its folder holds

    results/<footing>/footing.json           recipe, precision, device; planned experiments and seeds; sweep command
    results/<footing>/test-labels.json       the test split's labels, once (records keep only their hash and size)
    results/<footing>/<experiment>_s<seed>.json   one record per run (bloodcls.common.records.PublishedRecord)
    results/<footing>/training.json          per sweep, the runs started and not finished when it was last published

``bloodcls publish <run> results/<footing>`` writes a record as each run finishes, so a rebuilt machine loses only
the runs still training; the tables are regenerated from these records (:mod:`bloodcls.analysis.published_tables`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloodcls.common.files import atomic_write
from bloodcls.common.records import PublishedRecord, history_of
from bloodcls.common.rundir import RESULTS_FILE, STATUS_FILE, RunPaths, job_folders, read_json
from bloodcls.common.sweepdir import PLAN_FILE, RUNS_DIR
from bloodcls.errors import UserError
from bloodcls.inference.finished_run import FinishedRun
from bloodcls.models import study
from bloodcls.runs.environment import processor_name

RESULTS_DIR = "results"  # at the repository's top level
FOOTING_FILE = "footing.json"
LABELS_FILE = "test-labels.json"
TRAINING_FILE = "training.json"
STARTED = ("running", "interrupted")  # a run's outcome while it has started and not finished (nor failed)
IDENTITY = ("recipe", "precision", "device")  # what every record of one footing shares
PRECISION_NAMES = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16", "bf16-true": "bf16 (true)",
                   "16-mixed": "fp16", "16-true": "fp16 (true)", "64-true": "fp64"}


def precision_label(precision: str | None) -> str:
    """``32-true`` -> ``fp32``: how the tables name a training precision."""
    return PRECISION_NAMES.get(str(precision), str(precision))


def record_path(folder: Path, experiment: str, seed: int) -> Path:
    return folder / f"{experiment}_s{seed}.json"


def labels_sha256(labels: list[int]) -> str:
    """The hash that ties a record's predictions to its test split (labels in order, comma-separated)."""
    return hashlib.sha256(",".join(map(str, labels)).encode()).hexdigest()


def dumps(doc: Any, indent: str = "") -> str:
    """JSON with one key per line, but every list of plain values on one line (the predictions stay compact)."""
    inner = indent + "  "
    if isinstance(doc, dict) and doc:
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, inner)}" for k, v in doc.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(doc, list) and any(isinstance(v, (dict, list)) for v in doc):
        return "[\n" + ",\n".join(inner + dumps(v, inner) for v in doc) + f"\n{indent}]"
    return json.dumps(doc, separators=(",", ":") if isinstance(doc, list) else (", ", ": "))


def write_doc(path: Path, doc: dict[str, Any]) -> None:
    text = dumps(doc) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


@dataclass(frozen=True)
class Footing:
    """One folder of ``results/``: its footing.json and the records in it."""

    folder: Path
    spec: dict[str, Any]
    records: list[PublishedRecord]
    training: dict[str, list[int]] = field(default_factory=dict)  # experiment -> seeds started, not yet published

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def experiments(self) -> list[str]:
        """The planned experiments, then any other one published, in that order."""
        planned = list(self.spec.get("experiments") or [])
        return planned + sorted({r.experiment for r in self.records} - set(planned))

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.get("seeds") or [0, 1, 2])

    def of(self, experiment: str) -> list[PublishedRecord]:
        return sorted((r for r in self.records if r.experiment == experiment), key=lambda r: r.seed)

    def identity(self) -> dict[str, Any]:
        return {key: self.spec.get(key) for key in IDENTITY}

    @property
    def labels(self) -> dict[str, Any] | None:
        return read_json(self.folder / LABELS_FILE)


def _bad_json(path: Path) -> UserError:
    return UserError(f"{path} is not a JSON object. It is written by `bloodcls publish`; restore it from git "
                     "(`git checkout -- <file>`) or publish the run again with --force.")


def load_footing(folder: str | Path) -> Footing:
    """A footing folder read back (its records sorted by experiment and seed)."""
    folder = Path(folder)
    spec = read_json(folder / FOOTING_FILE)
    if spec is None:
        raise UserError(f"{folder} has no readable {FOOTING_FILE}, so it is not a footing of published runs. Publish "
                        f"a finished run into it first (`bloodcls publish <run folder> {folder}`), which writes one.")
    records = []
    for path in sorted(folder.glob("*_s*.json")):
        doc = read_json(path)
        if doc is None:
            raise _bad_json(path)
        records.append(PublishedRecord.from_dict(doc))
    published = {(r.experiment, r.seed) for r in records}
    training: dict[str, list[int]] = {}
    for runs in (read_json(folder / TRAINING_FILE) or {}).values():
        for run in runs if isinstance(runs, list) else []:
            key = (str(run.get("experiment")), int(run.get("seed", -1)))
            if key not in published and key[1] not in training.get(key[0], []):
                training.setdefault(key[0], []).append(key[1])
    return Footing(folder, spec, sorted(records, key=lambda r: (r.experiment, r.seed)),
                   {exp: sorted(seeds) for exp, seeds in training.items()})


def load_footings(results: str | Path) -> dict[str, Footing]:
    """Every footing under ``results/``, by folder name."""
    results = Path(results)
    return {p.name: load_footing(p) for p in job_folders(results) if (p / FOOTING_FILE).is_file()}


def run_overrides(run: FinishedRun) -> list[str]:
    """The overrides the run was given (Hydra's ``.hydra/overrides.yaml``, less Hydra's own), or none."""
    path = RunPaths(run.folder).hydra_overrides
    if not path.is_file():
        return []
    import yaml

    try:
        given = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in given if not str(o).lstrip("+~").startswith("hydra.")]


def record_of(run: FinishedRun) -> tuple[dict[str, Any], list[int]]:
    """(the record, the test labels) of a completed run; a UserError for a run that cannot be published."""
    if not run.ok:
        then = ("wait until it finishes" if run.outcome == "running" else
                f"resume it first (`python train.py resume={run.folder}`)")
        raise UserError(f"{run.folder} has not completed (its state: {run.outcome}), so there is nothing to publish. "
                        f"Publish a run once its results.json says completed: {then}.")
    res = run.results
    assert res is not None  # run.ok
    env, compute = res.environment, res.raw.get("compute") or {}
    labels, predictions = list(res.test.get("labels") or []), list(res.test.get("predictions") or [])
    if res.test.get("acc") is None or not labels or len(predictions) != len(labels) or run.seed is None:
        raise UserError(f"{run.folder} completed without a scored test split (test=false?) or without its seed and "
                        "per-image predictions; only runs scored on the test split are published. Train it again "
                        "with test=true (the default).")
    best = res.efficiency.get("best_epoch")
    precision = compute.get("precision") or (res.config.get("trainer") or {}).get("precision")
    kind = compute.get("device") or ("cpu" if str(env.get("device", "")).startswith("CPU") else "gpu")
    processor = env.get("processor") or (processor_name() if env.get("host") == platform.node() else None)
    tta = res.test_tta
    doc = {
        "schema": 1, "experiment": run.experiment, "seed": run.seed, "recipe": res.recipe_label,
        "precision": str(precision), "model": res.model, "img_size": res.img_size, "run": run.name,
        "overrides": run_overrides(run),
        "device": {"kind": kind, "name": env.get("device"), "processor": processor, "host": env.get("host"),
                   "threads": compute.get("threads"), "channels_last": compute.get("channels_last")},
        "commit": {"started": env.get("commit_started") or env.get("commit"), "ended": env.get("commit")},
        "starts": run.starts,  # a resumed run's starts, each with its threads (device.threads: the last start's)
        "finished": (run.status.finished_at if run.status else None) or env.get("date"),
        "epochs_trained": res.efficiency.get("epochs_run"),
        "best_epoch": None if best is None else int(best) + 1,
        "validation_best": (res.raw.get("val") or {}).get("best") or {},
        "test": {"acc": res.test["acc"], "f1": res.test.get("f1"), "scores": res.test.get("scores") or {},
                 "predictions": [int(p) for p in predictions]},
        "test_tta": {"acc": tta.get("acc"), "f1": tta.get("f1")} if tta else None,
        "test_split": {"size": len(labels), "labels_sha256": labels_sha256(labels),
                       "data_file": Path(str(res.data.get("path") or "")).name or None, "data_md5": res.data.get("md5")},
        "versions": {k: env.get(k) for k in ("python", "torch", "lightning")},
        "history": history_of(res.raw.get("history") or []),
    }
    return doc, [int(y) for y in labels]


def new_spec(run: FinishedRun, doc: dict[str, Any]) -> dict[str, Any]:
    """footing.json for a footing's first record: its identity, and the plan and command of the run's sweep when
    it ran in one (``<sweep>/runs/<job>``, ``<sweep>/sweep.json``)."""
    plan = read_json(run.folder.parent.parent / PLAN_FILE) or {}
    command = None
    if plan.get("experiments"):
        args = [f"experiments=[{','.join(plan['experiments'])}]", f"seeds=[{','.join(map(str, plan['seeds']))}]",
                *plan.get("overrides", []), f"name={run.folder.parent.parent.name}"]
        command = "python sweep.py " + " ".join(shlex.quote(a) for a in args)
    return {"recipe": doc["recipe"], "precision": doc["precision"], "device": doc["device"]["kind"],
            "experiments": plan.get("experiments") or [doc["experiment"]], "seeds": plan.get("seeds") or [doc["seed"]],
            "sweep": command, "page": None,
            "about": f"{doc['recipe']}, {precision_label(doc['precision'])}, {doc['device']['kind']}"}


def check_footing(folder: Path, spec: dict[str, Any], doc: dict[str, Any], labels: list[int], run: Path) -> None:
    """Refuse a record whose recipe, precision, device kind or test split differs from the footing's."""
    have = {"recipe": doc["recipe"], "precision": doc["precision"], "device": doc["device"]["kind"]}
    differ = [f"{k} {have[k]!r} (footing: {spec.get(k)!r})" for k in IDENTITY if spec.get(k) != have[k]]
    stored = read_json(folder / LABELS_FILE)
    if stored is not None and stored.get("labels_sha256") != doc["test_split"]["labels_sha256"]:
        differ.append(f"its test split ({len(labels)} images, sha256 {doc['test_split']['labels_sha256'][:12]}) "
                      f"is not the footing's ({stored.get('size')} images, {str(stored.get('labels_sha256'))[:12]})")
    if differ:
        raise UserError(f"{run} does not belong to the footing {folder}: " + "; ".join(differ) + ". A footing's "
                        "figures are averaged together, so all its runs share recipe, precision, kind of device and "
                        "test split. Publish the run into a footing of its own (e.g. results/"
                        f"{doc['recipe'].replace('+', '-')}-{precision_label(doc['precision'])}-{have['device']}).")


def publish(run_folder: str | Path, footing: str | Path, force: bool = False) -> tuple[Path, str]:
    """Write the record of one completed run into a footing folder: (its path, written | unchanged | replaced).

    Refuses (UserError) a run that has not completed, one whose footing differs from the folder's, and a record
    that exists with different content unless ``force``."""
    folder, run = Path(footing), FinishedRun.open(run_folder)
    doc, labels = record_of(run)
    spec = read_json(folder / FOOTING_FILE) if (folder / FOOTING_FILE).exists() else None
    if (folder / FOOTING_FILE).exists() and spec is None:
        raise _bad_json(folder / FOOTING_FILE)
    check_footing(folder, spec or {k: v for k, v in new_spec(run, doc).items() if k in IDENTITY}, doc, labels,
                  run.folder)
    if doc["experiment"] in study.EXPERIMENTS and doc["img_size"] != study.COUNTS[doc["experiment"]]["img_size"]:
        raise UserError(f"{run.folder} is {doc['experiment']} at {doc['img_size']} px; the study's row is at "
                        f"{study.COUNTS[doc['experiment']]['img_size']} px. Publish it under another experiment name.")
    path = record_path(folder, doc["experiment"], doc["seed"])
    old = read_json(path) if path.exists() else None
    if old == json.loads(json.dumps(doc)):
        return path, "unchanged"
    if path.exists() and not force:
        raise UserError(f"{path} exists with different content (a record of {doc['experiment']} seed {doc['seed']} "
                        f"from another run, or from {run.folder} before it changed). Pass --force to replace it; the "
                        "old record stays in git's history.")
    folder.mkdir(parents=True, exist_ok=True)
    if spec is None:
        write_doc(folder / FOOTING_FILE, new_spec(run, doc))
    if not (folder / LABELS_FILE).exists():
        write_doc(folder / LABELS_FILE, {"size": len(labels), "labels_sha256": doc["test_split"]["labels_sha256"],
                                         "labels": labels})
    write_doc(path, doc)
    return path, "replaced" if old is not None else "written"


def publish_many(target: str | Path, footing: str | Path, force: bool = False) -> list[tuple[Path, str]]:
    """A run folder, or a sweep / multirun folder: each of its completed runs published, the others skipped
    (``(run folder, "skipped: <state>")``); a single run that has not completed is refused."""
    target = Path(target)
    if not target.is_dir():
        raise UserError(f"{target} is not a folder. Give a run folder (with results.json), or a sweep or multirun "
                        "folder of runs.")
    runs_dir = target / RUNS_DIR if (target / RUNS_DIR).is_dir() else target
    if (target / RESULTS_FILE).exists() or (target / STATUS_FILE).exists() or not job_folders(runs_dir):
        return [publish(target, footing, force)]
    out, started = [], []
    for job in job_folders(runs_dir):
        run = FinishedRun.open(job)
        out.append(publish(job, footing, force) if run.ok else (job, f"skipped: {run.outcome}"))
        if run.outcome in STARTED and run.experiment is not None and run.seed is not None:
            started.append({"experiment": run.experiment, "seed": int(run.seed)})
    note_training(Path(footing), target.resolve().name, started)
    return out


def note_training(footing: Path, sweep: str, started: list[dict[str, Any]]) -> None:
    """Keep in the footing's training.json which of ``sweep``'s runs have started and not finished, so the tables
    say "training" rather than "pending" for them (a footing without a published run yet is left alone). The file
    changes only when a run starts or finishes, not with every epoch."""
    if not (footing / FOOTING_FILE).is_file():
        return
    doc = read_json(footing / TRAINING_FILE) or {}
    if started:
        doc[sweep] = started
    else:
        doc.pop(sweep, None)
    if doc:
        if doc != read_json(footing / TRAINING_FILE):
            write_doc(footing / TRAINING_FILE, doc)
    elif (footing / TRAINING_FILE).exists():
        (footing / TRAINING_FILE).unlink()
