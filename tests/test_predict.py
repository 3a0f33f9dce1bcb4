"""Prediction on user images: any size and mode, bad files reported per file, TTA, JSON, folders."""

import csv
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from bloodcls.cli.predict import main
from bloodcls.common.tta import eight_views
from bloodcls.data import BloodMNISTDataModule, load_npz
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.classify import classify, predict_proba
from bloodcls.inference.images import ImageError, load_image
from tests.conftest import SHARED_DATA, needs_shared_data
from tests.helpers import REPO


def test_modes_become_rgb_at_the_models_size(images):
    for name in ("rgba.png", "grey.jpg", "wide.tiff", "palette.bmp"):
        x = load_image(images / name, 28)
        assert x.shape == (28, 28, 3) and x.dtype == np.uint8
    grey = load_image(images / "grey.jpg", 64)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    # non-square: the centre square is kept, so only the middle (green) third remains
    assert (load_image(images / "wide.tiff", 28) == (0, 255, 0)).all()
    assert (load_image(images / "palette.bmp", 28) == (0, 255, 0)).all()


def test_transparency_is_composited_onto_white(tmp_path):
    img = np.zeros((20, 20, 4), dtype=np.uint8)  # black, fully transparent
    Image.fromarray(img, "RGBA").save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png", 20) == 255).all()
    Image.fromarray(np.full((10, 10), 4000, dtype=np.uint16)).save(tmp_path / "deep.tif")  # 16-bit greyscale
    assert load_image(tmp_path / "deep.tif", 10).min() > 0


def test_resize_is_the_datasets_bicubic(tmp_path):
    crop = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(crop).save(tmp_path / "crop.png")
    expected = np.asarray(Image.fromarray(crop).resize((64, 64), Image.BICUBIC))
    assert np.array_equal(load_image(tmp_path / "crop.png", 64), expected)


@pytest.mark.parametrize("name, reason", [("truncated.png", "truncated"), ("empty.jpg", "empty"),
                                          ("notes.png", "not an image"), ("bomb.png", "decompression bomb"),
                                          ("absent.png", "no such file")])
def test_bad_files_say_what_is_wrong(images, name, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(images / name, 28)


def test_tta_is_invariant_to_rotations_and_flips(trained_checkpoint):
    net = load_trained(trained_checkpoint).net
    x = np.random.default_rng(2).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    views = eight_views(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert len({v[0].numpy().tobytes() for v in views}) == 8  # eight distinct transforms
    turned = np.ascontiguousarray(np.flip(np.rot90(x, 1, axes=(1, 2)), axis=2))
    plain, plain_turned = predict_proba(net, x), predict_proba(net, turned)
    tta, tta_turned = predict_proba(net, x, tta=True), predict_proba(net, turned, tta=True)
    assert np.allclose(tta, tta_turned, atol=1e-5)
    assert not np.allclose(plain, plain_turned, atol=1e-5)  # without TTA the orientation matters
    assert np.allclose(tta.sum(axis=1), 1, atol=1e-5)


def test_image_files_are_classified_as_the_model_sees_the_dataset(trained_checkpoint, synthetic_root, tmp_path):
    model = load_trained(trained_checkpoint)
    images, labels = load_npz(synthetic_root / "bloodmnist.npz")["test"]
    for i, img in enumerate(images[:16]):
        Image.fromarray(img).save(tmp_path / f"{i:02d}.png")
    report = classify(model, [tmp_path])
    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28)
    with torch.no_grad():
        logits = model.net(dm.prepare_batch(torch.from_numpy(images[:16]), train=False))
        expected = (logits / model.trust.temperature).softmax(1).numpy()  # calibrated by the run's trust state
    got = np.array([[r["probabilities"][c] for c in model.class_names] for r in report["results"]])
    assert np.allclose(got, expected, atol=1e-6)
    truth = [model.class_names[c] for c in labels[:16]]
    assert np.mean([r["class"] == t for r, t in zip(report["results"], truth, strict=True)]) >= 0.75


@pytest.mark.slow
def test_one_call_with_good_and_bad_files(trained_checkpoint, images):
    """The CLI as a user runs it: RGBA, greyscale, non-square, corrupt, empty and bomb files together."""
    names = ["rgba.png", "grey.jpg", "wide.tiff", "truncated.png", "empty.jpg", "bomb.png", "notes.png"]
    proc = subprocess.run([sys.executable, "-m", "bloodcls", "predict", str(trained_checkpoint),
                           *[str(images / n) for n in names]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(images / n) for n in names[:3]]
    for line in lines:  # random-pixel images: the gate turns them away instead of naming a class
        assert line.endswith(")") and ": does not look like a BloodMNIST cell image (gate score" in line
    for name in names[3:]:
        assert f"error: {images / name}:" in proc.stderr
    assert "3 image(s) classified, 4 failed" in proc.stderr and "Traceback" not in proc.stderr


def test_json_folder_and_skips(trained_checkpoint, images, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    Image.open(images / "grey.jpg").save(tmp_path / "cell.PNG")
    assert main([str(trained_checkpoint), str(tmp_path), "--json", "--tta"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tta"] is True and out["img_size"] == 28 and out["errors"] == []
    (result,) = out["results"]
    assert result["path"].endswith("cell.PNG")
    assert [t["class"] for t in result["top"]][0] == result["class"]
    probs = [t["probability"] for t in result["top"]]
    assert probs == sorted(probs, reverse=True) and sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert sorted(s["path"].rsplit("/", 1)[1] for s in out["skipped"]) == ["readme.txt", "sub"]
    (tmp_path / "cell.PNG").unlink()
    assert main([str(trained_checkpoint), str(tmp_path)]) == 1
    assert "holds no png/jpg/jpeg/tif/tiff/bmp file" in capsys.readouterr().err


def test_bad_checkpoint_exits_2_with_a_message(tmp_path, images, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "missing.ckpt"), str(images / "grey.jpg")])
    assert stop.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.real
@needs_shared_data
def test_real_cell_images_are_prepared_exactly_like_bloodmnist(tmp_path):
    """PBC source JPEGs through load_image equal their images in a file built by make_bloodmnist.py."""
    subprocess.run([sys.executable, str(SHARED_DATA / "make_bloodmnist.py"), "--root", str(tmp_path), "--sizes", "64",
                    "--limit-per-class", "1"], check=True, capture_output=True, timeout=300)
    built = load_npz(tmp_path / "bloodmnist_64.npz", 64)["test"][0]
    with open(SHARED_DATA / "bloodmnist_split.csv") as fh:
        rows = sorted((r for r in csv.DictReader(fh) if r["split"] == "test"), key=lambda r: int(r["index"]))
    firsts = {}
    for r in rows:  # make_bloodmnist keeps the first image of each class, in index order
        firsts.setdefault(r["label"], r["stem"])
    stems = [r["stem"] for r in rows if r["stem"] in firsts.values()]
    found = 0
    for part in sorted(SHARED_DATA.glob("pbc200.part*.tar")):
        with tarfile.open(part) as tar:
            for member in tar:
                if member.name[:-4] in stems:
                    path = tmp_path / member.name
                    path.write_bytes(tar.extractfile(member).read())
                    assert np.array_equal(load_image(path, 64), built[stems.index(member.name[:-4])]), member.name
                    found += 1
    assert found == len(stems) == 8
