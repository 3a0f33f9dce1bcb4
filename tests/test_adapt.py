"""`bloodcls adapt`: BatchNorm statistics recomputed on a lab's unlabelled images. Only the statistics change, a
shifted lab's accuracy comes back, the guard refuses too few, unreadable and non-cell images (one paragraph, exit
2), and the adapted model loads in predict, evaluate, calibrate, the demo and init_from= and says it is adapted."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bloodcls.cli.adapt import main
from bloodcls.common.checkpoints import ADAPTED_KEY, NET_PREFIX, TRUST_KEY, read_checkpoint
from bloodcls.data.unlabelled import load_unlabelled
from bloodcls.errors import UserError
from bloodcls.inference.adaptation import (
    MIN_IMAGES,
    SETS_REMOVED,
    adapt_model,
    adaptation_status,
    recompute_statistics,
)
from bloodcls.inference.checkpoint import load_trained
from bloodcls.models.batchnorm import batchnorm_buffers
from bloodcls.uncertainty.far_ood import far_ood_sets
from bloodcls.uncertainty.outputs import network_outputs
from tests.synthetic import synthetic_split


def darker(images: np.ndarray) -> np.ndarray:
    """A dimmer lamp: intensity x 0.8 and 10 levels darker (as-is, the reference model falls to chance)."""
    return np.clip(images.astype(np.float32) * 0.8 - 10, 0, 255).astype(np.uint8)


def stained(images: np.ndarray) -> np.ndarray:
    """A strong colour shift: each channel scaled differently, then darker."""
    return np.clip(images.astype(np.float32) * np.array([0.6, 0.8, 1.3]) - 30, 0, 255).astype(np.uint8)


def write_images(folder, images, classes: list[str] | None = None):
    """PNG files, flat or (``classes``: each image's class) in class folders."""
    for i, img in enumerate(images):
        path = folder / (classes[i] if classes else "") / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    return folder


def accuracy(net, images, labels) -> float:
    return float((network_outputs(net, images).logits.argmax(1).numpy() == labels).mean())


@pytest.fixture(scope="module")
def lab_cells():
    """Unseen synthetic cells (12 per class) as a darker lab images them, with their labels."""
    images, labels = synthetic_split(12, 28, seed=11)
    return darker(images), labels.ravel()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, lab_cells, trained_checkpoint):
    """The lab's images in folders named by the model's classes (adapt ignores them; evaluate and calibrate read
    them), one broken file and one note among them."""
    names = load_trained(trained_checkpoint).class_names
    folder = write_images(tmp_path_factory.mktemp("lab") / "cells", lab_cells[0], [names[c] for c in lab_cells[1]])
    first = sorted(folder.rglob("*.png"))[0]
    (first.parent / "broken.png").write_bytes(first.read_bytes()[:40])
    (folder / "notes.txt").write_text("stain batch 7\n")
    return folder


