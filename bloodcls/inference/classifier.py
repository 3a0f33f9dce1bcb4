"""The Python API: ``from bloodcls import Classifier``.

    clf = Classifier.load("outputs/runs/.../")       # a run folder, a .ckpt/.safetensors file, or a bundle folder
    rows = clf.predict(["cell.png", pil_image, array, tensor], tta=False)   # predict --json's rows, in order
    adapted = clf.adapt("lab_images/")              # BatchNorm statistics recomputed (bloodcls adapt)
    adapted.save("my_lab_model/")                   # a bundle: model.safetensors, config.json, README.md

Each row is the one judgement (:func:`bloodcls.uncertainty.judgement.judge`) exactly as ``bloodcls predict --json``
prints it: class, probability, top 3, every probability, calibrated confidence, ``abstain`` (the review flag),
``in_distribution`` and ``ood_score`` (the not-a-cell gate), ``prediction_set`` (absent where the gate refuses)
and ``verdict``; an image given by path also has its ``path``. Images are read as predict reads files
(:mod:`bloodcls.inference.inputs`) and judged in batches. ``predict`` and ``bundle`` are thin callers of this
class. It is a huggingface_hub ``ModelHubMixin``: ``save_pretrained``/``from_pretrained`` use the bundle layout,
and ``push_to_hub(repo_id)`` uploads one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import ModelCard, ModelHubMixin

from bloodcls.common.bundle import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, is_bundle
from bloodcls.common.checkpoints import read_bundle_config
from bloodcls.common.images import MAX_PIXELS
from bloodcls.common.rundir import run_folder_of
from bloodcls.inference.checkpoint import TrainedModel, load_trained
from bloodcls.inference.classify import classify, judge_images

BATCH_SIZE = 64  # images read and judged at a time (predict's own batch)


class Classifier(ModelHubMixin, library_name="bloodcls", pipeline_tag="image-classification",
                 tags=["blood-cells", "bloodmnist", "microscopy", "image-classification"]):
    """A trained model and the records of the run it came from (``records``: what its model card is made of)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Classifier:
        # config.json is written by _save_pretrained; the mixin's own __new__ would serialise __init__'s arguments
        return object.__new__(cls)

    def __init__(self, model: TrainedModel, records: dict[str, Any] | None = None) -> None:
        self.model = model
        self._records, self._looked = records, records is not None
        self._written_by: str | None = None  # config.json's written.by while save() runs (None: the Python API)

    @property
    def records(self) -> dict[str, Any] | None:
        """The records of the run the model came from (looked up when first asked: predict never needs them)."""
        if not self._looked:
            self._records, self._looked = _records(self.model), True
        return self._records

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """A run folder (its best.ckpt, else last.ckpt), a .ckpt or .safetensors file, or a bundle folder; loaded
        weights-only, never unpickled, on the CPU. The run's records are looked up when first asked for."""
        return cls(load_trained(path))

    # -- what it is ---------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def img_size(self) -> int:
        return self.model.img_size

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def adapted_on(self) -> dict[str, Any] | None:
        """What ``adapt`` recomputed the statistics on (None: never adapted)."""
        return self.model.adapted_on

    def __repr__(self) -> str:
        return (f"Classifier({self.model.name}, {self.img_size} px, {len(self.class_names)} classes, "
                f"{'calibrated' if self.model.trust is not None else 'no trust state'}"
                f"{', adapted' if self.adapted_on else ''}, from {self.path})")

    # -- using it -----------------------------------------------------------------------------------------------
    def predict(self, images: Any, tta: bool = False, batch_size: int = BATCH_SIZE,
                max_pixels: int = MAX_PIXELS) -> list[dict[str, Any]]:
        """One row per image, in order, as ``bloodcls predict --json`` prints it (``images``: paths, PIL images,
        NumPy arrays, tensors, or a list of them; see :mod:`bloodcls.inference.inputs`). ``tta`` averages the 8
        rotations/flips. An image that cannot be read raises an error naming it."""
        if self.model.trust is not None:
            self.model.trust.review_threshold(tta)  # a state that cannot judge TTA refuses before any image is read
        rows: list[dict[str, Any]] = []
        for paths, batch in self._batches(images, batch_size, max_pixels):
            judged = judge_images(self.model, batch, tta=tta, batch_size=batch_size)
            rows += [({"path": p} if p is not None else {}) | row
                     for p, row in zip(paths, judged.rows(self.class_names), strict=True)]
        return rows

    def _batches(self, images: Any, size: int, max_pixels: int) -> Iterator[tuple[list[str | None], np.ndarray]]:
        from bloodcls.inference.inputs import as_images

        paths: list[str | None] = []
        arrays: list[np.ndarray] = []
        for path, array in as_images(images, self.img_size, max_pixels):
            paths.append(path)
            arrays.append(array)
            if len(arrays) == size:
                yield paths, np.stack(arrays)
                paths, arrays = [], []
        if arrays:
            yield paths, np.stack(arrays)

    def report(self, paths: list[str | Path], tta: bool = False, max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
        """``bloodcls predict --json``'s whole document for image files and folders: the rows, the files that could
        not be read (the others still judged), what was skipped, the trust state and the adaptation."""
        from bloodcls.inference.adaptation import adaptation_status

        return {**classify(self.model, paths, tta=tta, max_pixels=max_pixels),
                "adapted": adaptation_status(self.model)}

    def adapt(self, images: Any, force: bool = False, batch_size: int = 256) -> Classifier:
        """A copy adapted to a lab's unlabelled images (``bloodcls adapt``: BatchNorm statistics recomputed, every
        weight unchanged, guarded by the gate). ``images``: a folder (any layout) or CSV of the lab's images, or
        what :meth:`predict` takes. This classifier is left as it was."""
        from bloodcls.inference.adaptation import adapt_model

        if isinstance(images, (str, Path)) and (Path(images).is_dir() or Path(images).suffix.lower() == ".csv"):
            from bloodcls.data.unlabelled import load_unlabelled

            data = load_unlabelled(images, self.img_size)
        else:
            data = np.concatenate([batch for _, batch in self._batches(images, 1024, MAX_PIXELS)] or
                                  [np.zeros((0, self.img_size, self.img_size, 3), np.uint8)])
        return Classifier(adapt_model(self.model, data, force=force, batch_size=batch_size).model, self.records)

    # -- the bundle ---------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """What the bundle's config.json holds (:func:`bloodcls.inference.bundle.bundle_config`)."""
        from bloodcls.inference.bundle import API_WRITER, bundle_config

        return bundle_config(self.model, self.records, self._written_by or API_WRITER)

    def save(self, directory: str | Path, onnx: bool = False, force: bool = False, by: str | None = None) -> Path:
        """Write the bundle (``bloodcls bundle``): model.safetensors, config.json, README.md (the model card) and,
        with ``onnx``, model.onnx; an existing bundle is replaced only with ``force``. ``by``: the command that
        writes it, for config.json's ``written.by`` (default: the Python API)."""
        from bloodcls.inference.bundle import write_folder, write_onnx

        self._written_by = by

        def write(folder: Path) -> None:
            self.save_pretrained(folder)
            if onnx:
                write_onnx(self.model, folder)

        return write_folder(directory, write, force=force)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card, generated from config.json (:func:`bloodcls.inference.model_card.model_card`)."""
        from bloodcls.inference.model_card import model_card

        return model_card(self.config, self._hub_mixin_info.model_card_data)

    def _save_pretrained(self, save_directory: Path) -> None:
        from bloodcls.inference.bundle import write_model_files

        write_model_files(self.model, self.config, Path(save_directory))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **ignored: Any) -> Classifier:
        """A bundle folder, or a Hub repository's bundle (downloaded into the Hub cache, then loaded)."""
        if not Path(model_id).is_dir():
            from huggingface_hub import snapshot_download

            model_id = snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir, token=token,
                                         force_download=force_download, local_files_only=local_files_only,
                                         allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
        return cls.load(model_id)


def _records(model: TrainedModel) -> dict[str, Any] | None:
    """The records of the run a model came from: a bundle's own, else the run folder of its checkpoint, of the
    checkpoint it was adapted from, or of the one it was re-calibrated from (None when none is on disk)."""
    candidates = [model.path]
    for record in (model.adapted_on, model.trust.calibrated_on if model.trust is not None else None):
        if record and record.get("checkpoint"):
            candidates.append(Path(record["checkpoint"]))
    for path in candidates:
        if is_bundle(path):
            return read_bundle_config(path).get("records")
        run = run_folder_of(path) if path.is_file() else None
        if run is not None:
            from bloodcls.inference.finished_run import FinishedRun
            from bloodcls.inference.model_card import run_records

            return run_records(FinishedRun.open(run, path))
    return None
