"""sweep.py folds=K: k-fold cross-validation of a lab folder as one sweep (one run per fold, resumable, reported
as mean ± std over the folds), and the settings it refuses."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from bloodcls.errors import UserError
from bloodcls.sweeps.jobs import DONE, START, inventory
from bloodcls.sweeps.launch import main as sweep_main
from tests.conftest import FAST
from tests.helpers import no_data, run_cli
from tests.synthetic import write_synthetic_folder

TINY = ["experiments=[baseline_64]", "seeds=[0]", "trainer.max_epochs=2", "data.img_size=28", "logger=csv",
        "wandb_report=false", *FAST]


def _split(run: Path) -> dict[str, set[str]]:
    """A run's split.csv as {split: paths}."""
    with open(run / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {part: {r["path"] for r in rows if r["split"] == part} for part in ("train", "val", "test")}


@pytest.mark.slow
def test_a_folds_sweep_runs_each_fold_once_reports_them_and_resumes(tmp_path):
    lab = write_synthetic_folder(tmp_path / "lab", n_per_class=15)
    proc = run_cli("sweep.py", *TINY, "folds=3", "data=folder", f"data.path={lab}", f"paths.log_dir={tmp_path}",
                   "name=cv")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = tmp_path / "sweeps" / "cv"
    runs = sorted(p for p in (sweep / "runs").iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0_baseline_64_f0_s0", "1_baseline_64_f1_s0", "2_baseline_64_f2_s0"]
    splits = [_split(run) for run in runs]
    vals = [s["val"] for s in splits]
    assert all(vals) and not (vals[0] & vals[1] or vals[0] & vals[2] or vals[1] & vals[2])  # disjoint folds
    assert all(s["test"] == splits[0]["test"] for s in splits)  # one fixed test hold-out
    assert all(s["train"] == (vals[(i + 1) % 3] | vals[(i + 2) % 3]) for i, s in enumerate(splits))
    assert [json.loads((r / "results.json").read_text())["data"]["fold"] for r in runs] == [0, 1, 2]

    report = json.loads((sweep / "report.json").read_text())
    assert report["plan"]["folds"] == 3 and not report["missing"]
    (perf,) = report["tables"]["performance"]
    accs = [100 * r["test_acc"] for r in report["runs"]]
    assert perf["seeds"] == 3 and perf["acc_mean"] == pytest.approx(statistics.mean(accs))
    assert perf["acc_std"] == pytest.approx(statistics.stdev(accs))
    text = (sweep / "report.md").read_text()
    assert "× 3 folds" in text and "mean ± std over folds (sample std)" in text
    assert "| experiment | folds | params (M)" in text

    # resume: the three folds are known as done; a lost fold starts again with its own validation part
    with pytest.raises(UserError, match="folds cannot be changed now"):
        sweep_main([f"resume={sweep}", "folds=4"])
    lost = runs[1]
    for f in sorted(lost.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    lost.rmdir()
    proc = run_cli("sweep.py", f"resume={sweep}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 completed (kept), 0 to continue from their last checkpoint, 1 to start" in proc.stdout
    assert "(baseline_64 seed 0 fold 1) starting" in proc.stdout
    assert _split(sweep / "runs" / "3_baseline_64_f1_s0")["val"] == vals[1]
    report = json.loads((sweep / "report.json").read_text())
    assert report["tables"]["performance"][0]["seeds"] == 3 and not report["missing"]


def test_folds_on_bloodmnist_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"folds=3 cross-validates your own images \(data=folder"):
        sweep_main(["folds=3", "experiments=[baseline_64]", "seeds=[0]", f"paths.log_dir={tmp_path}",
                    *no_data(tmp_path)])
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("folds", ["1", "0", "two"])
def test_fewer_than_two_folds_are_refused(tmp_path, folds):
    with pytest.raises(UserError, match=r"needs a whole number of folds >= 2"):
        sweep_main([f"folds={folds}", "experiments=[baseline_64]", "seeds=[0]", "data=folder",
                    f"data.path={tmp_path}", f"paths.log_dir={tmp_path}"])
    assert not (tmp_path / "sweeps").exists()


def test_folds_and_a_fold_override_together_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"drop data.fold=1 from the command"):
        sweep_main(["folds=3", "data.fold=1", "experiments=[baseline_64]", "seeds=[0]", "data=folder",
                    f"data.path={tmp_path}", f"paths.log_dir={tmp_path}"])


def _job_folder(runs: Path, name: str, overrides: list[str], done: bool) -> None:
    (runs / name / ".hydra").mkdir(parents=True)
    (runs / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if done:
        (runs / name / "results.json").write_text("{}")


def test_the_fold_is_part_of_a_jobs_identity(tmp_path):
    runs = tmp_path / "runs"
    _job_folder(runs, "0_skip_f1_s0", ["experiment=skip", "seed=0", "data.folds=2", "data.fold=1"], done=True)
    jobs = inventory(tmp_path, {"experiments": ["skip"], "seeds": [0], "folds": 2})
    assert [(j.key, j.state, j.folder) for j in jobs] == [(("skip", 0, 0), START, None),
                                                        (("skip", 0, 1), DONE, runs / "0_skip_f1_s0")]
    # without folds= a data.fold= training override is no fold of the sweep: the job is still found
    (job,) = inventory(tmp_path, {"experiments": ["skip"], "seeds": [0]})
    assert job.key == ("skip", 0, None) and job.state == DONE


def _fold_run(folder: Path, exp: str, fold: int, preds: list[int], labels: list[int]) -> None:
    """A hand-made completed run of fold ``fold`` (results.json only, as FinishedRun reads it)."""
    folder.mkdir(parents=True)
    acc = sum(p == y for p, y in zip(preds, labels, strict=True)) / len(labels)
    cm = [[sum(p == j and y == i for p, y in zip(preds, labels, strict=True)) for j in range(4)] for i in range(4)]
    (folder / "results.json").write_text(json.dumps({
        "status": "completed", "experiment": exp, "seed": 0,
        "config": {"seed": 0, "data": {"folds": 2, "fold": fold}},
        "test": {"acc": acc, "predictions": preds, "labels": labels, "scores": {}, "confusion_matrix": cm},
        "efficiency": {"params_trainable": 36828, "memory_mib": 0.14, "macs": 61.2e6, "epochs_run": 1,
                       "train_time_s": 10.0, "test_time_s": 1.0},
        "history": [{"epoch": 0, "train/loss": 1.0, "val/loss": 1.2, "train/acc": 0.5, "val/acc": 0.4}],
        "data": {"class_names": ["a", "b", "c", "d"]}, "environment": {}}))


def test_a_folds_report_pairs_runs_by_fold_and_lists_a_missing_fold(tmp_path, capsys):
    labels = [i % 4 for i in range(20)]
    wrong = lambda n: [(y + 1) % 4 if i < n else y for i, y in enumerate(labels)]  # noqa: E731
    (tmp_path / "runs").mkdir()
    (tmp_path / "sweep.json").write_text(json.dumps({"experiments": ["skip", "unet"], "seeds": [0], "folds": 2}))
    _fold_run(tmp_path / "runs" / "0_skip_f0_s0", "skip", 0, wrong(0), labels)  # 100 %
    _fold_run(tmp_path / "runs" / "1_skip_f1_s0", "skip", 1, wrong(2), labels)  # 90 %
    _fold_run(tmp_path / "runs" / "2_unet_f0_s0", "unet", 0, wrong(4), labels)  # 80 %
    assert sweep_main(["report_only=true", f"dir={tmp_path}", "wandb_report=false"]) == 1  # unet fold 1 is missing
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["missing"] == [{"experiment": "unet", "seed": 0, "fold": 1, "status": "not started"}]
    skip = report["tables"]["performance"][0]
    assert skip["acc_mean"] == pytest.approx(95.0) and skip["acc_std"] == pytest.approx(statistics.stdev([100, 90]))
    sig = report["significance"]
    assert sig["seeds"] == ["0/f0"] and sig["mcnemar"]["a_only"] == 4  # skip's fold 0 against unet's fold 0 only
    text = (tmp_path / "report.md").read_text()
    assert "over seed/fold pairs ['0/f0']" in text and "| – | unet | 0 fold 1 | not started |" in text
    assert "mean ± std over folds" in text and "95.00 ± 7.07" in text
