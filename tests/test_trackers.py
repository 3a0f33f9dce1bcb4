"""logger=tensorboard and logger=mlflow: what a run and a two-job sweep leave in each tracker, read back with
the tracker's own reader (TensorBoard's EventAccumulator, MLflow's client)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bloodcls.errors import UserError
from bloodcls.training import train
from bloodcls.training.loggers import local_mlflow_store, logger_names
from tests.conftest import FAST
from tests.helpers import REPO, compose_train

pytestmark = pytest.mark.xdist_group("tiny_sweep")  # one worker pays for the shared sweep

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

RUN = ["model=baseline", "data.img_size=28", "trainer.max_epochs=2", *FAST]
SUMMARY = ("test/acc", "test/f1", "test/f1/monocyte", "efficiency/params_trainable", "efficiency/macs",
           "efficiency/train_time_s")


def _events(run_folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_folder / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _mlflow_runs(store: Path, filter_string: str = ""):
    from mlflow.tracking import MlflowClient

    uri, _ = local_mlflow_store(store)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bloodcls")
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id], filter_string=filter_string)


@pytest.fixture(scope="module")
def tracked_run(synthetic_root, tmp_path_factory):
    """One run logging to CSV, TensorBoard, MLflow and W&B (offline) at once."""
    base = tmp_path_factory.mktemp("tracked")
    out = base / "run"
    cfg = compose_train(["logger=[csv,tensorboard,mlflow,wandb]", "logger.wandb.mode=offline", f"data.root={synthetic_root}", f"paths.log_dir={base}",
                         *RUN], output_dir=out)
    return out, base / "mlflow", train(cfg, output_dir=out, group="g1")


def test_several_trackers_compose_at_once():
    cfg = compose_train(["logger=[csv,tensorboard,mlflow]"])
    assert set(cfg.logger) == {"csv", "tensorboard", "mlflow"}
    assert compose_train(["logger=tensorboard"]).logger.tensorboard.name == "tensorboard"
    assert logger_names("[csv, tensorboard]") == ["csv", "tensorboard"] and logger_names("wandb") == ["wandb"]


@pytest.mark.slow
def test_tensorboard_holds_epochs_summary_config_and_confusion(tracked_run):
    out, _, results = tracked_run
    acc = _events(out)
    tags = acc.Tags()
    for key in ("val/acc", "val/f1", "val/loss", "train/loss"):
        assert len(acc.Scalars(key)) == 2, key  # one point per epoch
    assert acc.Scalars("val/acc")[-1].value == pytest.approx(results["history"][-1]["val/acc"], abs=1e-6)
    for key in SUMMARY:
        assert len(acc.Scalars(key)) == 1, key  # logged once (test scores by trainer.test, the rest at the end)
        assert acc.Scalars(key)[-1].value == pytest.approx(results["summary"][key], rel=1e-5), key
    assert "test/confusion_matrix" in tags["images"]
    # The HPARAMS tab: the resolved config beside the test scores.
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = data.session_start_info.hparams
    assert hparams["experiment_name"].string_value == "baseline_28" and hparams["data/img_size"].number_value == 28
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"test/acc", "test/f1", "efficiency/macs"} <= {m.name.tag for m in experiment.metric_infos}
    assert "seed" in hparams and "trainer/max_epochs" in hparams
    assert "config/text_summary" in tags["tensors"]  # the whole resolved config under TEXT


@pytest.mark.slow
def test_mlflow_holds_run_params_metrics_tags_and_figure(tracked_run):
    out, store, results = tracked_run
    client, runs = _mlflow_runs(store)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "baseline_28_s0" and run.info.status == "FINISHED"
    assert run.data.tags["group"] == "g1" and run.data.tags["experiment"] == "baseline_28"
    assert run.data.params["model/name"] == "baseline" and run.data.params["data/img_size"] == "28"
    for key in SUMMARY:
        assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
        assert run.data.metrics[key] == pytest.approx(results["summary"][key], rel=1e-6), key
    val_acc = client.get_metric_history(run.info.run_id, "val/acc")
    assert [m.value for m in sorted(val_acc, key=lambda m: m.step)] == pytest.approx(
        [h["val/acc"] for h in results["history"]], abs=1e-6)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "test")]
    assert "test/confusion_matrix.png" in artifacts
    assert (out / "csv" / "metrics.csv").is_file()  # the CSV log beside them
    assert results["wandb"]["mode"] == "offline" and list((out / "wandb").glob("offline-run-*"))


def test_unreachable_mlflow_server_is_one_paragraph(tmp_path):
    cfg = compose_train(["logger=mlflow", "logger.mlflow.tracking_uri=nosuchscheme://x"], output_dir=tmp_path)
    from bloodcls.config import instantiate

    with pytest.raises(UserError, match="logger.mlflow.tracking_uri"):
        instantiate(cfg.logger.mlflow)


def test_missing_tracker_package_says_what_to_install(monkeypatch):
    import importlib.util

    from bloodcls.training import loggers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UserError, match=r"\.\[trackers\]"):
        loggers.tensorboard_logger(save_dir=".")


@pytest.mark.slow
def test_sweep_runs_sit_side_by_side_in_both_trackers(tiny_sweep):
    proc, sweep_dir = tiny_sweep  # conftest's shared sweep logs to csv, tensorboard and mlflow
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = sorted(p for p in (sweep_dir / "runs").iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0_baseline_64_s0", "1_baseline_64_s1", "2_inception_s0", "3_inception_s1"]
    for job in jobs:  # tensorboard --logdir <sweep>/runs: one run per job folder
        assert len(_events(job).Scalars("test/acc")) == 1 and len(_events(job).Scalars("efficiency/macs")) == 1
    _, runs = _mlflow_runs(sweep_dir.parent.parent / "mlflow", "tags.group = 'tiny'")
    assert sorted(r.data.tags["experiment"] for r in runs) == ["baseline_64"] * 2 + ["inception"] * 2
    assert all("test/acc" in r.data.metrics and "val/f1" in r.data.metrics for r in runs)
    assert "tensorboard --logdir" in proc.stdout and "mlflow ui" in proc.stdout


@pytest.mark.slow
def test_jobs_starting_together_share_one_new_store(tmp_path):
    """Three jobs open a fresh local store at once (a sweep's joblib jobs): without the file lock two of
    three fail in MLflow's database migration (seen: alembic CommandError, sqlite 'table already exists')."""
    import subprocess
    import sys

    code = ("import sys; from bloodcls.training.loggers import mlflow_logger; "
            "lg = mlflow_logger(store_dir=sys.argv[1], run_name=sys.argv[2]); print(lg.experiment_id, lg.run_id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "mlflow"), f"job{i}"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-800:] for _, err in outs]
    assert len({out.split()[0] for out, _ in outs}) == 1  # one experiment
    _, runs = _mlflow_runs(tmp_path / "mlflow")
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2"]


def test_the_wandb_logger_starts_without_the_anonymous_deprecation_warning(tmp_path, capfd):
    """Lightning passes anonymous=None to wandb.init on every run; wandb now warns that the setting does nothing
    (wandb/wandb#10909), a line every user would read as a problem. The run starts without it."""
    pytest.importorskip("wandb")
    from bloodcls.training.loggers import wandb_logger

    logger = wandb_logger(save_dir=str(tmp_path), mode="disabled")
    assert logger.experiment is not None
    assert "anonymous" not in capfd.readouterr().err
