"""A lab's class names matched to a model's, in any script: by name, compared in Unicode's NFKC case fold (letters
of every script kept, accents included; case, spaces, punctuation and symbols ignored, and a plural ``s`` off:
``Lymphocytes`` is ``lymphocyte``, ``Érythroblastes`` is ``érythroblaste``, ``淋巴细胞`` stays itself), and
through a user's map file for the rest (``ig: immature_granulocytes``, ``淋巴细胞: lymphocyte``), whose names are
compared the same way. One home for the rule, used by evaluation, re-calibration and fine-tuning.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bloodcls.errors import DataError

MAP_HINT = ("Name the class folders (or CSV labels) as the model's classes, or pass a map file with one line per "
            "class, e.g. `ig: immature_granulocytes`.")
RULE = "compared without case, spaces, punctuation and a plural s, accents kept"


class NoClassInCommon(DataError):
    """Not one of a folder's classes is one of the model's (fine-tuning then starts every output row fresh)."""


class NameClash(DataError):
    """Two different names that compare as one: a folder would silently take another's class."""


def normalise(name: str) -> str:
    """The form two class names are compared in: NFKC, case-folded, letters (with their accents) and digits only,
    one trailing ``s`` off. A name with no letter or digit is compared as written (case-folded, trimmed)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(name)).casefold())
    key = "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LMN")  # letters, marks, numbers
    if not key:
        return folded.strip()
    return key[:-1] if len(key) > 3 and key.endswith("s") and not key.endswith("ss") else key


def keyed(names: Iterable[str], whose: str, fix: str) -> dict[str, str]:
    """``normalise(name) -> name`` for ``names``; two different names with one key are a :class:`NameClash`
    naming both (``whose`` names, ``fix`` says what to do)."""
    out: dict[str, str] = {}
    for name in names:
        key = normalise(name)
        if key in out and out[key] != name:
            raise NameClash(f"{whose} include two names that read as one when {RULE}: `{out[key]}` and `{name}` "
                            f"(both `{key}`), so one class would silently take the other's images. {fix}")
        out[key] = name
    return out


FOLDER_FIX = ("Rename one of the two class folders (or CSV labels), or move their images into one, so that every "
              "class has a name of its own.")


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
    """A YAML file (UTF-8) of ``folder class: model class`` lines ({} for None); a bad file is one DataError."""
    if path is None:
        return {}
    import yaml

    path = Path(str(path)).expanduser()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or (f"not UTF-8 text: {err.reason}" if isinstance(err, UnicodeDecodeError)
                                                  else err)
        raise DataError(f"The class map {path} cannot be read ({why}). {MAP_HINT}") from None
    except yaml.YAMLError as err:
        raise DataError(f"The class map {path} is not valid YAML ({str(err).splitlines()[0]}). {MAP_HINT}") from None
    if not isinstance(doc, Mapping) or not doc or any(not str(v).strip() for v in doc.values()):
        raise DataError(f"The class map {path} is not a mapping of class names with a value on every line. "
                        f"{MAP_HINT}")
    return {str(k): str(v) for k, v in doc.items()}


def match_classes(folder_names: Sequence[str], model_names: Sequence[str], class_map: Mapping[str, str] | None = None,
                  source: str | Path = "the folder") -> ClassMatch:
    """Match each folder class to a model class: through ``class_map`` first (its keys and values compared
    normalised too), then by normalised name. Folder classes left over are ``unknown``. Two folder classes (or
    two map keys) that normalise alike are a :class:`NameClash`; none matched at all is :class:`NoClassInCommon`;
    a map naming a class the model lacks is a DataError."""
    by_key = {key: list(model_names).index(name) for key, name in keyed(
        model_names, "The model's classes", "The checkpoint cannot be matched to a lab's classes by name; "
        "train it again on folders with one name per class.").items()}
    keyed(folder_names, f"The classes of {source}", FOLDER_FIX)
    class_map = dict(class_map or {})
    mapped = {key: class_map[name] for key, name in keyed(
        class_map, "The class map's folder classes", "Keep one line per folder class.").items()}
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
        raise NoClassInCommon(f"None of the classes of {source} ({', '.join(folder_names)}) is one of the model's "
                              f"({', '.join(model_names)}), so nothing can be scored. {MAP_HINT}")
    return ClassMatch(list(folder_names), list(model_names), index, unknown)
