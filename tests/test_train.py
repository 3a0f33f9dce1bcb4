"""End-to-end: train.py on small synthetic (and, when present, real) data in the official layout."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from bloodcls.errors import UserError
from bloodcls.runs.status import RunRecord
from bloodcls.training import fit, train
from tests.conftest import FAST, SHARED_DATA, needs_shared_data
from tests.helpers import REPO, compose_train, no_data, run_cli


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = compose_train(
        ["model=skip", "data.img_size=28", f"data.root={synthetic_root}", "trainer.max_epochs=4", "logger=csv", *FAST],
        output_dir=out,
    )
    results = train(cfg, output_dir=out, group="test")
    return out, results


@pytest.mark.slow
def test_short_run_learns_and_reports(trained):
    out, results = trained
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["status"] == "completed"
    assert on_disk["test"]["acc"] > 0.8  # chance is 0.125
    scores = on_disk["test"]["scores"]
    for key in ("test/acc", "test/precision", "test/recall", "test/f1", "test/loss", "test/f1/monocyte",
                "test/precision/immature_granulocytes", "test/recall/platelet"):
        assert 0 <= scores[key] <= (10 if key == "test/loss" else 1)
    cm = on_disk["test"]["confusion_matrix"]
    assert len(cm) == 8 and sum(map(sum, cm)) == 80
    assert sum(cm[i][i] for i in range(8)) / 80 == pytest.approx(scores["test/acc"])
    assert len(on_disk["test"]["predictions"]) == 80
    eff = on_disk["efficiency"]
    assert eff["params_trainable"] == 307_112 and eff["params_with_bn_stats"] == 308_008
    assert round(eff["memory_mib"], 2) == 1.17
    assert eff["macs"] > 0 and eff["flops"] == 2 * eff["macs"]
    assert 1 <= eff["epochs_run"] <= 4 and len(on_disk["history"]) == eff["epochs_run"]
    assert eff["best_epoch"] in [h["epoch"] for h in on_disk["history"]]
    assert eff["train_time_s"] > 0 and eff["test_time_s"] > 0
    assert on_disk["val"]["best"]["val/loss"] == min(h["val/loss"] for h in on_disk["history"])
    assert on_disk["data"]["split_sizes"] == {"train": 192, "val": 48, "test": 80}
    assert on_disk["config"]["model"]["name"] == "skip"
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "csv" / "metrics.csv").is_file()


def test_test_split_scored_with_best_checkpoint(trained, synthetic_root):
    out, results = trained
    from bloodcls.training.module import BloodCellClassifier

    model = BloodCellClassifier.load_from_checkpoint(out / "checkpoints" / "best.ckpt", map_location="cpu").eval()
    from bloodcls.data import BloodMNISTDataModule

    dm = BloodMNISTDataModule(root=str(synthetic_root), img_size=28)
    dm.setup()
    x, y = dm.splits["test"]
    with torch.no_grad():
        pred = model(dm.prepare_batch(x, train=False)).argmax(1)
    assert pred.tolist() == results["test"]["predictions"]


def _count_wandb_finishes(monkeypatch) -> list[int]:
    """The exit codes train() finishes its W&B run with (it still finishes it)."""
    codes: list[int] = []
    real = fit._close_wandb_run
    monkeypatch.setattr(fit, "_close_wandb_run", lambda exit_code: (codes.append(exit_code), real(exit_code)))
    return codes


def test_train_leaves_the_config_as_it_came(synthetic_root, tmp_path, monkeypatch):
    # logger=wandb is where the group used to be written into cfg; a sweep reuses the config it hands in
    cfg = compose_train(["model=inception", "data.img_size=28", f"data.root={synthetic_root}", "trainer.max_epochs=1",
                         "logger=[csv,wandb]", "logger.wandb.mode=disabled", *FAST], output_dir=tmp_path)
    before = OmegaConf.to_container(cfg)
    finishes = _count_wandb_finishes(monkeypatch)
    results = train(cfg, output_dir=tmp_path, group="pytest-group")
    assert OmegaConf.to_container(cfg) == before
    assert results["config"]["logger"]["wandb"]["group"] == "pytest-group"  # the run's own copy carries it
    assert finishes == [0]


def test_a_failed_run_finishes_wandb_once_and_leaves_the_config(synthetic_root, tmp_path, monkeypatch):
    import wandb

    cfg = compose_train(["model=inception", "data.img_size=28", f"data.root={synthetic_root}", "train=false",
                         "logger=[csv,wandb]", "logger.wandb.mode=disabled", *FAST], output_dir=tmp_path)
    before = OmegaConf.to_container(cfg)
    finishes = _count_wandb_finishes(monkeypatch)
    with pytest.raises(UserError, match="ckpt_path"):  # raised once the trackers are up
        train(cfg, output_dir=tmp_path, group="g")
    assert finishes == [1] and wandb.run is None
    assert OmegaConf.to_container(cfg) == before


def test_run_config_carries_group_and_wandb_id_in_a_copy(tmp_path):
    cfg = compose_train(["logger=[wandb,mlflow]"], output_dir=tmp_path)
    before = OmegaConf.to_container(cfg)
    resumed = RunRecord(tmp_path, {"group": "first-group", "wandb_id": "abc123"}, enabled=False)
    run_cfg, group = fit.run_config(cfg, resumed, "new-group")
    assert group == "first-group"  # a resumed run keeps its group and its W&B run
    assert (run_cfg.logger.wandb.group, run_cfg.logger.wandb.id) == ("first-group", "abc123")
    assert run_cfg.logger.mlflow.tags.group == "first-group"
    assert OmegaConf.to_container(cfg) == before
    explicit = compose_train(["logger=wandb", "logger.wandb.group=mine"], output_dir=tmp_path)
    fresh = RunRecord(tmp_path, {}, enabled=False)
    assert fit.run_config(explicit, fresh, "sweep")[0].logger.wandb.group == "mine"


@pytest.mark.slow
def test_wandb_offline_run_keeps_summary(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(["model=inception", "data.img_size=28", f"data.root={synthetic_root}",
                         "trainer.max_epochs=1", "logger=wandb", *FAST], output_dir=tmp_path)
    results = train(cfg, output_dir=tmp_path, group="pytest-group")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # Offline, wandb-core keeps everything in its transaction log until `wandb sync`: look for the records.
    # Its service process flushes that log asynchronously after wandb.finish(), so give it a moment.
    log_file = next(runs[0].glob("run-*.wandb"))
    deadline = time.time() + 60
    while b"efficiency/params_trainable" not in log_file.read_bytes() and time.time() < deadline:
        time.sleep(0.5)
    blob = log_file.read_bytes()
    for key in ("test/acc", "test/f1/monocyte", "efficiency/params_trainable", "efficiency/macs",
                "test/confusion_matrix_table", "pytest-group", "bloodcls.training.module.BloodCellClassifier"):
        assert key.encode() in blob, key
    assert results["summary"]["efficiency/params_trainable"] == 36_828
    assert results["wandb"]["id"] == runs[0].name.rsplit("-", 1)[-1]
    assert results["wandb"]["mode"] == "offline"
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # a CSV log is always written


@pytest.mark.slow
def test_cli_multirun_two_jobs(synthetic_root, tmp_path):
    proc = run_cli("train.py", "-m", "model=inception,hybrid", "data.img_size=28", f"data.root={synthetic_root}",
                   "trainer.max_epochs=1", "logger=csv", f"paths.log_dir={tmp_path}", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(tmp_path.glob("multiruns/*/*/*/results.json"))
    assert len(results) == 2
    assert {json.loads(p.read_text())["model"] for p in results} == {"inception", "hybrid"}
    assert results[0].parent.parent == results[1].parent.parent  # one sweep folder, one subfolder per job


@pytest.mark.slow
def test_cli_missing_data_offline(tmp_path):
    proc = run_cli("train.py", "experiment=baseline_64", f"data.root={tmp_path}", "data.download=false",
                   "logger=none", f"paths.log_dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert "bloodmnist_64.npz not found" in proc.stderr and "zenodo.org" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_unknown_model(tmp_path):
    proc = run_cli("train.py", "model=resnet", f"paths.log_dir={tmp_path}", *no_data(tmp_path))
    assert proc.returncode != 0
    assert "Could not find 'model/resnet'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.real
@needs_shared_data
def test_real_images_two_epochs(tmp_path):
    root = tmp_path / "real"
    subprocess.run([sys.executable, str(SHARED_DATA / "make_bloodmnist.py"), "--root", str(root), "--sizes", "64",
                    "--limit-per-class", "20"], check=True, capture_output=True, timeout=300)
    cfg = compose_train(["model=skip", "data.img_size=64", f"data.root={root}", "trainer.max_epochs=2", "logger=csv",
                         "data.batch_size=16", "model.optimizer.lr=1e-3", "model.bn_momentum=0.5",
                         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"], output_dir=tmp_path / "run")
    results = train(cfg, output_dir=tmp_path / "run")
    assert results["data"]["split_sizes"] == {"train": 160, "val": 160, "test": 160}
    assert results["test"]["acc"] > 0.35  # chance is 0.125


@pytest.mark.slow
def test_a_first_run_prints_no_lightning_noise(synthetic_root, tmp_path):
    """No "Total FLOPs: 0" (the summary gives thop's count), no cloud "Tip:", no LeafSpec or bf16 size warning."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the warnings a newcomer sees
    proc = subprocess.run([sys.executable, "train.py", "model=baseline", "data.img_size=28", f"data.root={synthetic_root}",
                           "trainer.max_epochs=1", "logger=csv", f"paths.log_dir={tmp_path}", "data.batch_size=16",
                           "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"],
                          cwd=REPO, env={**env, "WANDB_MODE": "offline"}, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Total FLOPs" in out and "Total FLOPs: 0 " not in out.replace("\n", " ")  # the summary is still shown
    macs = json.loads(next(tmp_path.glob("runs/*/*/results.json")).read_text())["efficiency"]["macs"]
    assert f"Total FLOPs: {_readable(2 * macs)}" in out
    assert "Tip:" not in out and "litlogger" not in out and "LeafSpec" not in out
    assert "not supported by the model summary" not in out  # bf16-mixed keeps fp32 weights: the size is right


def _readable(n: float) -> str:
    from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

    return get_human_readable_count(int(n))


def test_test_false_says_the_test_was_skipped_not_zero(synthetic_root, tmp_path, caplog):
    """A hyper-parameter search (test=false) used to log "test acc 0.0000": read as a broken model."""
    cfg = compose_train(["model=baseline", "data.img_size=28", f"data.root={synthetic_root}", "trainer.max_epochs=1",
                         "logger=csv", "test=false", *FAST], output_dir=tmp_path)
    with caplog.at_level("INFO", logger="bloodcls.training.fit"):
        results = train(cfg, output_dir=tmp_path)
    assert results["test"]["acc"] is None and results["test"]["scores"] == {}
    said = [r.getMessage() for r in caplog.records if r.name == "bloodcls.training.fit"]
    assert any(m.startswith("test skipped (test=false); best validation acc 0.") for m in said), said
    assert not any("test acc" in m for m in said)
