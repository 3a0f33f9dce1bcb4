"""A lab's class names matched to a model's: by name, ignoring case, spaces/underscores/hyphens and a plural
``s`` (``Lymphocytes`` is ``lymphocyte``), and through a user's map file for the rest (``ig:
immature_granulocytes``). One home for the rule, used by evaluation, re-calibration and fine-tuning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bloodcls.errors import DataError

MAP_HINT = ("Name the class folders (or CSV labels) as the model's classes, or pass a map file with one line per "
            "class, e.g. `ig: immature_granulocytes`.")


def normalise(name: str) -> str:
    """The form two class names are compared in: lower case, letters and digits only, one trailing ``s`` off."""
    key = re.sub(r"[^0-9a-z]+", "", str(name).lower())
    return key[:-1] if len(key) > 3 and key.endswith("s") and not key.endswith("ss") else key


@dataclass(frozen=True)
class ClassMatch:
    """Which of a folder's classes are which of the model's (by index), and which the model does not know."""

    folder_names: list[str]
    model_names: list[str]
    index: dict[str, int]  # folder class -> model class index
    unknown: list[str] = field(default_factory=list)  # folder classes the model has no output for

    def describe(self) -> str:
        """``basophil, ig -> immature_granulocytes, ...`` (only renamed classes show an arrow)."""
        return ", ".join(f if self.model_names[i] == f else f"{f} -> {self.model_names[i]}"
                         for f, i in self.index.items())


def load_class_map(path: str | Path | None) -> dict[str, str]:
    """A YAML file of ``folder class: model class`` lines ({} for None); a bad file is one DataError."""
    if path is None:
        return {}
    import yaml

    path = Path(str(path)).expanduser()
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise DataError(f"The class map {path} cannot be read ({err.strerror or err}). {MAP_HINT}") from None
    except yaml.YAMLError as err:
        raise DataError(f"The class map {path} is not valid YAML ({str(err).splitlines()[0]}). {MAP_HINT}") from None
    if not isinstance(doc, Mapping) or not doc or any(not str(v).strip() for v in doc.values()):
        raise DataError(f"The class map {path} is not a mapping of class names with a value on every line. "
                        f"{MAP_HINT}")
    return {str(k): str(v) for k, v in doc.items()}


def match_classes(folder_names: Sequence[str], model_names: Sequence[str], class_map: Mapping[str, str] | None = None,
                  source: str | Path = "the folder") -> ClassMatch:
    """Match each folder class to a model class: through ``class_map`` first (its keys and values compared
    normalised too), then by normalised name. Folder classes left over are ``unknown``; none matched at all, or
    a map naming a class the model lacks, is a DataError."""
    by_key = {normalise(m): i for i, m in enumerate(model_names)}
    mapped = {normalise(k): v for k, v in (class_map or {}).items()}
    wrong = sorted({v for v in mapped.values() if normalise(v) not in by_key})
    if wrong:
        raise DataError(f"The class map names {', '.join(wrong)}, which the model does not have; its classes are "
                        f"{', '.join(model_names)}. Map each folder class onto one of those.")
    index, unknown = {}, []
    for name in folder_names:
        target = normalise(mapped.get(normalise(name), name))
        if target in by_key:
            index[name] = by_key[target]
        else:
            unknown.append(name)
    if not index:
        raise DataError(f"None of the classes of {source} ({', '.join(folder_names)}) is one of the model's "
                        f"({', '.join(model_names)}), so nothing can be scored. {MAP_HINT}")
    return ClassMatch(list(folder_names), list(model_names), index, unknown)
