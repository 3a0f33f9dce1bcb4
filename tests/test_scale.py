"""Scale-out on existing engines: Lightning DDP (gloo on CPU), Hydra launchers, Optuna search."""

import json

import numpy as np
import pytest
import yaml

from bloodcls.training import train
from tests.conftest import FAST
from tests.helpers import compose_train, run_cli
from tests.synthetic import write_synthetic_npz

SMALL = ["model=inception", "data.img_size=28", "logger=csv", "trainer.max_epochs=1", *FAST]


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    """Synthetic data whose test split (79 images) does not divide evenly between two ranks."""
    root = tmp_path_factory.mktemp("odd")
    path = write_synthetic_npz(root, 28, per_class=(12, 4, 10))
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["test_images"], arrays["test_labels"] = arrays["test_images"][:79], arrays["test_labels"][:79]
    np.savez(path, **arrays)
    return root


@pytest.fixture(scope="module")
def checkpoint(odd_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    cfg = compose_train([*SMALL, f"data.root={odd_root}", "trainer.max_epochs=2"], output_dir=out)
    train(cfg, output_dir=out)
    return out / "checkpoints" / "best.ckpt"


def _score(tmp_path, root, ckpt, *extra):
    proc = run_cli("train.py", "train=false", f"ckpt_path={ckpt}", f"data.root={root}", f"paths.log_dir={tmp_path}",
                   "data.eval_batch_size=16", *SMALL, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("runs/*/*/results.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_ddp_two_processes_give_the_same_test_metrics(odd_root, checkpoint, tmp_path):
    one = _score(tmp_path / "one", odd_root, checkpoint)
    two = _score(tmp_path / "two", odd_root, checkpoint, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    assert one["test"]["predictions"] == two["test"]["predictions"]  # every sample once, in dataset order
    assert len(two["test"]["predictions"]) == 79
    assert sum(map(sum, two["test"]["confusion_matrix"])) == 79  # nothing counted twice or dropped
    for key, value in one["test"]["scores"].items():
        assert two["test"]["scores"][key] == pytest.approx(value, abs=1e-6), key
    assert two["config"]["trainer"]["strategy"] == "ddp" and two["config"]["trainer"]["devices"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]])
def test_launchers_run_a_two_job_multirun(launcher, synthetic_root, tmp_path):
    proc = run_cli("train.py", "-m", "model=inception,hybrid", f"data.root={synthetic_root}",
                   f"paths.log_dir={tmp_path}", *SMALL[1:], *launcher)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = sorted(tmp_path.glob("multiruns/*/*/*/results.json"))
    assert {json.loads(p.read_text())["model"] for p in results} == {"inception", "hybrid"}


@pytest.mark.slow
def test_optuna_search_records_best_parameters(synthetic_root, tmp_path):
    # lr and batch size stay free: an override on the command line would pin them out of the search
    fixed = [o for o in SMALL if not o.startswith(("data.batch_size", "model.optimizer.lr"))]
    proc = run_cli("train.py", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"data.root={synthetic_root}",
                   f"paths.log_dir={tmp_path}", *fixed)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (best_file,) = tmp_path.glob("multiruns/*/*/optimization_results.yaml")
    best = yaml.safe_load(best_file.read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.optimizer.weight_decay", "model.dropout_scale",
                                        "data.batch_size", "data.augment"}
    trials = [json.loads(p.read_text()) for p in tmp_path.glob("multiruns/*/*/*/results.json")]
    assert len(trials) == 2
    assert best["best_value"] == pytest.approx(max(t["val"]["best"]["val/f1"] for t in trials))
    for t in trials:  # the search never looks at the test split
        assert t["test"]["scores"] == {} and t["test"]["acc"] is None and t["config"]["test"] is False


def test_slurm_launcher_config_composes(tmp_path):
    cfg = compose_train(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.array_parallelism == 8


def test_ddp_trainer_config():
    cfg = compose_train(["trainer=ddp"], hydra=False)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False