@pytest.fixture(scope="module")
def adapted(lab, trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "lab.ckpt"
    assert main([str(trained_checkpoint), str(lab), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("shift", [darker, stained])
def test_adaptation_raises_accuracy_on_a_shifted_lab_and_changes_only_batchnorm_statistics(trained_checkpoint, shift):
    model = load_trained(trained_checkpoint)
    images, labels = synthetic_split(24, 28, seed=5)
    shifted, labels = shift(images), labels.ravel()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    net = load_trained(trained_checkpoint).net
    assert recompute_statistics(net, shifted[::2]) == 3  # adapted on half the images, scored on the others
    as_is, now = accuracy(model.net, shifted[1::2], labels[1::2]), accuracy(net, shifted[1::2], labels[1::2])
    assert as_is <= 0.6 and now >= as_is + 0.35, (as_is, now)  # 25-60 % -> 100 % on this model
    assert accuracy(model.net, images, labels) >= 0.95  # the unshifted cells, for scale
    stats = batchnorm_buffers(net)
    assert stats == {f"features.{i}.0.2.{b}" for i in range(3) for b in ("running_mean", "running_var",
                                                                        "num_batches_tracked")}
    for name, tensor in net.state_dict().items():
        if not name.endswith("num_batches_tracked"):  # a count: it may happen to be the same
            assert (tensor.numpy().tobytes() == before[name].numpy().tobytes()) == (name not in stats), name


def test_the_written_model_differs_from_the_original_only_in_its_statistics_and_records(trained_checkpoint, adapted,
                                                                                      lab, lab_cells):
    old, new = read_checkpoint(trained_checkpoint), read_checkpoint(adapted)  # weights-only, as every reader
    stats = {NET_PREFIX + n for n in batchnorm_buffers(load_trained(trained_checkpoint).net)}
    assert old["state_dict"].keys() == new["state_dict"].keys() and len(stats) == 9
    for name, tensor in old["state_dict"].items():
        same = tensor.dtype == new["state_dict"][name].dtype and \
            tensor.numpy().tobytes() == new["state_dict"][name].numpy().tobytes()
        if not name.endswith("num_batches_tracked"):
            assert same == (name not in stats), name
    assert set(new) - set(old) == {ADAPTED_KEY}
    record = new[ADAPTED_KEY]
    assert record["images"] == len(lab_cells[0]) == 96 and record["data"] == str(lab) and record["skipped"] == 2
    assert record["files_sha256"] == load_unlabelled(lab, 28).digest and len(record["files_sha256"]) == 64
    assert record["gate"]["accepts"] >= 0.5 and record["gate"]["accepts_before"] == 0.0  # the lab, as-is: all refused
    assert not record["forced"] and record["warning"] is None
    assert new[TRUST_KEY]["conformal"] is None and old[TRUST_KEY]["conformal"] is not None
    assert new[TRUST_KEY]["conformal_tta"] is None and old[TRUST_KEY]["conformal_tta"] is not None  # --tta's too
    kept = ("temperature", "abstain_below", "abstain_below_tta", "ood_threshold")
    assert all(new[TRUST_KEY][k] == old[TRUST_KEY][k] for k in kept)
    assert torch.equal(new[TRUST_KEY]["ood_means"], old[TRUST_KEY]["ood_means"])


def test_the_digest_names_the_files_not_their_order_or_listing(tmp_path, lab):
    """The same images listed by a CSV (labels and splits ignored, another order) give the folder's digest; one
    changed image changes it."""
    copy = tmp_path / "lab"
    shutil.copytree(lab, copy)
    folder = load_unlabelled(copy, 28)
    rows = "".join(f"{p},whatever,train\n" for p in reversed(folder.paths))
    (copy / "list.csv").write_text("path,label,split\n" + rows)
    listed = load_unlabelled(copy / "list.csv", 28)
    assert listed.digest == folder.digest == load_unlabelled(lab, 28).digest and len(listed) == len(folder) == 96
    assert np.array_equal(listed.images[::-1], folder.images)
    Image.fromarray(folder.images[0][::-1]).save(copy / folder.paths[0])
    assert load_unlabelled(copy, 28).digest != folder.digest


def test_predict_evaluate_calibrate_demo_and_init_from_accept_it_and_say_it_is_adapted(adapted, lab, tmp_path, capsys):
    from bloodcls.cli.calibrate import main as calibrate
    from bloodcls.cli.evaluate import main as evaluate
    from bloodcls.cli.predict import main as predict
    from bloodcls.inference.app import analyse, load_demo_model
    from bloodcls.training.finetune import read_start
    from tests.helpers import compose_train

    image = next(p for p in sorted(lab.rglob("*.png")) if p.name != "broken.png")
    assert predict([str(adapted), str(image), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    status = report["adapted"]
    assert status["images"] == 96 and status["data"] == str(lab) and not status["recalibrated"]
    assert status["stale"] == ["temperature", "review thresholds", "prediction sets"]
    assert report["results"][0]["prediction_set"] is None and report["set_coverage"] is None  # sets removed
    assert report["trust"]["unavailable"] == [SETS_REMOVED]  # not "fitted before they existed": why they are gone
    assert predict([str(adapted), str(image), "--json", "--tta"]) == 0
    tta = json.loads(capsys.readouterr().out)
    assert tta["results"][0]["prediction_set"] is None and tta["trust"]["unavailable"] == [SETS_REMOVED]
    assert predict([str(adapted), str(image)]) == 0
    err = capsys.readouterr().err
    assert f"note: this model was adapted to 96 unlabelled images of {lab}" in err and "`bloodcls calibrate`" in err
    assert evaluate([str(adapted), str(lab), "--out", str(tmp_path / "ev")]) == 0
    assert "note: this model was adapted to 96 unlabelled images" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["adapted"]["stale"] == status["stale"]
    assert calibrate([str(adapted), str(lab), "--out", str(tmp_path / "cal.ckpt")]) == 0
    again = adaptation_status(load_trained(tmp_path / "cal.ckpt"))
    assert again["recalibrated"] and again["stale"] == [] and "unverified" not in again["note"]
    assert "adapted to 96" in again["note"]  # still the lab's model
    demo = load_demo_model(adapted)
    assert analyse(demo, image)["row"]["class"] == report["results"][0]["class"]
    start = read_start(compose_train([f"init_from={adapted}", "model=unet", "data.img_size=28"]))
    assert torch.equal(start.state["features.0.0.2.running_mean"],
                       load_trained(adapted).net.state_dict()["features.0.0.2.running_mean"])


def test_the_api_adapts_arrays_and_leaves_the_input_model_alone(trained_checkpoint, lab_cells):
    model = load_trained(trained_checkpoint)
    before = model.net.state_dict()["features.0.0.2.running_mean"].clone()
    result = adapt_model(model, lab_cells[0])
    assert torch.equal(model.net.state_dict()["features.0.0.2.running_mean"], before) and model.adapted_on is None
    assert result.model.adapted_on is result.record and result.record["files_sha256"] is None
    assert accuracy(result.model.net, *lab_cells) >= accuracy(model.net, *lab_cells) + 0.35
    with pytest.raises(UserError, match=r"float32 images of shape \(28, 28, 3\); adapting this model needs N x 28 x 28"):
        adapt_model(model, lab_cells[0].astype(np.float32))


def one_paragraph_exit_2(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and err.rstrip("\n").count("\n") == 0, err
    return err


def test_too_few_images_are_refused_saying_how_many(trained_checkpoint, lab_cells, tmp_path, capsys):
    folder = write_images(tmp_path / "few", lab_cells[0][:MIN_IMAGES - 1])
    out = tmp_path / "few.ckpt"
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(folder), "--out", str(out)])
    assert f"holds {MIN_IMAGES - 1} readable images" in err and f"needs at least {MIN_IMAGES}" in err
    assert not out.exists()


def test_an_unreadable_folder_is_refused_naming_the_files(trained_checkpoint, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "b.jpg").write_bytes(b"")
    (folder / "c.tif").write_text("not an image")
    (folder / "notes.txt").write_text("stain batch 7")
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(folder), "--out", str(tmp_path / "x.ckpt")])
    assert "none of its 3 image files could be read (and 1 other files, not images): a.png (" in err
    assert "b.jpg (the file is empty" in err and "notes.txt" not in err  # the count names only image files
    (folder / "notes.txt").unlink()
    for name in ("a.png", "b.jpg", "c.tif"):
        (folder / name).unlink()
    (folder / "notes.txt").write_text("no images here")
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(folder), "--out", str(tmp_path / "x.ckpt")])
    assert "holds no png/jpg/jpeg/tif/tiff/bmp file (1 other files)" in err


