"""The JSON records of a run folder as dataclasses: what each file holds, typed once for every reader.

``results.json`` (training), ``status.json`` (how the run ended), ``robustness/robustness.json`` (the shift suite)
and ``trust/trust.json`` (the trust report); and the published record of a finished run kept in the repository
(``results/<footing>/<experiment>_s<seed>.json``, written by ``bloodcls publish``). The top-level keys readers use are fields; nested parts stay the
plain dicts the writers made (their keys are documented where they are written), and ``raw`` keeps the whole
document, so a record can be written back or shown as JSON unchanged. Missing keys take the field's default:
runs written by older versions still open.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

R = TypeVar("R")


def _from_dict(cls: type[R], doc: dict[str, Any]) -> R:
    """``cls`` with each field taken from ``doc`` (its default where the key is missing or null)."""
    given: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name == "raw":
            continue
        value = doc.get(f.name)
        if value is not None:
            given[f.name] = value
        elif f.default is MISSING and f.default_factory is MISSING:
            given[f.name] = None
    return cls(**given, raw=doc)


@dataclass(frozen=True)
class ResultsRecord:
    """``results.json``: a finished run's scores and provenance (written by :mod:`bloodcls.training.fit`)."""

    status: str = "completed"
    experiment: str | None = None
    recipe: str | None = None
    seed: int | None = None
    run_name: str | None = None
    model: str | None = None
    img_size: int | None = None
    augment: str | None = None
    test: dict[str, Any] = field(default_factory=dict)  # acc, f1, scores, confusion_matrix, predictions, labels
    test_tta: dict[str, Any] | None = None  # the same with the 8 rotations/flips averaged (model.tta=true)
    trust: dict[str, Any] | None = None  # calibration, abstention and the gate (bloodcls.uncertainty.fitting)
    summary: dict[str, Any] = field(default_factory=dict)  # flat scalars, as the trackers got them
    efficiency: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # path, md5, split_sizes, class_names
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config
    environment: dict[str, Any] = field(default_factory=dict)  # device, commit, date, versions
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ResultsRecord:
        return _from_dict(cls, doc)

    @property
    def recipe_label(self) -> str:
        """The run's recipe (conf/recipe/); runs written before recipes existed used the strict Keras layers."""
        return str(self.recipe or "keras (before recipes)")

    @property
    def data_root(self) -> str | None:
        """The folder the run read its data from (``data.root``), if it says."""
        return (self.config.get("data") or {}).get("root")


@dataclass(frozen=True)
class StatusRecord:
    """``status.json``: how the run ended (the contract is :mod:`bloodcls.runs.status`)."""

    status: str | None = None  # running | completed | failed | interrupted
    error: str | None = None
    error_type: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    run_name: str | None = None
    experiment: str | None = None
    last_checkpoint: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StatusRecord:
        return _from_dict(cls, doc)


@dataclass(frozen=True)
class RobustnessRecord:
    """``robustness.json``: one checkpoint under the shift suite (:func:`bloodcls.robustness.evaluate`'s keys, plus
    where it came from)."""

    clean_acc: float
    mean_acc: float
    drop_acc: float
    clean_f1: float | None = None
    mean_f1: float | None = None
    worst_acc: float | None = None
    worst: str | None = None  # "<shift>@<severity>"
    severities: list[int] = field(default_factory=list)
    per_severity: dict[str, list[float]] = field(default_factory=dict)  # {"acc": [...], "f1": [...]}
    shifts: dict[str, dict[str, Any]] = field(default_factory=dict)  # per shift: levels, acc, f1, mean_acc, ...
    seed: int | None = None  # the shifts' seed
    time_s: float | None = None
    run: str | None = None
    checkpoint: str | None = None
    experiment: str | None = None
    recipe: str | None = None
    model: str | None = None
    train_seed: int | None = None
    data: dict[str, Any] = field(default_factory=dict)  # path, split
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RobustnessRecord:
        return _from_dict(cls, doc)


@dataclass(frozen=True)
class TrustRecord:
    """``trust/trust.json``: the trust report of one run (``bloodcls trust``)."""

    summary: dict[str, float] = field(default_factory=dict)  # flat "trust/..." scalars
    report: dict[str, Any] = field(default_factory=dict)  # calibration, selective, gate
    shift_firing: dict[str, Any] = field(default_factory=dict)  # n_images, severities, rates per shift
    experiment: str | None = None
    recipe: str | None = None
    seed: int | None = None
    fitted_now: bool = False
    run: str | None = None
    checkpoint: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrustRecord:
        return _from_dict(cls, doc)


@dataclass(frozen=True)
class PublishedRecord:
    """``results/<footing>/<experiment>_s<seed>.json``: what the repository keeps of one finished run (written by
    :mod:`bloodcls.analysis.published` from the run's results.json and status.json; no checkpoints)."""

    experiment: str
    seed: int
    recipe: str  # ResultsRecord.recipe_label
    precision: str  # Lightning's training precision string (results.json's compute.precision)
    device: dict[str, Any] = field(default_factory=dict)  # kind (cpu | gpu), name, processor, host, threads
    schema: int = 1
    model: str | None = None
    img_size: int | None = None
    run: str | None = None  # the run folder's name
    overrides: list[str] = field(default_factory=list)  # the run's command-line overrides (.hydra/overrides.yaml)
    commit: dict[str, Any] = field(default_factory=dict)  # started, ended
    starts: list[dict[str, Any]] = field(default_factory=list)  # at, commit, threads, ... of each start and resume
    finished: str | None = None  # ISO date the run finished (UTC)
    epochs_trained: int | None = None
    best_epoch: int | None = None  # counted from 1
    validation_best: dict[str, Any] = field(default_factory=dict)  # val/acc, val/loss, ... of the best epoch
    test: dict[str, Any] = field(default_factory=dict)  # acc, f1, scores (flat, as results.json), predictions
    test_tta: dict[str, Any] | None = None  # acc, f1 with the 8 rotations/flips (model.tta=true)
    test_split: dict[str, Any] = field(default_factory=dict)  # size, labels_sha256, data_file, data_md5
    versions: dict[str, Any] = field(default_factory=dict)  # torch, lightning, python
    history: dict[str, Any] = field(default_factory=dict)  # columns, rows: one row per epoch (epoch from 1)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PublishedRecord:
        return _from_dict(cls, doc)

    @property
    def device_kind(self) -> str | None:
        return self.device.get("kind")

    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch history as one dict per epoch (``epoch`` counted from 1); empty for records written before
        histories were kept."""
        columns = list(self.history.get("columns") or [])
        return [dict(zip(columns, row, strict=True)) for row in self.history.get("rows") or []]

    @property
    def acc(self) -> float | None:
        """Test accuracy in per cent (the tables' unit)."""
        acc = self.test.get("acc")
        return None if acc is None else 100 * acc


HISTORY = (("epoch", "epoch"), ("lr", "lr"), ("train_loss", "train/loss"), ("train_acc", "train/acc"),
           ("val_loss", "val/loss"), ("val_acc", "val/acc"), ("time_s", "time_s"))  # record column, results.json key


def history_of(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's per-epoch curve as the record keeps it: a few columns, one compact row per epoch (epoch from 1),
    so the validation-statistics evidence outlives the run folder."""
    rows = []
    for e in epochs:
        row = [e.get(key) for _, key in HISTORY]
        row[0] = None if row[0] is None else int(row[0]) + 1
        rows.append([float(f"{v:.6g}") if isinstance(v, float) else v for v in row])  # 6 significant digits
    return {"columns": [name for name, _ in HISTORY], "rows": rows}
