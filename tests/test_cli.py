"""The `bloodcls` command: every subcommand listed and helped, the console script wired, a closed pipe ends quietly."""

import importlib
import re
import subprocess
import sys

import pytest
from PIL import Image

from bloodcls.cli import COMMANDS, SIGPIPE_EXIT, main
from tests.helpers import REPO


def test_help_lists_every_command_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: bloodcls <command>")
    for name, (_, summary) in COMMANDS.items():
        assert f"\n  {name} " in out and summary in out


def test_every_command_module_is_registered_and_runnable():
    """Adding a command is one module in bloodcls/cli/ plus its line in COMMANDS: neither without the other."""
    modules = {p.stem for p in (REPO / "bloodcls" / "cli").glob("*.py") if p.stem != "__init__"}
    assert {module.rsplit(".", 1)[1] for module, _ in COMMANDS.values()} == modules == set(COMMANDS)
    assert all(callable(importlib.import_module(module).main) for module, _ in COMMANDS.values())


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "train"])
def test_each_command_has_its_own_help(command, capsys):
    try:
        status = main([command, "--help"])  # sweep prints its help and returns
    except SystemExit as exit_info:  # argparse's --help exits
        status = exit_info.code
    out = capsys.readouterr().out
    assert status == 0 and out.startswith(f"usage: bloodcls {command}")
    if command == "sweep":
        assert "experiments:" in out and "report_only:" in out  # conf/sweep.yaml's keys, as they are


def test_train_help_is_hydras():
    proc = subprocess.run([sys.executable, "-m", "bloodcls", "train", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "== Configuration groups ==" in proc.stdout and "experiment:" in proc.stdout


def test_an_unknown_command_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tran"])
    assert exit_info.value.code == 2 and "invalid choice: 'tran'" in capsys.readouterr().err


def test_the_console_script_is_the_command():
    scripts = (REPO / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    (target,) = re.findall(r'^bloodcls = "(.+)"$', scripts, re.M)  # tomllib is 3.11+; the project supports 3.10
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is main


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(trained_checkpoint, tmp_path):
    """`bloodcls predict ... --json | head`: no BrokenPipeError traceback; status 141 (128 + SIGPIPE), what the
    shell reports for any tool stopped by a closed pipe."""
    image = tmp_path / "cell.png"
    Image.new("RGB", (40, 30), (200, 120, 160)).save(image)
    proc = subprocess.Popen([sys.executable, "-m", "bloodcls", "predict", str(trained_checkpoint), str(image), "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the command writes a byte
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == SIGPIPE_EXIT
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err