@pytest.mark.parametrize("kind", ["natural_crops", "uniform", "noise"])
def test_images_that_are_not_blood_cells_are_refused_unless_forced(trained_checkpoint, tmp_path, capsys, kind):
    """Adapted on photo crops, plain colours or noise themselves, the gate still turns them away: refused, nothing
    written; with --force the model is written and carries the warning, which predict shows."""
    folder = write_images(tmp_path / kind, far_ood_sets(28, n=48, seed=1)[kind])
    out = tmp_path / "odd.ckpt"
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(folder), "--out", str(out)])
    refused = re.search(r"still turns away (\d+) of the 48 images", err)
    assert refused and int(refused.group(1)) > 24 and "--force" in err and not out.exists()
    assert main([str(trained_checkpoint), str(folder), "--out", str(out), "--force"]) == 0
    assert "warning: After adaptation the not-a-cell gate still turns away" in capsys.readouterr().err
    status = adaptation_status(load_trained(out))
    assert status["forced"] and "WARNING: After adaptation the not-a-cell gate" in status["note"]


def test_bad_output_and_a_model_without_gate(trained_checkpoint, lab, lab_cells, tmp_path, capsys):
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(lab), "--out", str(tmp_path / "x.pt")])
    assert "give a .ckpt path" in err
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(lab), "--out", str(trained_checkpoint)])
    assert "write to a new file" in err
    bare = tmp_path / "bare.ckpt"
    contents = read_checkpoint(trained_checkpoint)
    del contents[TRUST_KEY]
    torch.save(contents, bare)
    clean = write_images(tmp_path / "clean", lab_cells[0])
    err = one_paragraph_exit_2(capsys, [str(bare), str(clean), "--out", str(tmp_path / "y.ckpt")])
    assert "has no trust state, so there is no not-a-cell gate" in err


