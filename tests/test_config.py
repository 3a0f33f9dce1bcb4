from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_train

STUDY_ROWS = {
    "baseline_64": ("baseline", 64, False),
    "baseline_128": ("baseline", 128, False),
    "baseline_aug": ("baseline", 128, True),
    "unet": ("unet", 128, True),
    "inception": ("inception", 128, True),
    "skip": ("skip", 128, True),
    "hybrid": ("hybrid", 128, True),
}


@pytest.mark.parametrize("experiment", list(STUDY_ROWS))
def test_every_experiment_composes_as_the_study_ran_it(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], output_dir=tmp_path)
    name, size, augment = STUDY_ROWS[experiment]
    assert (cfg.model.name, cfg.data.img_size, cfg.data.augment) == (name, size, augment)
    assert cfg.experiment_name == experiment
    # the study's protocol is the default everywhere
    assert cfg.model.optimizer.lr == 1e-4 and cfg.model.optimizer._partial_
    assert cfg.model.scheduler.factor == 0.5 and cfg.model.scheduler.patience == 2  # Keras patience 3 (test_recipes)
    assert cfg.callbacks.early_stopping.patience == 5 and cfg.callbacks.early_stopping.monitor == "val/loss"
    assert cfg.trainer.max_epochs == 40 and cfg.data.batch_size == 64
    OmegaConf.resolve(cfg)  # every interpolation resolves


CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_option_of_the_model_group_is_a_model(model, tmp_path):
    """Hydra offers every file of a group as an option (`model=<file>`), so shared keys live outside the group
    (conf/model_shared.yaml): `model=_base` used to be listed and failed with a traceback."""
    cfg = compose_train([f"model={model}"], hydra=True)
    assert cfg.model.name == model and cfg.model._target_ == "bloodcls.training.module.BloodCellClassifier"
    assert cfg.model.img_size == cfg.data.img_size and "compile" in cfg.model  # the shared keys arrived
    assert OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"].startswith("outputs/runs/")


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_every_option_of_the_data_group_is_a_data_source(data):
    cfg = compose_train([f"data={data}"])
    assert cfg.data._target_.startswith("bloodcls.data.") and cfg.data.batch_size == 64  # shared keys arrived


def test_run_folders_never_collide():
    dirs = set()
    for _ in range(5):
        cfg = compose_train(["experiment=skip"], hydra=True)
        dirs.add(OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"])
    assert len(dirs) == 5
    cfg = compose_train(["experiment=skip"], hydra=True)
    assert cfg.hydra.run.dir == cfg.hydra.run.dir  # one config resolves its id once
    assert cfg.hydra.run.dir.startswith("outputs/runs/")
