"""The Python API: `from bloodcls import Classifier`. Its rows are `bloodcls predict --json`'s for paths, PIL images,
NumPy arrays and tensors of the same pictures, with and without TTA, in batches; bad inputs are one clear error;
adapt and save give a bundle; `import bloodcls` stays light; the docs page's example runs as printed."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bloodcls.cli.predict import main as predict
from bloodcls.errors import UserError
from bloodcls.inference.classifier import Classifier
from bloodcls.inference.inputs import InputError
from tests.helpers import REPO
from tests.synthetic import synthetic_split

PICTURES = ("rgba.png", "grey.jpg", "wide.tiff", "palette.bmp")  # odd modes and shapes (conftest's images)


@pytest.fixture(scope="module")
def pictures(images, tmp_path_factory):
    """Image files of every mode, and synthetic cells saved as PNG (at 40 px: resized on reading)."""
    cells, _ = synthetic_split(2, 40, seed=4)
    folder = tmp_path_factory.mktemp("cells")
    for i, cell in enumerate(cells[:6]):
        Image.fromarray(cell).save(folder / f"cell_{i}.png")
    return [images / name for name in PICTURES] + sorted(folder.glob("*.png"))


def predict_json(capsys, model, paths, tta=False):
    assert predict([str(model), *map(str, paths), "--json", *(["--tta"] if tta else [])]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def as_array(path) -> np.ndarray:
    """The picture a file holds, as NumPy holds it (a palette image as the RGB it shows)."""
    with Image.open(path) as img:
        return np.asarray(img if img.mode in ("RGB", "RGBA", "L") else img.convert("RGB"))


def as_tensor(array: np.ndarray, floats: bool) -> torch.Tensor:
    """torchvision's layout: C x H x W (H x W for grey), uint8 or float in [0, 1] as ToTensor gives."""
    t = torch.from_numpy(array.copy())
    t = t.permute(2, 0, 1) if t.dim() == 3 else t
    return t.float() / 255 if floats else t


@pytest.mark.parametrize("tta", [False, True])
def test_rows_are_predicts_for_paths_pil_numpy_and_tensors(reference_run, pictures, capsys, tta):
    clf = Classifier.load(reference_run[0])
    want = predict_json(capsys, reference_run[0], pictures, tta)
    assert len(want) == len(pictures) and clf.predict([str(p) for p in pictures], tta=tta) == want
    bare = [{k: v for k, v in row.items() if k != "path"} for row in want]
    opened = [Image.open(p) for p in pictures]
    assert clf.predict(opened, tta=tta) == bare
    arrays = [as_array(p) for p in pictures]
    assert arrays[0].shape[-1] == 4 and arrays[1].ndim == 2  # RGBA and grey stay as they are
    assert clf.predict(arrays, tta=tta) == bare
    assert clf.predict([as_tensor(a, floats=False) for a in arrays], tta=tta) == bare
    assert clf.predict([as_tensor(a, floats=True) for a in arrays], tta=tta) == bare
    cells = np.stack(arrays[len(PICTURES):])  # one batch array of the same-sized cells, and as N x C x H x W
    assert clf.predict(cells, tta=tta) == bare[len(PICTURES):]
    assert clf.predict(torch.from_numpy(cells).permute(0, 3, 1, 2), tta=tta) == bare[len(PICTURES):]


def test_a_folder_and_small_batches(reference_run, pictures, capsys):
    clf = Classifier.load(reference_run[0])
    folder = pictures[-1].parent
    want = predict_json(capsys, reference_run[0], [folder])
    assert clf.predict(folder) == want and len(want) == 6
    small = clf.predict([str(p) for p in sorted(folder.glob("*.png"))], batch_size=4)  # batches of 4 and 2
    assert [(r["class"], r["verdict"], r.get("prediction_set")) for r in small] == \
        [(r["class"], r["verdict"], r.get("prediction_set")) for r in want]
    assert [r["probability"] for r in small] == pytest.approx([r["probability"] for r in want], abs=1e-5)
    assert clf.predict([]) == []


