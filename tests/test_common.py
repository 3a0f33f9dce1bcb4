"""The shared leaves: one home each for walking run folders, checkpoint -> run folder, atomic writes, mean ± std."""

import json

import pytest

from bloodcls.common.files import REPO, atomic_write
from bloodcls.common.rundir import (
    find_checkpoints,
    job_folders,
    read_json,
    result_folders,
    run_folder_of,
    write_json,
)
from bloodcls.common.stats import format_mean_std, plus_minus


def _run(folder, *, ckpt="best.ckpt", results=True, hydra=True):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / ckpt).write_bytes(b"x")
    if results:
        (folder / "results.json").write_text("{}")
    if hydra:
        (folder / ".hydra").mkdir()
    return folder


def test_one_walker_over_a_folder_of_runs(tmp_path):
    sweep = tmp_path / "sweep"
    b, a = _run(sweep / "b"), _run(sweep / "a", ckpt="last.ckpt", results=False)
    _run(sweep / ".submitit")  # a launcher's folder is no run
    (sweep / "multirun.yaml").write_text("")
    assert job_folders(sweep) == [a, b] and job_folders(tmp_path / "missing") == []
    assert find_checkpoints([sweep]) == [(a, a / "checkpoints" / "last.ckpt"), (b, b / "checkpoints" / "best.ckpt")]
    assert result_folders([tmp_path, sweep]) == [b]  # each once, wherever it lies


def test_one_home_for_checkpoint_to_run_folder(tmp_path):
    run = _run(tmp_path / "run")
    loose = _run(tmp_path / "loose", hydra=False)
    assert run_folder_of(run / "checkpoints" / "best.ckpt") == run
    assert run_folder_of(loose / "checkpoints" / "best.ckpt") is None  # not shown to be a run: resume= starts anew
    assert run_folder_of(loose / "checkpoints" / "best.ckpt", strict=False) == loose
    assert run_folder_of(tmp_path / "model.ckpt", strict=False) == tmp_path  # a checkpoint on its own
    assert find_checkpoints([loose / "checkpoints" / "best.ckpt"]) == [(loose, loose / "checkpoints" / "best.ckpt")]


def test_an_atomic_write_leaves_the_old_file_when_it_fails(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})

    def half_then_crash(tmp):
        tmp.write_text('{"a": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert read_json(target) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}


def test_mean_std_is_written_one_way():
    assert format_mean_std([0.9, 0.95], scale=100) == plus_minus(92.5, 3.5355339) == "92.50 ± 3.54"
    assert plus_minus(None, None) == format_mean_std([]) == "–"
    assert plus_minus(12.345, 0.1, 1) == "12.3 ± 0.1" and format_mean_std([0.5], bare_single=True) == "0.50"


def test_the_repository_root_is_the_checkout():
    assert (REPO / "conf" / "train.yaml").is_file() and (REPO / "train.py").is_file()


def test_the_checkpoint_config_writes_where_the_run_folder_names_say(tmp_path):
    """Lightning writes the checkpoints from the config; every reader finds them by common/rundir.py's names."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from bloodcls.common.rundir import BEST_CKPT, CHECKPOINT_DIR, LAST_CKPT, RunPaths
    from tests.helpers import compose_train

    ckpt = compose_train([], output_dir=tmp_path).callbacks.model_checkpoint
    assert ckpt.dirpath == str(RunPaths(tmp_path).checkpoints) and ckpt.dirpath.endswith(CHECKPOINT_DIR)
    assert ckpt.filename + ModelCheckpoint.FILE_EXTENSION == BEST_CKPT
    assert ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION == LAST_CKPT
