"""Fine-tuning (init_from=): matched classes keep their output rows (in whatever order and script the run names
them), new ones start fresh, model.freeze=backbone trains the head only, bad files are one paragraph, results.json
shows the starting scores beside the new, and a resumed fine-tune no longer needs the init_from file."""

import json
import shutil

import pytest
import torch

from bloodcls.common.checkpoints import CheckpointError, UnsafeCheckpointError
from bloodcls.config import instantiate
from bloodcls.data import CLASS_NAMES
from bloodcls.runs.init_from import init_from_argv
from bloodcls.training import finetune, train
from bloodcls.training.module import BloodCellClassifier
from tests.conftest import FAST
from tests.helpers import compose_train, run_cli
from tests.synthetic import write_synthetic_folder

# The folder's classes 0..2 are BloodMNIST's basophil, eosinophil, erythroblast (spelt otherwise); 3 is new.
LAB = ("Basophils", "eosinophil", "ERYTHROBLAST", "blast")
RUN = ["data=folder", "logger=csv", "trainer.max_epochs=2", *FAST]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("ft") / "lab", n_per_class=20, classes=LAB)


@pytest.fixture(scope="module")
def baseline_ckpt(tmp_path_factory):
    """A hand-made (untrained) baseline checkpoint at 28 px with BloodMNIST's 8 classes."""
    torch.manual_seed(1)
    module = BloodCellClassifier(name="baseline", img_size=28, class_names=list(CLASS_NAMES))
    path = tmp_path_factory.mktemp("ckpt") / "baseline.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def _cfg(lab, ckpt, out=None, *extra):
    return compose_train([*RUN, f"data.path={lab}", f"init_from={ckpt}", "model=baseline", "data.img_size=28",
                          *extra], output_dir=out)


def test_matched_rows_are_kept_and_new_ones_fresh(lab, baseline_ckpt):
    cfg = _cfg(lab, baseline_ckpt)
    start = finetune.read_start(cfg)
    model = instantiate(cfg.model, num_classes=4, class_names=list(LAB))
    fresh = {k: v.clone() for k, v in model.net.state_dict().items()}
    match = finetune.match_start(start, list(LAB), None)
    assert match.index == {"Basophils": 0, "eosinophil": 1, "ERYTHROBLAST": 2} and match.unknown == ["blast"]
    finetune.transfer(model.net, start)
    head, _ = finetune.feature_layer(model.net)
    for key, value in model.net.state_dict().items():
        old = start.state[key]
        if key.startswith(head + "."):
            assert torch.equal(value[:3], old[:3])  # matched rows copied exactly
            assert torch.equal(value[3], fresh[key][3]) and not torch.equal(value[3], old[3])  # new row kept fresh
        else:
            assert torch.equal(value, old)
    assert start.record()["matched"] == {"Basophils": "basophil", "eosinophil": "eosinophil",
                                         "ERYTHROBLAST": "erythroblast"}


def test_rows_follow_the_classes_in_another_order_and_script(lab, baseline_ckpt, tmp_path):
    """The run's classes in an order unlike the checkpoint's (and named in Chinese and French): each matched row is
    the checkpoint's row of that class, wherever the run puts it."""
    run_classes = ["血小板", "blast", "Lymphocytes", "Érythroblastes", "嗜碱性粒细胞", "Monocytes"]
    expected = {0: 7, 2: 4, 3: 2, 4: 0, 5: 5}  # run row -> checkpoint row (platelet, lymphocyte, erythroblast, ...)
    (tmp_path / "map.yaml").write_text("血小板: platelet\nérythroblaste: erythroblast\n嗜碱性粒细胞: basophil\n",
                                       encoding="utf-8")
    cfg = _cfg(lab, baseline_ckpt)
    start = finetune.read_start(cfg)
    model = instantiate(cfg.model, num_classes=len(run_classes), class_names=run_classes)
    fresh = {k: v.clone() for k, v in model.net.state_dict().items()}
    match = finetune.match_start(start, run_classes, str(tmp_path / "map.yaml"))
    assert {run_classes.index(f): i for f, i in match.index.items()} == expected and match.unknown == ["blast"]
    finetune.transfer(model.net, start)
    head, _ = finetune.feature_layer(model.net)
    for suffix in ("weight", "bias"):
        new, old = model.net.state_dict()[f"{head}.{suffix}"], start.state[f"{head}.{suffix}"]
        for row, ckpt_row in expected.items():
            assert torch.equal(new[row], old[ckpt_row]), (suffix, run_classes[row])
        assert torch.equal(new[1], fresh[f"{head}.{suffix}"][1])  # blast: the fresh row
    assert start.record()["matched"] == {"血小板": "platelet", "Lymphocytes": "lymphocyte",
                                         "Érythroblastes": "erythroblast", "嗜碱性粒细胞": "basophil",
                                         "Monocytes": "monocyte"}


def test_a_class_map_matches_the_rest(lab, baseline_ckpt, tmp_path):
    (tmp_path / "map.yaml").write_text("blast: immature_granulocytes\n")
    start = finetune.read_start(_cfg(lab, baseline_ckpt))
    match = finetune.match_start(start, list(LAB), str(tmp_path / "map.yaml"))
    assert match.index["blast"] == 3 and match.unknown == []