@pytest.mark.parametrize(("given", "words"), [
    (np.linspace(-1, 2, 28 * 28 * 3, dtype=np.float32).reshape(28, 28, 3), "these range from -1 to 2. Scale them"),
    (np.full((28, 28, 3), np.nan, np.float32), "[0, 1] (torchvision's ToTensor); some are not finite numbers"),
    (np.zeros((28, 28, 3), np.int64), "Pixel values of type int64 are not read"),
    (np.zeros((28, 28, 5), np.uint8), "has 5 channels where 1, 3 or 4 are read; NumPy arrays are read channels last"),
    (torch.zeros(28, 28, 3), "has 28 channels where 1, 3 or 4 are read; tensors are read channels first"),
    (np.zeros((2, 2, 28, 28, 3), np.uint8), "is not an image or a batch of images"),
    ({"image": 1}, "Cannot read a dict as an image"),
])
def test_inputs_it_cannot_read_are_one_clear_error(trained_checkpoint, given, words):
    with pytest.raises(InputError, match=re.escape(words)):
        Classifier.load(trained_checkpoint).predict(given)


def test_a_file_it_cannot_read_is_named(trained_checkpoint, images, tmp_path):
    clf = Classifier.load(trained_checkpoint)
    with pytest.raises(InputError, match=re.escape(f"{images / 'truncated.png'}: corrupt or truncated image data")):
        clf.predict([images / "rgba.png", images / "truncated.png"])
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: the folder holds no png/")):
        clf.predict(tmp_path)
    assert issubclass(InputError, UserError)


def test_adapt_returns_an_adapted_copy_and_save_writes_its_bundle(trained_checkpoint, tmp_path):
    clf = Classifier.load(trained_checkpoint)
    cells, _ = synthetic_split(5, 28, seed=13)
    before = clf.model.net.state_dict()["features.0.0.2.running_mean"].clone()
    adapted = clf.adapt(list(cells))  # a list of arrays, as predict takes them
    assert clf.adapted_on is None and torch.equal(clf.model.net.state_dict()["features.0.0.2.running_mean"], before)
    assert adapted.adapted_on["images"] == 40 and "adapted" in repr(adapted)
    assert not torch.equal(adapted.model.net.state_dict()["features.0.0.2.running_mean"], before)
    folder = adapted.save(tmp_path / "lab")
    assert json.loads((folder / "config.json").read_text())["written"]["by"] == "bloodcls.Classifier"  # the API
    assert Classifier.load(folder).predict(cells[:3]) == adapted.predict(cells[:3])
    with pytest.raises(UserError, match="holds 3 readable images; recomputing the BatchNorm statistics needs at least"):
        clf.adapt(cells[:3])


def test_the_hub_mixin_saves_and_loads_the_same_bundle(trained_checkpoint, tmp_path):
    clf = Classifier.load(trained_checkpoint)
    clf.save_pretrained(tmp_path / "hub")
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    again = Classifier.from_pretrained(tmp_path / "hub")
    cells, _ = synthetic_split(1, 28, seed=2)
    assert again.predict(cells) == clf.predict(cells) and again.records == clf.records


def test_import_bloodcls_is_light_and_gives_the_classifier():
    code = ("import sys, bloodcls; light = 'torch' not in sys.modules; from bloodcls import Classifier; "
            "import bloodcls.inference.classifier as m; print(light, Classifier is m.Classifier, 'Classifier' in "
            "bloodcls.__all__, sorted({k.split('.')[0] for k in sys.modules} & {'lightning', 'hydra'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True", "[]"]


def docs_example() -> str:
    """The first python code block of docs/guide/python-api.md, as printed."""
    page = (REPO / "docs" / "guide" / "python-api.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)[:1]
    return block


def test_the_docs_example_runs_as_printed(reference_run, tmp_path):
    """Run in a folder holding what the example names: my_run (the run), cells/ and lab_images/."""
    code = docs_example()
    assert len(code.strip().splitlines()) <= 12
    (tmp_path / "my_run").symlink_to(reference_run[0])
    cells, _ = synthetic_split(5, 28, seed=17)
    for folder, pictures in (("cells", cells[:2]), ("lab_images", cells)):
        (tmp_path / folder).mkdir()
        for i, cell in enumerate(pictures):
            Image.fromarray(cell).save(tmp_path / folder / f"cell_{i}.png")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) >= 2 and (tmp_path / "my_lab_model" / "README.md").is_file()
