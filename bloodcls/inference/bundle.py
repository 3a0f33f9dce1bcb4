"""``bloodcls bundle``: a folder that is the model, written whole or not at all.

The layout and config.json's description are :mod:`bloodcls.common.bundle`'s; this module writes them for a
trained model: ``model.safetensors`` by the safetensors export itself (:func:`bloodcls.inference.exporters.export`:
the one portable file, checked against PyTorch, the judgement included), ``config.json`` (the description, the
run's records the card is generated from, and where and when it was written), the card (``README.md``, by the
Hub mixin through :class:`bloodcls.inference.classifier.Classifier`) and, with ``onnx``, ``model.onnx`` (checked
too). The folder is written beside its destination, read back as a bundle, and only then moved into place.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bloodcls.common.bundle import (
    CONFIG_FILE,
    FORMAT,
    LIBRARY,
    ONNX_FILE,
    WEIGHTS_FILE,
    as_json,
    describe,
    is_bundle,
)
from bloodcls.common.checkout import git_commit
from bloodcls.common.checkpoints import check_new_checkpoint
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel, load_trained
from bloodcls.inference.exporters import export

API_WRITER = "bloodcls.Classifier"  # written.by of a bundle saved from Python rather than by a command


def bundle_config(model: TrainedModel, records: dict[str, Any] | None, by: str = API_WRITER) -> dict[str, Any]:
    """config.json: the library and format, the model's description, the run's records (None when unknown) and
    what it was written from, and by (the command: bundle, adapt or calibrate; else the Python API)."""
    trust = model.trust.to_dict() if model.trust is not None else None
    return {"library_name": LIBRARY, "bundle_format": FORMAT, **as_json(describe(model.hparams, trust, model.adapted_on)),
            "records": records,
            "written": {"by": by, "from": str(model.path), "commit": git_commit(),
                        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}}


def write_model_files(model: TrainedModel, config: dict[str, Any], folder: Path) -> None:
    """model.safetensors (the safetensors export, checked) and config.json into ``folder``."""
    export(model, "safetensors", folder / WEIGHTS_FILE)
    text = json.dumps(config, indent=2, ensure_ascii=False, default=str)
    (folder / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")


def write_onnx(model: TrainedModel, folder: Path) -> dict[str, Any]:
    """model.onnx, checked against PyTorch where onnxruntime is installed (the export's check)."""
    return export(model, "onnx", folder / ONNX_FILE)


def check_destination(directory: Path, force: bool) -> None:
    """Refuse to write over anything but an empty folder, or (with ``force``) a bundle."""
    if directory.is_file():
        raise UserError(f"{directory} is a file; give a folder for the bundle (it is created).")
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    if not is_bundle(directory):
        raise UserError(f"{directory} already holds files and is not a model bundle, so it is never written over, "
                        "not even with --force. Give a new or empty folder.")
    if not force:
        raise UserError(f"{directory} already holds a model bundle and is never overwritten silently: pass --force "
                        "to replace it, or give another folder.")


def write_folder(directory: str | Path, write: Callable[[Path], None], force: bool = False) -> Path:
    """Run ``write`` on a fresh folder beside ``directory``, check the result loads as a bundle, then put it in
    place of ``directory`` (an old bundle there is replaced only with ``force``); nothing is left half-written."""
    directory = Path(directory).expanduser()
    check_destination(directory, force)
    directory.parent.mkdir(parents=True, exist_ok=True)
    fresh = directory.parent / f".{directory.name}.writing-{os.getpid()}"
    old = directory.parent / f".{directory.name}.replaced-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    try:
        write(fresh)
        load_trained(fresh)  # reads back as a bundle: config.json agrees with the weights
        if directory.exists():
            directory.rename(old)
        try:
            fresh.rename(directory)
        except OSError:
            if old.exists():
                old.rename(directory)  # the old bundle back in place
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return directory


def check_copy_destination(source: str | Path, out: str | Path, made: str) -> tuple[Path, Path]:
    """(source, out) for the changed copy ``adapt`` and ``calibrate`` write: a new .ckpt file, or a folder written
    as a bundle (new or empty: a bundle already there is never replaced by these commands). Checked before any work."""
    source, out = check_new_checkpoint(source, out, made)
    if out.suffix != ".ckpt":
        if is_bundle(out):  # check_destination's remedy, --force, is not these commands' (adapt's is the gate's)
            raise UserError(f"--out {out} already holds a model bundle, and the {made} is never written over one: "
                            "give a new or empty folder (or a .ckpt path).")
        check_destination(out, force=False)
    return source, out
