"""`bloodcls bundle`: a folder that is the model. It round-trips (the same judgement as the checkpoint, image by
image), loads without unpickling anything, its config.json is plain JSON a reader without bloodcls understands,
its model card is generated from the run's records, every command that takes a model takes it, and resume= /
ckpt_path= refuse it in one paragraph."""

import json
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from bloodcls.cli.bundle import main
from bloodcls.common.bundle import CARD_FILE, CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE
from bloodcls.common.checkpoints import CheckpointError
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.classifier import Classifier
from bloodcls.uncertainty.far_ood import far_ood_sets
from tests.synthetic import synthetic_split


@pytest.fixture(scope="module")
def bundle(reference_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles") / "unet"
    assert main([str(reference_run[0]), str(folder), "--onnx"]) == 0
    return folder


@pytest.fixture(scope="module")
def probe():
    """Cells the model knows and images that are not cells (the gate refuses them): every kind of decision."""
    cells, _ = synthetic_split(4, 28, seed=21)
    far = far_ood_sets(28, n=6)
    return np.concatenate([cells, far["noise"], far["uniform"]])


def decisions(rows):
    return [(r["class"], r["abstain"], r["in_distribution"], r.get("prediction_set")) for r in rows]


def test_a_bundle_judges_every_image_as_the_checkpoint_does(bundle, trained_checkpoint, probe):
    assert {p.name for p in bundle.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, ONNX_FILE}
    ckpt, again = Classifier.load(trained_checkpoint), Classifier.load(bundle)
    for tta in (False, True):
        want, got = ckpt.predict(probe, tta=tta), again.predict(probe, tta=tta)
        assert got == want  # every field: probabilities, review flag, gate decision and score, prediction set
        kinds = decisions(got)
        assert {k[2] for k in kinds} == {True, False}  # the gate accepts the cells and refuses the rest
        assert all((k[3] is None) == (k[2] is False) for k in kinds)  # no set for a refused image
    assert again.model.trust.to_dict().keys() == ckpt.model.trust.to_dict().keys()
    assert again.model.trust.conformal == ckpt.model.trust.conformal


def test_the_bundle_weights_are_the_safetensors_export(bundle, trained_checkpoint, tmp_path):
    """One portable format: the export writes what the bundle's model.safetensors holds, tensor for tensor and entry
    for entry (the file's header order is the library's own)."""
    from safetensors import safe_open

    from bloodcls.cli.export import main as export

    out = tmp_path / "best.safetensors"
    assert export([str(trained_checkpoint), "--format", "safetensors", "--output", str(out)]) == 0
    with safe_open(str(out), "pt") as a, safe_open(str(bundle / WEIGHTS_FILE), "pt") as b:
        assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
        assert {"trust.ood_means", "trust.ood_precision"} <= set(a.keys())


def test_loading_a_bundle_never_unpickles(bundle, probe, monkeypatch, capsys):
    want = Classifier.load(bundle).predict(probe[:4])

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert Classifier.load(bundle).predict(probe[:4]) == want
    from bloodcls.cli.predict import main as predict

    image = bundle.parent / "cell.png"
    from PIL import Image

    Image.fromarray(probe[0]).save(image)
    assert predict([str(bundle), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["class"] == want[0]["class"]


def test_config_json_is_read_without_bloodcls(bundle, trained_checkpoint):
    """Plain JSON and the safetensors library: a reader in another program finds what the model is and takes."""
    code = f"""
import json, sys
from safetensors import safe_open
c = json.load(open({str(bundle / CONFIG_FILE)!r}))
with safe_open({str(bundle / WEIGHTS_FILE)!r}, framework="numpy") as f:
    means = f.get_tensor(c["trust"]["ood_means"]["tensor"])
print(json.dumps({{"keys": sorted(c), "arch": c["architecture"]["name"], "names": c["class_names"],
                  "input": c["input"], "temperature": c["trust"]["temperature"], "sets": c["trust"]["conformal"],
                  "means": list(means.shape), "said": c["trust"]["ood_means"]["shape"], "by": c["written"]["by"],
                  "bloodcls": any(m.startswith("bloodcls") for m in sys.modules)}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                                    check=True, cwd=bundle).stdout)
    model = load_trained(trained_checkpoint)
    assert not out["bloodcls"]
    assert {"library_name", "bundle_format", "architecture", "class_names", "input", "output", "trust", "adapted_on",
            "records", "written"} <= set(out["keys"])
    assert out["arch"] == "unet" and out["names"] == model.class_names and out["by"] == "bloodcls bundle"
    assert out["input"]["size"] == 28 and "bicubic" in out["input"]["interpolation"]
    assert out["input"]["crop"].startswith("centre square") and "divided by 255" in out["input"]["scale"]
    assert out["input"]["color"].startswith("RGB") and out["input"]["mean"] == [0, 0, 0] and out["input"]["std"] == [1] * 3
    assert out["temperature"] == model.trust.temperature
    assert out["sets"]["threshold"] == model.trust.conformal.threshold and out["sets"]["coverage"] == 0.9
    assert out["means"] == out["said"] == list(model.trust.ood_means.shape)


def test_the_model_card_is_generated_from_the_runs_records(bundle, reference_run):
    results = json.loads((reference_run[0] / "results.json").read_text())
    card = ModelCard.load(bundle / CARD_FILE)
    text = card.text
    acc, env = results["test"]["acc"], results["environment"]
    assert card.data.library_name == "bloodcls" and card.data.pipeline_tag == "image-classification"
    assert card.data.eval_results[0].metric_type == "accuracy" and card.data.eval_results[0].metric_value == acc
    assert f"Test accuracy **{100 * acc:.2f} %**" in text and f"macro F1 {100 * results['test']['f1']:.2f} %" in text
    assert f"on the {results['data']['split_sizes']['test']} test images" in text
    assert env["device"] in text and f"commit `{env['commit']}`" in text and env["date"][:10] in text
    for name in results["data"]["class_names"]:
        f1 = results["test"]["scores"][f"test/f1/{name}"]
        assert f"| {name} | " in text and f"{100 * f1:.1f} % |" in text
    trust = results["trust"]
    assert f"{100 * trust['calibration']['before']['ece']:.2f} %" in text
    assert f"{100 * trust['gate']['fires_on_test']:.1f} % of the clean test cells" in text
    assert "Not a diagnostic device" in text and "docs/results/own-images.md" in text
    assert f"recipe `{results['recipe']}`, seed {results['seed']}" in text and "Not measured for this run" in text
    assert "Adapted to one lab" not in text


def test_the_card_follows_the_records_and_reports_the_shift_suite_where_measured(reference_run, tmp_path):
    """A copy of the run whose records say other things: the card says what they say."""
    from bloodcls.common.rundir import RunPaths, write_json

    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run)
    results = json.loads((run / "results.json").read_text())
    results["test"]["acc"], results["environment"]["commit"] = 0.87654, "0123abcd4567"
    results["test"]["scores"]["test/recall/platelet"] = 0.4321
    write_json(run / "results.json", results)
    record = {"clean_acc": 0.9, "mean_acc": 0.7, "drop_acc": 0.2, "worst_acc": 0.31, "worst": "hue@5",
              "severities": [1, 2], "per_severity": {"acc": [0.8, 0.6]}, "n_images": 80}
    RunPaths(run).robustness.record.parent.mkdir(parents=True, exist_ok=True)
    write_json(RunPaths(run).robustness.record, record)
    text = Classifier.load(run).generate_model_card().text
    assert "Test accuracy **87.65 %**" in text and "commit `0123abcd4567`" in text
    assert re.search(r"\| platelet \| [0-9.]+ % \| 43\.2 % \|", text)
    assert "clean 90.00 %, mean over every shift and severity 70.00 %, worst 31.00 % (`hue@5`)" in text
    assert "| 2 | 60.0 % |" in text


def test_an_adapted_bundle_says_it_is_for_its_lab_and_keeps_its_record(trained_checkpoint, tmp_path):
    cells, _ = synthetic_split(6, 28, seed=9)
    adapted = Classifier.load(trained_checkpoint).adapt(cells)
    folder = adapted.save(tmp_path / "lab")
    again = Classifier.load(folder)
    assert again.adapted_on == json.loads((folder / CONFIG_FILE).read_text())["adapted_on"] == adapted.adapted_on
    assert again.adapted_on["images"] == 48 and again.model.trust.conformal is None  # sets removed by adapt
    text = (folder / CARD_FILE).read_text()
    assert "**Adapted to one lab.**" in text and "48 unlabelled images of `the images given`" in text
    assert "it can refuse BloodMNIST's own clean cells" in text and "These are the scores of the model before it was adapted" in text
    assert again.predict(cells[:5]) == adapted.predict(cells[:5])


def test_every_command_that_takes_a_model_takes_the_bundle(bundle, trained_checkpoint, tmp_path, capsys):
    from bloodcls.cli.adapt import main as adapt
    from bloodcls.cli.calibrate import main as calibrate
    from bloodcls.cli.evaluate import main as evaluate
    from bloodcls.cli.export import main as export
    from bloodcls.inference.app import load_demo_model, model_facts
    from bloodcls.runs.init_from import init_from_argv
    from bloodcls.training.finetune import read_start
    from tests.helpers import compose_train
    from tests.test_adapt import write_images

    names = load_trained(trained_checkpoint).class_names
    cells, labels = synthetic_split(6, 28, seed=3)
    lab = write_images(tmp_path / "lab", cells, [names[c] for c in labels.ravel()])
    assert evaluate([str(bundle), str(lab), "--out", str(tmp_path / "ev"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert evaluate([str(trained_checkpoint), str(lab), "--out", str(tmp_path / "ev2"), "--json"]) == 0
    assert scored["accuracy"] == json.loads(capsys.readouterr().out)["accuracy"]
    assert calibrate([str(bundle), str(lab), "--out", str(tmp_path / "cal.ckpt")]) == 0
    assert load_trained(tmp_path / "cal.ckpt").trust.calibrated_on["checkpoint"] == str(bundle)
    assert adapt([str(bundle), str(lab), "--out", str(tmp_path / "lab.ckpt")]) == 0
    assert load_trained(tmp_path / "lab.ckpt").adapted_on["checkpoint"] == str(bundle)
    assert export([str(bundle), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 0
    demo = load_demo_model(bundle)  # the run's scores travel in the bundle
    acc = json.loads((trained_checkpoint.parent.parent / "results.json").read_text())["test"]["acc"]
    assert f"{100 * acc:.2f} %" in model_facts(demo)
    argv = init_from_argv(["train.py", f"init_from={bundle}"])
    assert argv[1:3] == ["model=unet", "data.img_size=28"]
    start = read_start(compose_train([f"init_from={bundle}", "model=unet", "data.img_size=28"]))
    assert all(torch.equal(v, load_trained(trained_checkpoint).net.state_dict()[k]) for k, v in start.state.items())
    capsys.readouterr()
    # a re-calibrated copy of the bundle finds the run's records through it: its own bundle has the card's scores
    assert main([str(tmp_path / "cal.ckpt"), str(tmp_path / "cal_bundle")]) == 0
    assert f"Test accuracy **{100 * acc:.2f} %**" in (tmp_path / "cal_bundle" / CARD_FILE).read_text()
    assert "Re-calibrated with `bloodcls calibrate`" in (tmp_path / "cal_bundle" / CARD_FILE).read_text()


def test_resume_and_ckpt_path_say_a_bundle_is_not_a_training_checkpoint(bundle, tmp_path):
    """resume= through train.py as a user types it (one paragraph, exit 2); ckpt_path= reads the same check
    in-process (one train.py start is enough to show the paragraph reaches the terminal)."""
    from bloodcls.errors import UserError
    from bloodcls.runs.resume import check_ckpt_path
    from tests.helpers import run_cli

    proc = run_cli("train.py", f"resume={bundle}", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv")
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.count("\n") == 0 and "is a model bundle" in err and f"resume={bundle}" in err, err
    assert "checkpoints/last.ckpt to train on" in err and f"init_from={bundle}" in err
    for training in (True, False):
        with pytest.raises(UserError) as refused:
            check_ckpt_path(str(bundle), training=training)
        assert "is a model bundle" in str(refused.value) and f"ckpt_path={bundle}" in str(refused.value)
        assert f"init_from={bundle}" in str(refused.value)


def test_a_hand_edited_or_foreign_bundle_is_refused(bundle, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    config = json.loads((edited / CONFIG_FILE).read_text())
    config["trust"]["temperature"] *= 2
    (edited / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json and model.safetensors disagree about trust, so the bundle"):
        load_trained(edited)
    (edited / CONFIG_FILE).write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(CheckpointError, match="is not a bloodcls model bundle"):
        Classifier.load(edited)
    (edited / CONFIG_FILE).write_text("{")
    with pytest.raises(CheckpointError, match="is not readable JSON"):
        Classifier.load(edited)
    (edited / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="is a folder but not a model bundle"):
        load_trained(edited)


def test_a_bundle_is_written_whole_and_never_over_other_files(reference_run, bundle, tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    for force in ([], ["--force"]):
        with pytest.raises(SystemExit) as exit_:
            main([str(reference_run[0]), str(other), *force])
        assert exit_.value.code == 2 and "is not a model bundle, so it is never written over" in capsys.readouterr().err
    assert (other / "thesis.tex").read_text() == "keep me"
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with pytest.raises(SystemExit):
        main([str(reference_run[0]), str(copy)])
    assert "pass --force to replace it" in capsys.readouterr().err
    (copy / "stale.txt").write_text("from before")
    assert main([str(reference_run[0]), str(copy), "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == sorted([CARD_FILE, CONFIG_FILE, WEIGHTS_FILE])
    assert not (copy / "stale.txt").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_model_without_records_gets_a_card_that_says_so(trained_checkpoint, tmp_path, capsys):
    alone = tmp_path / "best.ckpt"
    shutil.copy(trained_checkpoint, alone)  # outside its run folder: no results.json beside it
    assert main([str(alone), str(tmp_path / "b")]) == 0
    assert "no run records were found" in capsys.readouterr().out
    text = (tmp_path / "b" / CARD_FILE).read_text()
    assert "Unknown: no test scores were recorded" in text and "Not a diagnostic device" in text
    with pytest.raises(UserError, match="--private applies to the repository --push creates"):
        main.__wrapped__([str(alone), str(tmp_path / "c"), "--private"])


@pytest.mark.slow
def test_a_fine_tune_starts_from_a_bundle(bundle, tmp_path):
    """init_from=<bundle>: the bundle's network and input size go on the command line, its weights start the run."""
    from bloodcls.runs.init_from import init_from_argv
    from bloodcls.training import train
    from tests.conftest import FAST
    from tests.helpers import compose_train
    from tests.synthetic import write_synthetic_folder

    lab = write_synthetic_folder(tmp_path / "lab", n_per_class=8, classes=("basophil", "eosinophil", "platelet"))
    argv = init_from_argv(["train.py", "data=folder", f"data.path={lab}", f"init_from={bundle}", "logger=csv",
                           "trainer.max_epochs=1", *FAST])
    results = train(compose_train(argv[1:], output_dir=tmp_path / "run"), output_dir=tmp_path / "run")
    start = results["init_from"]
    assert start["checkpoint"] == str(bundle) and start["model"] == "unet" and start["new_classes"] == []
    assert start["matched"] == {"basophil": "basophil", "eosinophil": "eosinophil", "platelet": "platelet"}