def test_another_network_is_refused(lab, baseline_ckpt):
    cfg = compose_train([*RUN, f"data.path={lab}", f"init_from={baseline_ckpt}", "model=skip", "data.img_size=28"])
    with pytest.raises(finetune.FineTuneError, match="holds a baseline at 28 px network, but this run builds skip"):
        finetune.read_start(cfg)


def test_the_checkpoints_model_goes_on_the_command_line(baseline_ckpt):
    assert init_from_argv(["train.py", f"init_from={baseline_ckpt}"])[1:3] == ["model=baseline", "data.img_size=28"]
    kept = ["train.py", "experiment=skip", f"init_from={baseline_ckpt}"]
    assert init_from_argv(kept) == kept  # the user's choice stays; read_start refuses a mismatch


@pytest.mark.parametrize("case", ["empty", "crafted"])
def test_a_broken_or_crafted_file_is_one_paragraph(case, lab, tmp_path):
    marker, path = tmp_path / "code_ran", tmp_path / f"{case}.ckpt"
    if case == "empty":
        path.write_bytes(b"")
    else:
        from tests.test_checkpoint import MakesAFile
        torch.save({"state_dict": {}, "hyper_parameters": MakesAFile(marker)}, path)
    error, said = {"empty": (CheckpointError, "is empty"), "crafted": (UnsafeCheckpointError, "Refusing to load")}[case]
    with pytest.raises(error, match=said):
        finetune.read_start(_cfg(lab, path))
    proc = run_cli("train.py", *RUN, f"data.path={lab}", f"init_from={path}", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count(said) == 1 and not marker.exists()


def test_freeze_backbone_trains_the_head_only(lab, baseline_ckpt, tmp_path):
    out = tmp_path / "run"
    results = train(_cfg(lab, baseline_ckpt, out, "model.freeze=backbone", "trainer.max_epochs=1"), output_dir=out)
    start = finetune.read_start(_cfg(lab, baseline_ckpt))
    tuned = torch.load(results["checkpoints"]["best"], weights_only=True)["state_dict"]
    head, _ = finetune.feature_layer(BloodCellClassifier(name="baseline", img_size=28, num_classes=4).net)
    for key, old in start.state.items():
        if key.startswith(head + "."):
            assert not torch.equal(tuned["net." + key][:3], old[:3])  # the head learnt
        else:
            assert torch.equal(tuned["net." + key], old), key  # weights and BatchNorm statistics unchanged


@pytest.mark.slow
def test_a_fine_tune_reports_the_starting_scores(lab, trained_checkpoint, tmp_path):
    """From the 8-class synthetic U-Net: three classes known, one new; the starting network cannot name blast."""
    out = tmp_path / "run"
    cfg = compose_train([*RUN, f"data.path={lab}", f"init_from={trained_checkpoint}", "model=unet",
                         "data.img_size=28", "trainer.max_epochs=3"], output_dir=out)
    results = train(cfg, output_dir=out)
    saved = json.loads((out / "results.json").read_text())["init_from"]
    assert saved["new_classes"] == ["blast"] and saved["matched"]["Basophils"] == "basophil"
    before = saved["test"]
    assert before["images_of_new_classes"] == 4  # a quarter of the 16 test images, all counted as errors
    assert before["acc"] <= 0.75 and before["acc_known_classes"] > 0.5  # it knows the three it was trained on
    assert results["test"]["acc"] > before["acc"]  # fine-tuning learnt the new class
    assert results["summary"]["init_from/test_acc"] == before["acc"]


def test_a_resumed_fine_tune_does_not_read_the_init_from_file_again(lab, baseline_ckpt, tmp_path):
    """The run stops after epoch 0, its init_from file moves away, and resume= still continues it from last.ckpt,
    with the starting scores and class matching the run recorded when it began."""
    start_file, out = tmp_path / "start.ckpt", tmp_path / "run"
    shutil.copy(baseline_ckpt, start_file)
    crash = ["+callbacks.crash._target_=tests.plants.Crash", "+callbacks.crash.epoch=1",
             f"+callbacks.crash.marker={tmp_path / 'fired'}"]
    with pytest.raises(RuntimeError, match="planted crash"):
        train(_cfg(lab, start_file, out, *crash), output_dir=out)
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    kept = next(v for k, v in last["callbacks"].items() if "StartRecord" in k)
    assert last["epoch"] == 0 and kept["matched"]["Basophils"] == "basophil" and kept["test"]["images"] == 16
    start_file.rename(tmp_path / "moved.ckpt")

    argv = ["train.py", f"resume={out}", f"init_from={start_file}", "model=baseline", "data.img_size=28"]
    assert init_from_argv(argv) == argv  # train.py reads nothing: the run's overrides already name its network
    results = train(_cfg(lab, start_file, out, *crash, f"resume={out}"), output_dir=out)
    assert [r["epoch"] for r in results["history"]] == [0, 1] and results["status"] == "completed"
    assert results["init_from"] == kept and results["init_from"]["new_classes"] == ["blast"]
    assert results["summary"]["init_from/test_acc"] == kept["test"]["acc"]
