"""The ``bloodcls`` command: one subcommand per module of this package, arguments only.

    bloodcls <command> [arguments]        (python -m bloodcls <command> is the same)
    bloodcls <command> --help             the command's own arguments

A subcommand is a module here with ``main(argv: list[str] | None) -> int`` that parses its arguments (``prog``
``bloodcls <command>``) and hands the work to the package below; adding one is that module plus one line in
:data:`COMMANDS`. Modules are imported only when their command runs, so ``bloodcls --help`` starts at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

# name -> (module, one line for `bloodcls --help`), in the order a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("bloodcls.cli.train", "train one model, or a Hydra multirun (-m); as train.py"),
    "sweep": ("bloodcls.cli.sweep", "the study's experiments over seeds, then the report; as sweep.py"),
    "predict": ("bloodcls.cli.predict", "classify your own cell images with a trained model"),
    "evaluate": ("bloodcls.cli.evaluate", "score a trained model on your own labelled images"),
    "calibrate": ("bloodcls.cli.calibrate", "re-calibrate a model to your lab's labelled images (confidence, gate, sets)"),
    "adapt": ("bloodcls.cli.adapt", "adapt a model to your lab's unlabelled images (BatchNorm statistics)"),
    "demo": ("bloodcls.cli.demo", "try a trained model in the browser"),
    "export": ("bloodcls.cli.export", "export a model to ONNX, TorchScript or safetensors, checked"),
    "bundle": ("bloodcls.cli.bundle", "a folder that is the model: weights, config.json, model card (Hugging Face layout)"),
    "robustness": ("bloodcls.cli.robustness", "accuracy of trained runs under 13 lab shifts x 5 severities"),
    "trust": ("bloodcls.cli.trust", "calibration, abstention and the not-a-cell gate of trained runs"),
    "publish": ("bloodcls.cli.publish", "keep a finished run's record in results/<footing> (the repository's)"),
    "tables": ("bloodcls.cli.tables", "regenerate the README's and the pages' tables of runs from results/"),
    "ablation": ("bloodcls.cli.ablation", "runs grouped by experiment and recipe, as a table"),
    "bench": ("bloodcls.cli.bench", "time the plain DataLoader path against the fast path"),
    "workspace": ("bloodcls.cli.workspace", "the study's comparison workspace on W&B, from code"),
    "sync": ("bloodcls.cli.sync", "upload a sweep's offline W&B runs"),
}

# what a command that takes a trained model accepts (load_trained reads each of them)
MODEL_HELP = ("the model: a run folder, a .ckpt from one (checkpoints/best.ckpt), an exported .safetensors or a model "
              "bundle folder (bloodcls bundle)")

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader closed the pipe (e.g. `| head`)


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size below 1 (before any model or image is read)."""
    if batch_size < 1:
        from bloodcls.errors import UserError
        raise UserError(f"--batch-size {batch_size}: give a whole number >= 1 (e.g. 256).")


def summary(doc: str) -> str:
    """A command module's description for its ``--help``: the first paragraph of its docstring, less the leading
    name of the command."""
    first = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r"^``bloodcls \w+``: ", "", first)
    return text[:1].upper() + text[1:]


def parser() -> argparse.ArgumentParser:
    """The top level only: the command's name; everything after it is the command's own."""
    from bloodcls import __version__

    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{summary}" for name, (_, summary) in COMMANDS.items())
    p = argparse.ArgumentParser(prog="bloodcls", usage="bloodcls <command> [arguments]",
                                description="Train, sweep and compare blood-cell image classifiers on BloodMNIST.",
                                epilog=f"commands:\n{listing}\n\n`bloodcls <command> --help` shows a command's "
                                "arguments; `python -m bloodcls` is the same as `bloodcls`.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"bloodcls {__version__}")
    sub = p.add_subparsers(dest="command", required=True, help=argparse.SUPPRESS)
    for name in COMMANDS:
        sub.add_parser(name, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit status (the console script ``bloodcls``).

    A reader that closes the pipe early (``bloodcls predict ... --json | head``) ends the command quietly with
    status 141, as the shell reports for any Unix tool stopped by SIGPIPE, instead of a BrokenPipeError traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args, rest = parser().parse_known_args(argv[:1])
            status = importlib.import_module(COMMANDS[args.command][0]).main([*rest, *argv[1:]])
        finally:
            sys.stdout.flush()  # a closed pipe shows here (also after --help's SystemExit), not at interpreter exit
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
    return status or 0
