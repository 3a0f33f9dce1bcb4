"""data=folder: a lab's own images (class folders or a CSV), the stratified split kept in the run folder, k-fold
folds, and one paragraph for each way a folder cannot be used."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from bloodcls.data import FolderDataModule, load_folder_splits
from bloodcls.data.folder import Entry, LabelledFiles, decode, scan
from bloodcls.data.splits import draw_split, read_split
from bloodcls.errors import DataError
from bloodcls.schema import ConfigError, check_config
from tests.helpers import compose_train, run_cli
from tests.synthetic import FOLDER_CLASSES, synthetic_split, write_synthetic_folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """4 classes x 20 synthetic images (PNG and JPEG, one greyscale, one RGBA), one broken PNG, one stray note."""
    root = write_synthetic_folder(tmp_path_factory.mktemp("lab") / "lab")
    (root / "notes.txt").write_text("which microscope, which stain\n")
    return root


def _files(counts: dict[str, int]) -> LabelledFiles:
    """Labelled files without images, for drawing splits."""
    entries = [Entry(f"{c}/{i}.png", c) for c, n in counts.items() for i in range(n)]
    return LabelledFiles(None, "lab", entries, sorted(counts))


def _write_csv(path, rows, header="path,label"):
    path.write_text("\n".join([header, *[",".join(r) for r in rows]]) + "\n")
    return path


# -- reading ----------------------------------------------------------------------------------------------------

def test_folder_classes_images_and_skipped_files(lab, caplog):
    files = scan(lab)
    assert files.class_names == sorted(FOLDER_CLASSES)
    with caplog.at_level(logging.WARNING):
        images, read = decode(files, 28)
    assert images.shape == (80, 28, 28, 3) and images.dtype == np.uint8  # the greyscale and RGBA files are kept
    assert sorted(read.labels().tolist()) == sorted([0, 1, 2, 3] * 20)
    skipped = dict(read.skipped)
    assert set(skipped) == {"notes.txt", "neutro/broken.png"}
    assert "outside any class folder" in skipped["notes.txt"] and "truncated" in skipped["neutro/broken.png"]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "Skipped 2 files" in warning and "neutro/broken.png" in warning and "other 80 images" in warning


def test_images_are_read_as_predict_reads_them(lab):
    from bloodcls.inference.images import load_image

    images, read = decode(scan(lab), 28)
    i = next(k for k, e in enumerate(read.entries) if e.path == "lymph/000.png")  # the RGBA file
    assert np.array_equal(images[i], load_image(lab / "lymph" / "000.png", 28))


def test_csv_without_and_with_a_split_column(lab, tmp_path):
    rows = [(f"../{lab.name}/{e.path}", e.label) for e in scan(lab).entries]
    shutil.copytree(lab, tmp_path / lab.name)
    (tmp_path / "csv").mkdir()
    drawn = load_folder_splits(_write_csv(tmp_path / "csv" / "lab.csv", rows), 28)
    assert drawn.files.class_names == sorted(FOLDER_CLASSES)
    assert {s: len(y) for s, (_, y) in drawn.arrays.items()} == {"train": 56, "val": 8, "test": 16}
    given = [(p, label, "test" if i % 4 == 0 else "val" if i % 4 == 1 else "train") for i, (p, label) in enumerate(rows)]
    kept = load_folder_splits(_write_csv(tmp_path / "csv" / "split.csv", given, "path,label,split"), 28)
    by_path = {e.path: e.split for e in kept.files.entries}
    assert all(by_path[p] == s for p, _, s in given if not p.endswith("broken.png"))


# -- the split --------------------------------------------------------------------------------------------------

def test_split_is_stratified_seeded_and_has_every_class_in_every_part():
    files = _files({"a": 10, "b": 25, "c": 40, "d": 3})
    split = np.array(draw_split(files, 0.1, 0.2, seed=0))
    labels = files.labels()
    for c, n in enumerate((10, 25, 40, 3)):
        got = {s: int((split[labels == c] == s).sum()) for s in ("train", "val", "test")}
        assert got == {"test": max(1, round(n * 0.2)), "val": max(1, round(n * 0.1)),
                       "train": n - max(1, round(n * 0.2)) - max(1, round(n * 0.1))}
    assert draw_split(files, 0.1, 0.2, seed=0) == split.tolist()
    assert draw_split(files, 0.1, 0.2, seed=1) != split.tolist()


def test_k_fold_folds_are_disjoint_cover_the_rest_and_keep_the_test_hold_out():
    files = _files({"a": 12, "b": 30, "c": 21})
    k = 4
    splits = [np.array(draw_split(files, 0.1, 0.2, seed=3, folds=k, fold=i)) for i in range(k)]
    tests = [set(np.flatnonzero(s == "test")) for s in splits]
    vals = [set(np.flatnonzero(s == "val")) for s in splits]
    assert all(t == tests[0] for t in tests)  # one fixed test hold-out for every fold
    assert sum(len(v) for v in vals) == len(set().union(*vals))  # disjoint
    assert set().union(*vals) == set(range(len(files.entries))) - tests[0]  # and covering the non-test images
    labels = files.labels()
    assert all(set(labels[list(v)]) == {0, 1, 2} for v in vals)  # stratified: every class in every fold


def test_the_split_is_written_once_and_read_back(lab, tmp_path):
    split_file = tmp_path / "run" / "split.csv"
    first = load_folder_splits(lab, 28, split_file=split_file, split_seed=0)
    assert first.drawn and split_file.read_text().splitlines()[0] == "path,label,split"
    rows = read_split(split_file, lab, lab).entries
    assert [(e.path, e.label, e.split) for e in rows] == [(e.path, e.label, e.split) for e in first.files.entries]
    again = load_folder_splits(lab, 28, split_file=split_file, split_seed=7)  # another seed: the file still wins
    assert not again.drawn
    for s in ("train", "val", "test"):
        assert np.array_equal(again.arrays[s][0], first.arrays[s][0])
        assert np.array_equal(again.arrays[s][1], first.arrays[s][1])
    assert load_folder_splits(lab, 28, split_seed=7).files.entries != first.files.entries  # redrawn without it


def test_data_module_names_classes_and_weights_from_the_folder(lab, tmp_path):
    dm = FolderDataModule(path=str(lab), img_size=28, run_dir=str(tmp_path))
    assert dm.class_names == sorted(FOLDER_CLASSES) and dm.num_classes == 4
    dm.setup()
    record = dm.record()
    assert record["split_sizes"] == {"train": 56, "val": 8, "test": 16}
    assert record["split_file"] == str(tmp_path / "split.csv") and (tmp_path / "split.csv").is_file()
    assert {s["path"] for s in record["skipped"]} == {"notes.txt", "neutro/broken.png"}
    uneven = FolderDataModule(path=str(_folder(tmp_path / "uneven", {"a": 10, "b": 20})), img_size=28)
    # train: 10 - 2 - 1 = 7 of a, 20 - 4 - 2 = 14 of b; balanced weights n / (classes * count), before setup
    assert uneven.train_class_weights().tolist() == pytest.approx([21 / (2 * 7), 21 / (2 * 14)])


# -- bad folders ------------------------------------------------------------------------------------------------

def _folder(root, counts, broken=()):
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(synthetic_split(1, 8, seed=i)[0][0]).save(root / c / f"{i}.png")
    for name in broken:
        (root / name).write_bytes(b"not an image")
    return root


def _bad_inputs(tmp_path):
    """(data.path, extra settings, what the message must say) for each way a folder cannot be used."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "loose").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "loose" / "cell.png")
    no_images = _folder(tmp_path / "no_images", {"a": 3, "b": 3})
    (no_images / "c").mkdir()
    (no_images / "c" / "readme.txt").write_text("todo")
    splits = _folder(tmp_path / "splits", {"train": 3, "test": 3})
    csv_dir = _folder(tmp_path / "csvimg", {"a": 3, "b": 3})
    return [
        (tmp_path / "nowhere", {}, "does not exist"),
        (tmp_path / "empty", {}, r"is empty \(no class folders\)"),
        (tmp_path / "loose", {}, "holds image files but no class folders"),
        (no_images, {}, r"1 class folder holds no image: c/ \(1 other files\)"),
        (_folder(tmp_path / "one", {"a": 5}), {}, r"one class \(a\); a classifier needs at least two"),
        (splits, {}, r"holds split folders \(test, train\), not class folders"),
        (_folder(tmp_path / "small", {"a": 5, "b": 2}), {}, r"too few images for the split: b \(2\).*at least 3"),
        (_folder(tmp_path / "fewfold", {"a": 6, "b": 9}), {"folds": 6},
         r"too few images for the split: a \(6\).*data.folds=6.*at least 7"),
        (_folder(tmp_path / "broken", {"a": 3, "b": 3, "c": 0}, broken=("c/x.png",)), {},
         "no image of the class c could be read"),
        (_write_csv(csv_dir / "missing.csv", [("a/0.png", "a"), ("a/9.png", "a"), ("b/7.png", "b")]), {},
         r"2 of its 3 paths do not exist: a/9.png, b/7.png"),
        (_write_csv(csv_dir / "unlabelled.csv", [("a/0.png", "a"), ("a/1.png", ""), ("b/0.png", "b")]), {},
         r"1 rows have an empty label: line 3 \(a/1.png\)"),
        (_write_csv(csv_dir / "columns.csv", [("a/0.png", "a")], "file,class"), {}, "needs a header row naming path"),
        (_write_csv(csv_dir / "header.csv", []), {}, "lists no images"),
        (_write_csv(csv_dir / "badsplit.csv", [("a/0.png", "a", "training")], "path,label,split"), {},
         "the split column holds training"),
        (_write_csv(csv_dir / "notrain.csv", [("a/0.png", "a", "train"), ("b/0.png", "b", "val"),
                                              ("a/1.png", "a", "test")], "path,label,split"), {},
         "no train image of b"),
        (csv_dir / "a" / "0.png", {}, "is a file but not a .csv"),
        (csv_dir, {"fold": 3, "folds": 3}, "data.fold=3 does not exist with data.folds=3"),
        (csv_dir, {"val_fraction": 0.5, "test_fraction": 0.5}, "leave nothing to train on"),
    ]


