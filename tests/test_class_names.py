"""A lab's class names matched to a model's (case, separators, plurals, a map file; names in any script, two that
read as one refused), and a labelled folder read for a model: unknown classes counted apart, never scored."""

import csv
import json

import pytest

from bloodcls.data.class_names import NameClash, load_class_map, match_classes, normalise
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


# -- names in any script ----------------------------------------------------------------------------------------
BLOOD = ["basophil", "eosinophil", "erythroblast", "immature_granulocytes", "lymphocyte", "monocyte", "neutrophil",
         "platelet"]
CHINESE = {"嗜碱性粒细胞": "basophil", "嗜酸性粒细胞": "eosinophil", "有核红细胞": "erythroblast",
           "未成熟粒细胞": "immature_granulocytes", "淋巴细胞": "lymphocyte", "单核细胞": "monocyte",
           "中性粒细胞": "neutrophil", "血小板": "platelet"}


def test_names_in_other_scripts_keep_their_letters():
    assert normalise("淋巴细胞") == "淋巴细胞" and normalise("血小板") == "血小板"  # were both ""
    assert normalise("Érythroblaste") == "érythroblaste"  # was "rythroblaste"
    assert normalise("Érythroblastes") == normalise("érythroblaste") == "érythroblaste"  # case and plural
    assert normalise("E\u0301rythroblaste") == "érythroblaste"  # decomposed (as macOS names files) = composed
    assert normalise("Plaquettes sanguines") == normalise("plaquettes_sanguines") == "plaquettessanguine"
    assert normalise("ＣＤ３４＋ Ｂｌａｓｔｓ") == "cd34blast"  # full-width forms (NFKC), symbols dropped
    assert normalise("Straße") == normalise("STRASSE") == "strasse"  # case-folded, not only lower-cased
    assert normalise("中性粒细胞 (neutrophils)") == "中性粒细胞neutrophil"  # mixed scripts
    assert normalise("+") != normalise("-")  # names of symbols only stay apart


def test_chinese_folders_match_through_a_map_file(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in CHINESE.items()), encoding="utf-8")
    match = match_classes(sorted(CHINESE), BLOOD, load_class_map(path))
    assert match.index == {k: BLOOD.index(v) for k, v in CHINESE.items()} and match.unknown == []
    # without the map none matches: refused, never all eight onto one class
    with pytest.raises(DataError, match="None of the classes of the folder"):
        match_classes(sorted(CHINESE), BLOOD)


def test_french_and_mixed_names_match_by_name_and_map(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("Érythroblastes: erythroblast\nplaquettes: platelet\n血小板: platelet\n", encoding="utf-8")
    folders = ["E\u0301rythroblastes", "Plaquettes", "Lymphocytes", "Monocytes", "血小板", "Éosinophile"]
    match = match_classes(folders, BLOOD, load_class_map(path))
    assert match.index == {"E\u0301rythroblastes": 2, "Plaquettes": 7, "Lymphocytes": 4, "Monocytes": 5, "血小板": 7}
    assert match.unknown == ["Éosinophile"]  # accents are letters: éosinophile is not eosinophil


@pytest.mark.parametrize("names, shown", [
    (["Lymphocytes", "lymphocyte"], "`Lymphocytes` and `lymphocyte` (both `lymphocyte`)"),
    (["血小板", "血小板 "], "`血小板` and `血小板 ` (both `血小板`)"),
    (["Érythroblaste", "E\u0301rythroblaste"], "(both `érythroblaste`)"),
])
def test_two_folder_names_that_read_as_one_are_refused(names, shown):
    with pytest.raises(NameClash) as err:
        match_classes(names, BLOOD, source="lab")
    message = str(err.value)
    assert message.startswith("The classes of lab include two names that read as one") and shown in message
    assert "Rename one of the two class folders" in message and "\n" not in message


def test_a_folder_with_two_names_that_read_as_one_is_refused_when_scanned(tmp_path):
    root = write_synthetic_folder(tmp_path / "lab", n_per_class=3, size=8, classes=("Monocytes", "monocyte"))
    with pytest.raises(NameClash, match="`Monocytes` and `monocyte` \\(both `monocyte`\\)"):
        load_labelled(root, BLOOD, 8)


def test_two_map_lines_for_one_folder_class_are_refused(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("IG: immature_granulocytes\nig: monocyte\n")
    with pytest.raises(NameClash, match="class map's folder classes include .*`IG` and `ig`.*Keep one line"):
        match_classes(["ig"], BLOOD, load_class_map(path))


def test_a_map_file_that_is_not_utf8_is_one_paragraph(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_bytes("Érythroblaste: erythroblast\n".encode("latin-1"))
    with pytest.raises(DataError, match="cannot be read \\(not UTF-8 text"):
        load_class_map(path)


def test_a_chinese_and_french_folder_is_read_with_each_class_right(tmp_path):
    names = ("嗜碱性粒细胞", "Éosinophiles", "有核红细胞", "Plaquettes")
    root = write_synthetic_folder(tmp_path / "lab", n_per_class=4, size=16, classes=names)
    classes = {"嗜碱性粒细胞": "basophil", "éosinophile": "eosinophil", "有核红细胞": "erythroblast",
               "plaquette": "platelet"}
    read = load_labelled(root, BLOOD, 16, classes)
    assert {label: BLOOD[t] for label, t in zip(read.labels, read.targets, strict=True)} == {
        "嗜碱性粒细胞": "basophil", "Éosinophiles": "eosinophil", "有核红细胞": "erythroblast", "Plaquettes": "platelet"}


def test_evaluate_scores_chinese_and_french_folders_as_english_ones(trained_checkpoint, tmp_path, capsys):
    """`bloodcls evaluate --classes map.yaml` on class folders named in Chinese and French: every folder is scored
    as its own class, exactly as the same images in folders named as the model's classes."""
    from bloodcls.cli.evaluate import main

    names = ("嗜碱性粒细胞", "Éosinophiles", "有核红细胞", "Granulocytes immatures", "淋巴细胞", "Monocytes",
             "中性粒细胞", "血小板")
    english = write_synthetic_folder(tmp_path / "english", n_per_class=5, size=28, classes=tuple(BLOOD), seed=3)
    lab = write_synthetic_folder(tmp_path / "lab", n_per_class=5, size=28, classes=names, seed=3)
    classes = tmp_path / "map.yaml"
    classes.write_text("嗜碱性粒细胞: basophil\néosinophile: eosinophil\n有核红细胞: erythroblast\n"
                       "granulocytes immatures: immature granulocytes\n淋巴细胞: lymphocyte\n中性粒细胞: neutrophil\n"
                       "血小板: platelet\n", encoding="utf-8")  # Monocytes matches monocyte by name
    reports = []
    for folder, extra in ((english, []), (lab, ["--classes", str(classes)])):
        assert main([str(trained_checkpoint), str(folder), "--out", str(tmp_path / folder.name), "--json",
                     *extra]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    ours, theirs = reports[1], reports[0]
    assert [(r["class"], r["support"]) for r in ours["per_class"]] == [(c, 5) for c in BLOOD]  # 8 classes, 5 each
    assert ours["classes"]["unknown"] == {} and ours["n"] == 40 == theirs["n"]
    assert ours["confusion_matrix"] == theirs["confusion_matrix"] and ours["accuracy"] == theirs["accuracy"]
    with open(tmp_path / "lab" / "predictions.csv", newline="", encoding="utf-8") as fh:
        truth = {(r["label"], r["true"]) for r in csv.DictReader(fh)}
    assert truth == set(zip(names, BLOOD, strict=True))
