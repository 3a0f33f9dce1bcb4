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


@pytest.mark.parametrize("model", ["baseline", "unet", "inception", "skip", "hybrid"])
def test_model_group(model, tmp_path):
    cfg = compose_train([f"model={model}"], output_dir=tmp_path)
    assert cfg.model.name == model and cfg.model._target_ == "bloodcls.training.module.BloodCellClassifier"


def test_run_folders_never_collide():
    dirs = set()
    for _ in range(5):
        cfg = compose_train(["experiment=skip"], hydra=True)
        dirs.add(OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"])
    assert len(dirs) == 5
    cfg = compose_train(["experiment=skip"], hydra=True)
    assert cfg.hydra.run.dir == cfg.hydra.run.dir  # one config resolves its id once
    assert cfg.hydra.run.dir.startswith("outputs/runs/")
