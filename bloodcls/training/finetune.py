"""Fine-tuning: ``python train.py data=folder data.path=<dir> init_from=<ckpt> [model.freeze=backbone]``.

The run trains the checkpoint's own network (its name, arch and input size: :mod:`bloodcls.runs.init_from` puts
them on the command line unless ``model=``/``experiment=``/``data.img_size=`` are given, and :func:`read_start`
refuses a run that builds another). The run's classes (its folder names) are matched to the checkpoint's by name
(:mod:`bloodcls.data.class_names`, ``init_classes=<map.yaml>`` for the rest): a matched class keeps its output
row (weight row and bias of the classifier, the network's last ``nn.Linear``), a class the checkpoint does not
know keeps the fresh row the network was built with; every other weight is copied. Before training the starting
network is scored on the run's test split (:func:`starting_scores`), so results.json shows it beside the
fine-tuned scores. That record travels in the run's checkpoints (:class:`StartRecord`), so ``resume=`` of a
fine-tune continues from ``last.ckpt`` alone: the ``init_from`` file may have moved or gone by then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import nn

from bloodcls.common.checkpoints import CHECKPOINT_HINT, CheckpointError, network_state, read_checkpoint
from bloodcls.data.class_names import ClassMatch, NoClassInCommon, load_class_map, match_classes
from bloodcls.errors import UserError
from bloodcls.uncertainty.ood import feature_layer

log = logging.getLogger(__name__)


class FineTuneError(UserError):
    """``init_from=`` names a checkpoint this run cannot start from."""


@dataclass
class Start:
    """The checkpoint a fine-tune starts from, and (once the run's classes are known) how they match."""

    checkpoint: Path
    hparams: dict[str, Any]
    state: dict[str, torch.Tensor]  # the network's weights (no ``net.`` prefix)
    match: ClassMatch | None = None
    test: dict[str, float] = field(default_factory=dict)  # the starting network on the run's test split
    resumed: bool = False  # resume=: the file is not read; weights from last.ckpt, the record from StartRecord
    restored: dict[str, Any] | None = None  # the record as the run's checkpoint kept it

    def record(self) -> dict[str, Any]:
        """results.json's ``init_from``: the checkpoint, the class matching and the starting scores."""
        if self.restored is not None:
            return dict(self.restored)
        match = self.match
        return {"checkpoint": str(self.checkpoint), "model": self.hparams.get("name"),
                "matched": {f: match.model_names[i] for f, i in match.index.items()} if match else {},
                "new_classes": list(match.unknown) if match else [], "test": dict(self.test)}


def read_start(cfg: DictConfig, resuming: bool = False) -> Start | None:
    """``init_from=`` read with the safe loader and checked against the run's model, before anything is built
    (None without init_from). A broken or crafted file, or another network than the run's, is one paragraph.
    ``resuming``: the run continues from its own ``last.ckpt``, so the file is not read at all."""
    given = cfg.get("init_from")
    if given in (None, ""):
        return None
    if cfg.get("ckpt_path") or not cfg.get("train", True):
        raise FineTuneError(f"init_from={given} starts a new fine-tuning run from a checkpoint's weights, and "
                            "ckpt_path= (or train=false) also says what to start from or score; give one of them.")
    path = Path(str(given)).expanduser()
    if resuming:
        return Start(path, {}, {}, resumed=True)
    contents = read_checkpoint(path)
    hparams = contents.get("hyper_parameters")
    state = network_state(contents)
    if not isinstance(hparams, dict) or not {"name", "img_size", "num_classes"} <= hparams.keys() or not state:
        raise CheckpointError(f"init_from={given}: {path} holds no bloodcls network (hyper-parameters naming the "
                              f"model, input size and classes, and its weights). {CHECKPOINT_HINT}")
    want = (str(hparams["name"]), hparams.get("arch") if hparams["name"] == "timm" else None, int(hparams["img_size"]))
    have = (str(cfg.model.name), cfg.model.get("arch") if cfg.model.name == "timm" else None, int(cfg.data.img_size))
    if want != have:
        def spell(name, arch, size):  # noqa: ANN001, ANN202
            return f"{name}{f' ({arch})' if arch else ''} at {size} px"
        model = f"model={want[0]}" + (f" model.arch={want[1]}" if want[1] else "")
        raise FineTuneError(
            f"init_from={given} holds a {spell(*want)} network, but this run builds {spell(*have)} (set by model=, "
            f"experiment= or data.img_size=). Fine-tuning trains the checkpoint's own network, so its weights fit: "
            f"leave model=, experiment= and data.img_size= out (train.py then takes them from the checkpoint), or "
            f"give `{model} data.img_size={want[2]}`.")
    return Start(path, dict(hparams), state)


def match_start(start: Start, class_names: list[str], class_map: str | None) -> ClassMatch:
    """The run's classes matched to the checkpoint's (:func:`match_classes`); no class in common is allowed
    without a map (every output row is then new: plain transfer learning), not with one."""
    model_names = [str(c) for c in start.hparams.get("class_names") or []]
    mapping = load_class_map(class_map)
    try:
        start.match = match_classes(class_names, model_names, mapping, source="the run's data")
    except NoClassInCommon:
        if mapping:
            raise
        start.match = ClassMatch(list(class_names), model_names, {}, list(class_names))
    return start.match


def transfer(net: nn.Module, start: Start) -> None:
    """Copy the checkpoint's weights into ``net``: every tensor as it is, the classifier row by row for the matched
    classes (the other rows keep their fresh initialisation). Shapes must agree."""
    name, _ = feature_layer(net)
    rows = {f"{name}.weight", f"{name}.bias"}
    own = net.state_dict()
    missing, extra = sorted(own.keys() - start.state.keys()), sorted(start.state.keys() - own.keys())
    bad = [k for k in own.keys() & start.state.keys() - rows if own[k].shape != start.state[k].shape]
    if missing or extra or bad:
        what = "; ".join(s for s in (f"missing {', '.join(missing[:3])}" if missing else "",
                                     f"unexpected {', '.join(extra[:3])}" if extra else "",
                                     f"other shapes: {', '.join(bad[:3])}" if bad else "") if s)
        raise FineTuneError(f"init_from={start.checkpoint} does not fit the {start.hparams['name']} network it names "
                            f"({what}): the file was changed or written by other code. {CHECKPOINT_HINT}")
    merged = {k: v for k, v in start.state.items() if k not in rows}
    for key in rows & own.keys():
        fresh, old = own[key].clone(), start.state[key]
        for run_class, ckpt_class in (start.match.index if start.match else {}).items():
            fresh[start.match.folder_names.index(run_class)] = old[ckpt_class]
        merged[key] = fresh
    net.load_state_dict(merged, strict=True)


@torch.no_grad()
def starting_scores(net: nn.Module, datamodule: Any, start: Start, batch_size: int = 256) -> dict[str, float]:
    """The starting network on the run's test split, restricted to its matched rows: the classes it does not know
    are never predicted, so each of their images counts as an error (and their F1 is 0 in the macro mean)."""
    from sklearn.metrics import f1_score

    images, labels = datamodule.load_arrays()["test"]
    names = start.match.folder_names
    known = torch.tensor([n in start.match.index for n in names])
    mask = torch.where(known, 0.0, float("-inf"))
    was_training = net.training
    net.eval()
    preds = []
    for i in range(0, len(labels), batch_size):
        x = datamodule.prepare_batch(torch.from_numpy(images[i:i + batch_size]), train=False)
        preds.append((net(x).float().cpu() + mask).argmax(dim=1))
    net.train(was_training)
    y = torch.as_tensor(labels).long()
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    on_known = known[y]
    start.test = {
        "acc": float((pred == y).float().mean()) if len(y) else None,
        "f1": float(f1_score(y.numpy(), pred.numpy(), labels=list(range(len(names))), average="macro",
                             zero_division=0)),
        "acc_known_classes": float((pred == y)[on_known].float().mean()) if on_known.any() else None,
        "images": len(y), "images_of_new_classes": int((~on_known).sum()),
    }
    return start.test


def start_from(start: Start | None, model: Any, datamodule: Any, class_map: str | None) -> Start | None:
    """Match the classes, copy the weights into ``model.net`` and score the starting network (log line); a
    resumed run does none of it (its weights and record come back from its ``last.ckpt``)."""
    if start is None or start.resumed:
        return start
    match = match_start(start, list(datamodule.class_names), class_map)
    transfer(model.net, start)
    scores = starting_scores(model.net, datamodule, start)
    log.info("init_from %s: %d of %d classes matched (%s)%s; before fine-tuning: test acc %.4f, macro F1 %.4f",
             start.checkpoint, len(match.index), len(match.folder_names), match.describe() or "none",
             f", new: {', '.join(match.unknown)}" if match.unknown else "", scores["acc"] or 0, scores["f1"])
    return start


class StartRecord(Callback):
    """Keeps :meth:`Start.record` in every checkpoint of a fine-tuning run and gives it back on ``resume=``."""

    def __init__(self, start: Start) -> None:
        self.start = start

    def state_dict(self) -> dict[str, Any]:
        return self.start.record()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start.restored = dict(state_dict)
