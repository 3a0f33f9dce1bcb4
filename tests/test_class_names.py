"""A lab's class names matched to a model's (case, separators, plurals, a map file), and a labelled folder read
for a model: unknown classes counted apart, never scored."""

import pytest

from bloodcls.data.class_names import load_class_map, match_classes, normalise
from bloodcls.data.labelled import load_labelled
from bloodcls.errors import DataError
from tests.synthetic import write_synthetic_folder

MODEL = ["basophil", "eosinophil", "immature_granulocytes", "lymphocyte"]


def test_names_match_ignoring_case_separators_and_plurals():
    assert normalise("Immature Granulocytes") == normalise("immature_granulocytes") == "immaturegranulocyte"
    assert normalise("LYMPHOCYTES") == "lymphocyte"
    assert normalise("mass") == "mass"  # a double s is not a plural
    match = match_classes(["Basophils", "eosinophil", "immature-granulocytes", "smudge"], MODEL)
    assert match.index == {"Basophils": 0, "eosinophil": 1, "immature-granulocytes": 2}
    assert match.unknown == ["smudge"]


def test_a_map_file_names_the_rest(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("IG: immature granulocytes\nlymph: lymphocyte\n")
    match = match_classes(["ig", "lymph", "basophil"], MODEL, load_class_map(path))
    assert match.index == {"ig": 2, "lymph": 3, "basophil": 0}
    assert "ig -> immature_granulocytes" in match.describe()


@pytest.mark.parametrize("text, words", [("ig: neutrophil\n", "which the model does not have"),
                                         ("- ig\n", "not a mapping"), ("ig: [\n", "not valid YAML")])
def test_bad_map_files_are_one_paragraph(tmp_path, text, words):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=words):
        match_classes(["ig"], MODEL, load_class_map(path))


def test_no_class_in_common_is_refused():
    with pytest.raises(DataError, match="None of the classes of lab.*ig: immature_granulocytes"):
        match_classes(["blast", "smudge"], MODEL, source="lab")


def test_a_folder_read_for_a_model_counts_unknown_classes_apart(tmp_path):
    root = write_synthetic_folder(tmp_path / "lab", n_per_class=6, size=16)  # blast, lymph, mono, neutro
    model = ["lymphocyte", "monocyte", "neutrophil"]
    read = load_labelled(root, model, 16, {"lymph": "lymphocyte", "mono": "monocyte", "neutro": "neutrophil"})
    assert read.unknown_counts == {"blast": 6}
    assert sorted(set(read.targets.tolist())) == [0, 1, 2]
    assert read.images.shape == (len(read), 16, 16, 3)
    assert len(read) == 18 and len(read.files.skipped) == 1  # neutro/broken.png is reported, not scored
    assert all(model[t].startswith(label) for t, label in zip(read.targets, read.labels, strict=True))


def test_one_class_folder_can_be_scored(tmp_path):
    root = write_synthetic_folder(tmp_path / "lab", n_per_class=4, size=16, classes=("lymph",))
    read = load_labelled(root, ["lymph", "mono"], 16)
    assert read.targets.tolist() == [0] * 4 and len(read.files.skipped) == 1  # broken.png is reported
