"""A run folder opened for reading: its records as dataclasses, the paths of its files, its model and its data.

Every reader of run folders opens them here: the sweep report, the ablation table, the report figures, the
demo, the shift suite and the trust report. How a folder is read is written once, and the names of its files
are :mod:`bloodcls.common.rundir`'s. A folder is opened whatever state its run ended in (the report lists the
failed and interrupted ones): :attr:`FinishedRun.outcome` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bloodcls.common.records import ResultsRecord, RobustnessRecord, StatusRecord, TrustRecord
from bloodcls.common.rundir import SPLIT_FILE, RunPaths, find_checkpoints, read_json, run_checkpoint
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel, load_trained

if TYPE_CHECKING:
    import numpy as np
    import torch

COMPLETED = "completed"
UNFINISHED = "unfinished"  # no status.json saying how it ended (killed before it wrote one, or still starting)


def _record(cls: Any, path: Path) -> Any:
    doc = read_json(path)
    return None if doc is None else cls.from_dict(doc)


@dataclass(frozen=True)
class FinishedRun:
    """One run folder's records (None where the file is missing or unreadable) and the checkpoint that stands for
    it (best.ckpt, else last.ckpt; or the .ckpt file it was opened from)."""

    folder: Path
    checkpoint: Path | None
    results: ResultsRecord | None
    status: StatusRecord | None
    robustness: RobustnessRecord | None
    trust: TrustRecord | None

    @classmethod
    def open(cls, folder: str | Path, checkpoint: str | Path | None = None) -> FinishedRun:
        """Read the records of the run folder ``folder``; ``checkpoint`` overrides the run's own."""
        paths = RunPaths(Path(folder))
        results = read_json(paths.results)
        return cls(folder=paths.folder,
                   checkpoint=Path(checkpoint) if checkpoint is not None else run_checkpoint(paths.folder),
                   results=None if results is None else ResultsRecord.from_dict(results),
                   status=_record(StatusRecord, paths.status),
                   robustness=_record(RobustnessRecord, paths.robustness.record),
                   trust=_record(TrustRecord, paths.trust))

    @classmethod
    def find(cls, targets: Sequence[str | Path]) -> list[FinishedRun]:
        """Every run the targets name: a run folder, a multirun or sweep-runs folder of them, or a .ckpt file (its
        run folder is the one it lies in; a UserError says what is wrong with a target)."""
        return [cls.open(run, ckpt) for run, ckpt in find_checkpoints(targets)]

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.folder)

    @property
    def name(self) -> str:
        return (self.results.run_name if self.results else None) or self.folder.name

    @property
    def owns_checkpoint(self) -> bool:
        """True when the checkpoint is this run's own (``<run>/checkpoints/``), so records may be written into it;
        a checkpoint handed in from elsewhere is never rewritten."""
        return self.checkpoint is not None and self.checkpoint.parent.resolve() == self.paths.checkpoints.resolve()

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's config: resolved from results.json, else as Hydra composed it (``.hydra/config.yaml``)."""
        if self.results is not None and self.results.config:
            return self.results.config
        if not self.paths.hydra_config.is_file():
            return {}
        import yaml

        try:
            return yaml.safe_load(self.paths.hydra_config.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}

    @property
    def starts(self) -> list[dict[str, Any]]:
        """One entry per start of the run, the first and each ``resume=``: when, on which commit, and what it trained
        with (threads, precision, layout, processor; status.json records them since 2026-12-08). For a start that
        predates that, its threads are read from the config Hydra saved for it (``.hydra/``, then each
        ``.hydra-resume-<time>/`` in order) where the folders and the starts pair up one to one."""
        status = self.status.raw if self.status is not None else {}
        if not status.get("started_at"):
            return []
        resumes = [r for r in status.get("resumes") or [] if isinstance(r, dict)]
        commit = (self.results.environment.get("commit_started") if self.results else None) or status.get("commit")
        starts = [{"at": status["started_at"], "commit": commit, **(status.get("compute") or {})},
                  *({"at": r.get("at"), "commit": r.get("commit"), **(r.get("compute") or {})} for r in resumes)]
        saved = self.paths.start_configs
        if len(saved) == len(starts):
            import yaml

            for start, path in zip(starts, saved, strict=True):
                try:
                    threads = (yaml.safe_load(path.read_text()) or {}).get("threads")
                except (OSError, yaml.YAMLError, AttributeError):
                    threads = None
                if "threads" not in start and isinstance(threads, int):
                    start["threads"] = threads
        return starts

    @property
    def experiment(self) -> str | None:
        return ((self.results.experiment if self.results else None) or (self.status.experiment if self.status else None)
                or self.config.get("experiment_name"))

    @property
    def seed(self) -> int | None:
        return self.results.seed if self.results is not None and self.results.seed is not None else self.config.get("seed")

    @property
    def fold(self) -> int | None:
        """The validation fold of a k-fold run (``data.folds``/``data.fold``), None for a run without folds."""
        data = self.config.get("data") or {}
        return data.get("fold") if data.get("folds") else None

    @property
    def outcome(self) -> str:
        """completed | failed | interrupted | running | unfinished: completed needs a results.json that says so; a
        status that says completed without one is a failure."""
        if self.results is not None and self.results.status == COMPLETED:
            return COMPLETED
        said = (self.status.status if self.status else None) or UNFINISHED
        return "failed" if said == COMPLETED else said

    @property
    def ok(self) -> bool:
        return self.outcome == COMPLETED

    @property
    def error(self) -> str | None:
        """Why a run did not complete: its status.json's paragraph, else the last error lines of its job log."""
        if self.ok:
            return None
        if self.status is not None and self.status.error:
            return self.status.error
        for log_file in self.paths.job_logs():
            text = log_file.read_text(errors="replace").strip().splitlines()
            errors = [ln for ln in text if "Error" in ln or "error" in ln or "Traceback" in ln]
            return " | ".join((errors or text)[-8:]) or None
        return None

    def load_model(self, map_location: str = "cpu") -> TrainedModel:
        """The run's network rebuilt from its checkpoint (weights only, eval mode), with its trust state."""
        if self.checkpoint is None:
            raise UserError(f"{self.folder} holds no checkpoint (checkpoints/best.ckpt or last.ckpt): the run did not "
                            "get as far as saving one. Pass a run folder that did, or a .ckpt file.")
        return load_trained(self.checkpoint, map_location)

    @property
    def data_config(self) -> dict[str, Any]:
        """The run's ``data`` config (results.json's resolved one, else Hydra's)."""
        return dict((self.results.config.get("data") if self.results else None) or self.config.get("data") or {})

    def data_file(self, img_size: int | None = None, root: str | Path | None = None, download: bool = False) -> Path:
        """Where the run's data is read from: its BloodMNIST file (``root``, else the run's ``data.root``, else the
        default root), or for a run trained on a folder (``data=folder``) its own split file."""
        from bloodcls.data import default_root, ensure_file
        from bloodcls.data.sources import is_folder_run

        if is_folder_run(self.data_config):
            return self.folder / SPLIT_FILE
        root = root or (self.results.data_root if self.results else None) or default_root()
        return ensure_file(root, self._img_size(img_size), download)

    def load_splits(self, img_size: int | None = None, root: str | Path | None = None,
                    download: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every split of the run's data as (uint8 N x S x S x 3 images, int64 labels): the BloodMNIST file, or the
        run's folder with its own ``split.csv`` (:func:`bloodcls.data.sources.run_splits`)."""
        from bloodcls.data.sources import run_splits

        return run_splits(self.folder, self.data_config, self._img_size(img_size), root=root, download=download)[0]

    def load_split(self, split: str = "test", img_size: int | None = None, root: str | Path | None = None,
                   download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One split of the run's data file as tensors (uint8 images, int64 labels)."""
        import torch

        images, labels = self.load_splits(img_size, root, download)[split]
        return torch.from_numpy(images), torch.from_numpy(labels)

    def _img_size(self, img_size: int | None) -> int:
        """``img_size`` (the model's, as callers pass it), else the one the run trained at."""
        size = img_size or (self.results.img_size if self.results else None) or self.config.get("data", {}).get("img_size")
        if not isinstance(size, int):  # unknown, or an interpolation Hydra left unresolved in .hydra/config.yaml
            raise UserError(f"{self.folder}: the run does not say its image size (no results.json or .hydra/config.yaml"
                            "); give the size, e.g. from the checkpoint's model (load_model().img_size).")
        return size
