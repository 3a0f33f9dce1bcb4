"""Checkpoints are loaded weights-only: crafted pickles are refused before they can run anything."""

import pickle

import pytest
import torch

from bloodcls.common.checkpoints import CheckpointError, UnsafeCheckpointError, read_checkpoint
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.training.module import BloodCellClassifier


class MakesAFile:
    """Unpickling this calls open(marker, "w"): code run by merely loading the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_rebuilds_the_trained_network(trained_checkpoint):
    model = load_trained(trained_checkpoint)
    assert (model.name, model.img_size, len(model.class_names)) == ("unet", 28, 8)
    assert model.class_names[3] == "immature_granulocytes" and not model.net.training
    module = BloodCellClassifier.load_from_checkpoint(trained_checkpoint, map_location="cpu").eval()
    x = torch.rand(5, 3, 28, 28)
    with torch.no_grad():  # the module keeps the run's channels_last layout (CPU fast path): same maths, other order
        assert torch.allclose(model.net(x), module(x), atol=1e-5)
    assert model.info["epoch"] in (0, 1)  # best of 2 epochs


def test_crafted_checkpoint_is_refused_without_running_it(trained_checkpoint, tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    contents = torch.load(trained_checkpoint, weights_only=True)
    contents["hyper_parameters"]["name"] = MakesAFile(marker)  # a real checkpoint with one poisoned entry
    torch.save(contents, evil)
    raw = tmp_path / "evil_raw.ckpt"
    raw.write_bytes(pickle.dumps({"state_dict": MakesAFile(marker)}))
    for path in (evil, raw):
        with pytest.raises(UnsafeCheckpointError, match=f"Refusing to load {path}"):
            load_trained(path)
        assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="would call `.*open`"):
        read_checkpoint(evil)
    # The file really is hostile: an unrestricted load runs its code.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("case", ["missing", "folder", "empty", "text", "truncated"])
def test_unreadable_checkpoints_get_one_clear_message(case, trained_checkpoint, tmp_path):
    path = tmp_path / f"{case}.ckpt"
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a checkpoint\n")
    elif case == "truncated":
        data = trained_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    expected = {"missing": "does not exist", "folder": "is a folder", "empty": "is empty",
                "text": "not a readable PyTorch checkpoint", "truncated": "not a readable PyTorch checkpoint"}[case]
    with pytest.raises(CheckpointError, match=expected):
        load_trained(path)


def test_a_foreign_or_altered_checkpoint_is_named_as_such(trained_checkpoint, tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)
    with pytest.raises(CheckpointError, match="not a bloodcls checkpoint"):
        load_trained(plain)
    contents = torch.load(trained_checkpoint, weights_only=True)
    contents["hyper_parameters"]["name"] = "baseline"
    altered = tmp_path / "altered.ckpt"
    torch.save(contents, altered)
    with pytest.raises(CheckpointError, match="does not fit the baseline model at 28 px"):
        load_trained(altered)


def test_predict_export_and_resume_all_refuse_it(trained_checkpoint, tmp_path, capsys):
    from bloodcls.cli import export, predict
    from bloodcls.runs.resume import start_or_resume

    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    evil = run / "checkpoints" / "last.ckpt"
    contents = torch.load(trained_checkpoint, weights_only=True)
    contents["callbacks"]["History"] = MakesAFile(marker)
    torch.save(contents, evil)
    (run / "status.json").write_text('{"status": "interrupted"}')
    for cli in (lambda: predict.main([str(evil), str(tmp_path)]), lambda: export.main([str(evil), "--format", "onnx"])):
        with pytest.raises(SystemExit) as stop:
            cli()
        assert stop.value.code == 2 and "Refusing to load" in capsys.readouterr().err
    with pytest.raises(UnsafeCheckpointError):
        start_or_resume(str(run), run)
    assert not marker.exists()


def _bad_checkpoint(case, trained_checkpoint, folder, marker):
    """The three files ckpt_path= once answered with a traceback: empty, text, crafted to run code."""
    path = folder / f"{case}.ckpt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a checkpoint\n")
    else:
        contents = torch.load(trained_checkpoint, weights_only=True)
        contents["callbacks"]["History"] = MakesAFile(marker)
        torch.save(contents, path)
    return path


BAD_FILES = {"empty": (CheckpointError, "is empty"), "text": (CheckpointError, "not a readable PyTorch checkpoint"),
             "crafted": (UnsafeCheckpointError, "Refusing to load")}


@pytest.mark.parametrize("mode", ["train", "score"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_ckpt_path_reads_the_file_as_resume_does(case, mode, trained_checkpoint, synthetic_root, tmp_path):
    """Training from ckpt_path= and train=false scoring refuse the file before Lightning opens it."""
    from bloodcls.training import train
    from tests.conftest import DETERMINISTIC_RUN
    from tests.helpers import compose_train

    marker = tmp_path / "code_ran"
    path = _bad_checkpoint(case, trained_checkpoint, tmp_path, marker)
    out = tmp_path / "run"
    extra = ["train=false"] if mode == "score" else []
    cfg = compose_train([*DETERMINISTIC_RUN, f"data.root={synthetic_root}", f"ckpt_path={path}", *extra], output_dir=out)
    error, said = BAD_FILES[case]
    with pytest.raises(error, match=said):
        train(cfg, output_dir=out)
    assert not marker.exists() and not out.exists()  # refused before the run folder is made


def test_ckpt_path_needs_the_training_state_to_train_on(trained_checkpoint, synthetic_root, tmp_path):
    from bloodcls.runs.resume import check_ckpt_path

    weights = tmp_path / "weights.ckpt"
    contents = torch.load(trained_checkpoint, weights_only=True)
    torch.save({k: v for k, v in contents.items() if k not in ("optimizer_states", "loops")}, weights)
    assert check_ckpt_path(weights, training=False) == weights  # scoring needs the weights only
    with pytest.raises(UserError, match="no training state"):
        check_ckpt_path(weights, training=True)
    with pytest.raises(UserError, match="holds no Lightning state_dict"):
        torch.save({"w": torch.zeros(1)}, weights)
        check_ckpt_path(weights, training=False)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["train=false"]])
def test_train_py_refuses_a_crafted_ckpt_path_in_one_paragraph(extra, trained_checkpoint, tmp_path):
    from tests.helpers import no_data, run_cli

    marker = tmp_path / "code_ran"
    path = _bad_checkpoint("crafted", trained_checkpoint, tmp_path, marker)
    proc = run_cli("train.py", f"ckpt_path={path}", "model=unet", "data.img_size=28", "logger=csv",
                   f"paths.log_dir={tmp_path}", *no_data(tmp_path), *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("Refusing to load") == 1 and not marker.exists()
