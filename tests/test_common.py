"""The shared leaves: one home each for walking run folders, checkpoint -> run folder, atomic writes, mean ± std,
McNemar over test images."""

import json
import math

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
from bloodcls.common.stats import format_mean_std, mcnemar, plus_minus


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


def test_mcnemar_counts_each_test_image_once():
    """20 images: A alone right on 10, B alone on 2, both on 8. Exact two-sided p = 2 P(X <= 2), X ~ Bin(12, 1/2)
    = 2 (1 + 12 + 66) / 4096 = 158 / 4096; the same predictions from 3 seeds are the same evidence, not 3 x 20."""
    a = [True] * 10 + [False] * 2 + [True] * 8
    b = [False] * 10 + [True] * 2 + [True] * 8
    one, three = mcnemar(a, b), mcnemar([a, a, a], [b, b, b])
    assert one["pvalue"] == pytest.approx(158 / 4096) and three["pvalue"] == pytest.approx(158 / 4096)
    assert (one["a_only"], one["b_only"], one["n_pairs"], one["runs"]) == (10, 2, 20, 1)
    assert (three["a_only"], three["b_only"], three["n_pairs"], three["runs"]) == (10, 2, 20, 3)
    pooled = mcnemar(a * 3, b * 3)  # what pooling the seeds as 60 pairs gave: 30 against 6
    assert pooled["pvalue"] == pytest.approx(2 * sum(math.comb(36, k) for k in range(7)) / 2**36)
    assert pooled["pvalue"] < 1e-4 < three["pvalue"]


def test_mcnemar_over_seeds_compares_each_images_share_of_right_answers():
    """3 seeds, 7 images; per image the seeds A got right against B's: 3-0, 2-1, 1-0, 3-2, 2-0 (A more often),
    0-1 (B), 2-2 (a tie, left out). 5 against 1: p = 2 (1 + 6) / 64 = 14 / 64."""
    a = [[1, 1, 1, 1, 1, 0, 1], [1, 1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 0, 0]]
    b = [[0, 1, 0, 1, 0, 0, 1], [0, 0, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]]
    res = mcnemar(a, b)
    assert res["pvalue"] == pytest.approx(14 / 64)
    assert (res["a_only"], res["b_only"], res["n_pairs"], res["runs"]) == (5, 1, 7, 3)
    with pytest.raises(ValueError, match="same images"):
        mcnemar(a, b[:2])