def test_each_bad_folder_gets_its_paragraph(tmp_path):
    for path, settings, message in _bad_inputs(tmp_path):
        with pytest.raises(DataError, match=message) as err:
            load_folder_splits(path, 28, **settings)
        assert "\n" not in str(err.value), path  # one paragraph


def test_a_split_file_naming_a_vanished_image(lab, tmp_path):
    copy = shutil.copytree(lab, tmp_path / "lab")
    split_file = tmp_path / "split.csv"
    load_folder_splits(copy, 28, split_file=split_file)
    (copy / "mono" / "003.jpg").unlink()
    with pytest.raises(DataError, match=r"lists 1 images that are no longer under.*mono/003.jpg"):
        load_folder_splits(copy, 28, split_file=split_file)


def test_config_checks_the_folder_keys():
    with pytest.raises(ConfigError, match=r"data.path=None \(expected a folder of class folders"):
        check_config(compose_train(["data=folder"]))
    with pytest.raises(ConfigError, match=r"data.test_fraction=1.5 .*data.folds=1 "):
        check_config(compose_train(["data=folder", "data.path=x", "data.folds=1", "data.test_fraction=1.5"]))


def test_cli_bad_folder_is_one_paragraph_and_exit_2(tmp_path):
    (tmp_path / "lab").mkdir()
    proc = run_cli("train.py", "data=folder", f"data.path={tmp_path / 'lab'}", "logger=none",
                   f"paths.log_dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert "is empty (no class folders)" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.count("error:") == 1
