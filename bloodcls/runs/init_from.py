"""``init_from=<ckpt>``: a fine-tune trains the checkpoint's own network, so its model name, timm arch and input
size go on the command line before Hydra composes the config, unless ``model=``, ``experiment=`` or
``data.img_size=`` are given (then :func:`bloodcls.training.finetune.read_start` refuses a run that builds
another network). Hydra saves the added overrides with the run's, so ``resume=`` rebuilds the same run, and the
file is not read again then (it may have moved: the run continues from its own ``last.ckpt``).

Kept free of Lightning imports: ``train.py`` calls :func:`init_from_argv` before Hydra starts.
"""

from __future__ import annotations

from bloodcls.config import override_key


def init_from_argv(argv: list[str]) -> list[str]:
    """``train.py`` arguments with ``model=``, ``model.arch=`` and ``data.img_size=`` of the ``init_from=``
    checkpoint added where the command line does not set them (unchanged without init_from)."""
    args = argv[1:]
    keys = {override_key(a) for a in args if "=" in a and not a.startswith("-")}
    given = [a.split("=", 1)[1] for a in args if "=" in a and override_key(a) == "init_from"]
    if not given or given[-1] in ("", "null", "None") or any(a in ("-m", "--multirun") for a in args):
        return argv  # a multirun's jobs each check their own (read_start)
    if any(override_key(a) == "resume" and a.split("=", 1)[1] not in ("", "null", "None") for a in args if "=" in a):
        return argv  # resume= replayed the run's own overrides, with the model and size they added
    from bloodcls.common.checkpoints import read_checkpoint  # torch: only when fine-tuning

    hparams = read_checkpoint(given[-1]).get("hyper_parameters")
    if not isinstance(hparams, dict) or "name" not in hparams or "img_size" not in hparams:
        return argv  # read_start says what is wrong with the file, in the run
    added = []
    if not keys & {"model", "experiment"}:
        added.append(f"model={hparams['name']}")
        if hparams.get("arch") and "model.arch" not in keys:
            added.append(f"model.arch={hparams['arch']}")
    if not keys & {"experiment", "data.img_size"}:
        added.append(f"data.img_size={hparams['img_size']}")
    return [argv[0], *added, *args]
