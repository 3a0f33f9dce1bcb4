"""data=folder end to end: a short run on a generated lab folder learns, keeps its split in the run folder and its
class names in the checkpoint; predict, the demo and the shift suite use them; resume= reads the split back."""

import json
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

from bloodcls.training import train
from tests.conftest import FAST, SHARED_DATA
from tests.helpers import REPO, compose_train
from tests.synthetic import FOLDER_CLASSES, synthetic_split, write_synthetic_folder

RUN = ["data=folder", "model=skip", "data.img_size=28", "logger=csv", *FAST]


def _train(lab, out, *extra):
    cfg = compose_train([*RUN, f"data.path={lab}", *extra], output_dir=out)
    return train(cfg, output_dir=out)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(lab folder, run folder, results) of a 4-epoch run on 4 classes x 30 synthetic images."""
    base = tmp_path_factory.mktemp("folder_run")
    lab = write_synthetic_folder(base / "lab", n_per_class=30)
    out = base / "run"
    return lab, out, _train(lab, out, "trainer.max_epochs=4")


@pytest.mark.slow
def test_a_folder_run_learns_and_records_its_data(folder_run):
    lab, out, results = folder_run
    assert results["test"]["acc"] > 0.8  # chance is 0.25
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["class_names"] == sorted(FOLDER_CLASSES) and data["path"] == str(lab)
    assert data["split_sizes"] == {"train": 84, "val": 12, "test": 24} and data["split_drawn"] is True
    assert data["skipped"] == [{"path": "neutro/broken.png",
                                "why": "corrupt or truncated image data (image file is truncated)"}]
    rows = (out / "split.csv").read_text().splitlines()
    assert rows[0] == "path,label,split" and len(rows) == 1 + 120
    assert len(results["test"]["confusion_matrix"]) == 4
    assert any(k == "test/f1/mono" for k in results["test"]["scores"])


@pytest.mark.slow
def test_predict_and_the_demo_name_the_users_classes(folder_run, tmp_path):
    from bloodcls.inference.app import DemoModel, disclaimer, example_images
    from bloodcls.inference.checkpoint import load_trained
    from bloodcls.inference.classify import classify

    lab, out, results = folder_run
    model = load_trained(out / "checkpoints" / "best.ckpt")
    assert model.class_names == sorted(FOLDER_CLASSES)
    report = classify(model, [lab / "mono"])
    assert {r["class"] for r in report["results"]} <= set(FOLDER_CLASSES)
    assert sum(r["class"] == "mono" for r in report["results"]) > 20  # 30 mono images, most of them right
    examples = example_images(model, None, tmp_path)  # from the run's own test split
    assert sorted(p.name.rsplit("_", 1)[1] for p in examples) == sorted(f"{c}.png" for c in FOLDER_CLASSES)
    from bloodcls.common.records import ResultsRecord

    page = DemoModel(trained=model, results=ResultsRecord.from_dict(results))
    assert str(lab) in disclaimer(page) and "BloodMNIST" not in disclaimer(page)


@pytest.mark.slow
def test_the_shift_suite_scores_the_runs_own_test_split(folder_run):
    from bloodcls.inference.finished_run import FinishedRun

    lab, out, results = folder_run
    run = FinishedRun.open(out)
    images, labels = run.load_split("test", 28)
    assert run.data_file(28) == out / "split.csv"  # the shift suite's cache key: the run's own split
    assert labels.tolist() == results["test"]["labels"] and images.shape == (24, 28, 28, 3)


@pytest.mark.slow
def test_a_sweep_report_shows_the_users_classes(folder_run, tmp_path):
    from bloodcls.analysis.figures import write_figures
    from bloodcls.analysis.report import build_report
    from bloodcls.analysis.report_markdown import markdown

    lab, out, results = folder_run
    shutil.copytree(out, tmp_path / "runs" / "0_skip_28_s0")  # a sweep folder of one job
    rep = build_report(tmp_path)
    assert rep.class_names == sorted(FOLDER_CLASSES)
    assert set(rep.tables["per_class_f1"][0]) == {"experiment", "seeds", *FOLDER_CLASSES}
    figures = write_figures(rep, tmp_path / "figures")  # the 4 x 4 confusion matrix and the sample grid too
    assert {"confusion matrix of the best run", "sample predictions"} <= set(figures)
    text = markdown(rep, figures)
    assert "| experiment | blast | lymph | mono | neutro |" in text and "study's best" not in text


@pytest.mark.slow
def test_resume_reads_the_split_back(tmp_path, request):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a background job inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lab, out = write_synthetic_folder(tmp_path / "lab", n_per_class=12), tmp_path / "run"
    with pytest.raises(SystemExit):
        _train(lab, out, "trainer.max_epochs=2", "+callbacks.stop._target_=tests.plants.SendSignal",
               "+callbacks.stop.epoch=1", f"+callbacks.stop.marker={tmp_path / 'fired'}")
    split = (out / "split.csv").read_text()
    for i in range(6):  # new images after the interruption: a redrawn split would take them in
        Image.fromarray(synthetic_split(1, 28, seed=50 + i)[0][0]).save(lab / "blast" / f"new_{i}.png")
    resumed = _train(lab, out, "trainer.max_epochs=2", f"resume={out}", "data.split_seed=9")
    assert (out / "split.csv").read_text() == split
    assert resumed["data"]["split_drawn"] is False
    assert resumed["data"]["split_sizes"] == {"train": 36, "val": 4, "test": 8}
    assert resumed["status"] == "completed"


@pytest.mark.real
@pytest.mark.skipif(not (SHARED_DATA / "pbc200.part1.tar").is_file(), reason="../shared/data is absent")
def test_the_lab_folder_script_writes_class_folders_and_a_shifted_second_lab(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(REPO / "scripts" / "make_lab_folder.py"), "--out", str(tmp_path),
                    "--per-class", "6", "--second-lab-per-class", "3"], check=True, capture_output=True, timeout=600)
    pbc, second = tmp_path / "pbc", tmp_path / "second_lab"
    classes = sorted(p.name for p in pbc.iterdir())
    assert len(classes) == 8 and classes == sorted(p.name for p in second.iterdir())
    assert all(len(list((pbc / c).glob("*.jpg"))) == 6 for c in classes)
    assert all(len(list((second / c).glob("*.png"))) == 3 for c in classes)
    assert not {p.stem for p in pbc.rglob("*.jpg")} & {p.stem for p in second.rglob("*.png")}  # held out
    crop = np.asarray(Image.open(next((pbc / classes[0]).glob("*.jpg"))))
    assert crop.shape == (200, 200, 3)
    shutil.rmtree(tmp_path)
