"""A lab's labelled images read for a trained model: its classes matched by name, its images at the model's size.

What ``bloodcls evaluate`` scores and ``bloodcls calibrate`` fits on. The folder or CSV is read as
``data=folder`` reads it (:mod:`bloodcls.data.folder`: every row, whatever its split column says); images of a
class the model does not know are counted apart and never decoded or scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bloodcls.data.class_names import ClassMatch, match_classes
from bloodcls.data.folder import LabelledFiles, decode, scan


@dataclass
class LabelledImages:
    """Images of the classes the model knows, with targets as the model's class indices."""

    images: np.ndarray  # N x S x S x 3 uint8
    targets: np.ndarray  # N int64, indices into the model's classes
    paths: list[str]  # relative to ``files.root``
    labels: list[str]  # each image's class as the folder names it
    match: ClassMatch
    unknown_counts: dict[str, int]  # folder class the model does not know -> images of it (not scored)
    files: LabelledFiles  # what was read; ``files.skipped``: files that are not readable images, and why

    def __len__(self) -> int:
        return len(self.targets)


def load_labelled(path: str | Path, model_names: Sequence[str], img_size: int,
                  class_map: Mapping[str, str] | None = None) -> LabelledImages:
    """``path`` (a folder of class folders or a ``path,label[,split]`` CSV) read for a model with the classes
    ``model_names`` at ``img_size`` px. Bad folders, and no class in common, are one DataError each."""
    files = scan(path, min_classes=1)
    match = match_classes(files.class_names, model_names, class_map, source=path)
    unknown = Counter(e.label for e in files.entries if e.label not in match.index)
    known = replace(files, entries=[e for e in files.entries if e.label in match.index],
                    class_names=[c for c in files.class_names if c in match.index])
    images, read = decode(known, img_size)
    return LabelledImages(images=images, targets=np.array([match.index[e.label] for e in read.entries], np.int64),
                          paths=[e.path for e in read.entries], labels=[e.label for e in read.entries], match=match,
                          unknown_counts=dict(sorted(unknown.items())), files=read)


def fingerprints(images: np.ndarray) -> list[str]:
    """A short hash of each image's pixels as read for the model (N x S x S x 3 uint8): the same image gives the
    same fingerprint wherever its file lies, so ``calibrate`` can record what it fitted on and ``evaluate`` can
    tell when it scores those images again."""
    import hashlib

    return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).hexdigest() for image in images]