def test_an_adapted_file_that_kept_its_tta_sets_is_read_without_them(trained_checkpoint, adapted, tmp_path):
    """adapt before 2026-12-08 removed the single-view sets only: --tta still showed "90 %" sets fitted on the
    statistics adaptation replaced. Such a file is read without them until `bloodcls calibrate` refits the state."""
    contents = read_checkpoint(adapted)
    contents[TRUST_KEY]["conformal_tta"] = read_checkpoint(trained_checkpoint)[TRUST_KEY]["conformal_tta"]
    torch.save(contents, tmp_path / "old_adapt.ckpt")
    model = load_trained(tmp_path / "old_adapt.ckpt")
    assert model.trust.conformal_tta is None and model.trust.conformal is None
    assert load_trained(trained_checkpoint).trust.conformal_tta is not None  # a model never adapted keeps them


def test_out_a_folder_writes_a_bundle_with_the_run_s_records(trained_checkpoint, adapted, lab, tmp_path, capsys):
    from bloodcls.cli.calibrate import main as calibrate
    from bloodcls.common.checkpoints import read_bundle_config

    folder = tmp_path / "lab_model"
    assert main([str(trained_checkpoint), str(lab), "--out", str(folder)]) == 0
    assert f"written: {folder}" in capsys.readouterr().out
    config = read_bundle_config(folder)
    assert config["adapted_on"]["images"] == 96 and config["records"]["source"] == str(trained_checkpoint.parent.parent)
    bundled, written = load_trained(folder), load_trained(adapted)  # the bundle holds what the .ckpt holds
    for name, tensor in written.net.state_dict().items():
        assert torch.equal(bundled.net.state_dict()[name], tensor), name
    assert bundled.trust.conformal is None and bundled.trust.conformal_tta is None
    assert "adapted" in (folder / "README.md").read_text()  # the card says it is the lab's model
    err = one_paragraph_exit_2(capsys, [str(trained_checkpoint), str(lab), "--out", str(folder)])
    assert "already holds a model bundle" in err and "--force" not in err  # adapt's --force is the gate's
    calibrated = tmp_path / "lab_model_cal"
    assert calibrate([str(folder), str(lab), "--out", str(calibrated)]) == 0
    again = load_trained(calibrated)
    assert adaptation_status(again)["recalibrated"] and again.trust.conformal_tta is not None
    assert read_bundle_config(calibrated)["records"] == config["records"]
    # each bundle names the command that wrote it and what from
    assert config["written"]["by"] == "bloodcls adapt" and config["written"]["from"] == str(trained_checkpoint)
    assert read_bundle_config(calibrated)["written"] | {"date": None, "commit": None} == {
        "by": "bloodcls calibrate", "from": str(folder), "date": None, "commit": None}
