"""The config keys users set, with their types and ranges, checked before anything heavy starts.

Hydra would otherwise hand a wrong value to the DataModule, the network or torch, and the user would
meet a ``ZeroDivisionError`` (``data.batch_size=0``), a ``ValueError`` from ``int()`` (``seed=foo``)
or torch's own message wrapped in Hydra's instantiate error. Here every bad value in the composed
config is named in one paragraph, with what is allowed, and the run stops with exit status 2 before
a folder, a logger or a dataset is touched. Keys absent from a config (a group not selected) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bloodcls.errors import UserError

if TYPE_CHECKING:  # omegaconf only where a config is checked: predict and the demo import these lists without it
    from omegaconf import DictConfig


class ConfigError(UserError):
    """One or more config values have the wrong type or are out of range."""


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    ok: Callable[[Any], bool]
    allowed: str  # what a good value is, as the message says it
    optional: bool = False  # null allowed


# The allowed values of each setting that names a choice, defined here once: check_config reads them, and so
# do the classes that take them (they are built outside Hydra too), through check_value and its message.
SIZES = (28, 64, 128, 224)  # BloodMNIST's releases (bloodcls.data.files)
AUGMENTS = (True, False, "robust")
MIN_AUGMENTS = ("none", "geometric")
LOADERS = ("tensor", "torch")
ON_DEVICE = ("auto", "true", "false")  # compared as lower-case strings: true/false may come as booleans
CHANNELS_LAST = ("auto", True, False)
INITS = ("keras", "torch")  # Glorot-uniform weights (the Keras ports) or PyTorch's default (bloodcls.models.registry)
COMPILE_MODES = (False, True, "graphs")  # eager, torch.compile, torch.compile with CUDA graphs
PRECISE_BN_WHEN = ("validation", "test")  # bloodcls.training.batchnorm.PreciseBatchNorm
# Lightning's precision strings, and auto (bloodcls.training.compute picks bf16-mixed or 32-true).
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16",
              "64-true", "64", "transformer-engine", "transformer-engine-float16")


def _spelled(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # as YAML and the command line write it


def either(values: tuple[Any, ...]) -> str:
    """``a, b or c``: the choices as a message lists them."""
    words = [_spelled(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def among(value: Any, values: tuple[Any, ...]) -> bool:
    """``value in values``, except that a boolean matches only a boolean (0 is not false, 1 is not true)."""
    return any(value is c if isinstance(c, bool) or isinstance(value, bool) else value == c for c in values)


def _choice(key: str, values: tuple[Any, ...], note: str = "") -> Rule:
    return Rule(key, lambda v: among(v, values), either(values) + note)


RULES: tuple[Rule, ...] = (
    Rule("seed", lambda v: _int(v) and v >= 0, "a whole number >= 0, e.g. seed=1"),
    Rule("data.img_size", lambda v: _int(v) and v in SIZES, f"one of {', '.join(map(str, SIZES))} (BloodMNIST's releases)"),
    Rule("data.batch_size", lambda v: _int(v) and v >= 1, "a whole number >= 1, e.g. data.batch_size=64"),
    Rule("data.eval_batch_size", lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    Rule("data.num_workers", lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    # data=folder (conf/data/folder.yaml); their sum and the fold's range are checked by bloodcls.data
    Rule("data.path", lambda v: isinstance(v, str) and v.strip() != "",
         "a folder of class folders or a .csv of path,label[,split], e.g. data=folder data.path=~/my_lab"),
    Rule("data.val_fraction", lambda v: _num(v) and 0 < v < 1, "a number in (0, 1), e.g. 0.1"),
    Rule("data.test_fraction", lambda v: _num(v) and 0 < v < 1, "a number in (0, 1), e.g. 0.2"),
    Rule("data.split_seed", lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    Rule("data.folds", lambda v: _int(v) and v >= 2, "a whole number >= 2 (k-fold cross-validation), or null", True),
    Rule("data.fold", lambda v: _int(v) and v >= 0, "a whole number >= 0 (below data.folds)"),
    _choice("data.augment", AUGMENTS),
    _choice("data.min_augment", MIN_AUGMENTS),
    _choice("data.loader", LOADERS),
    Rule("data.on_device", lambda v: str(v).lower() in ON_DEVICE, either(ON_DEVICE)),
    Rule("model.optimizer.lr", lambda v: _num(v) and v > 0, "a number > 0 (the study's Adam uses 1e-4)"),
    Rule("model.optimizer.weight_decay", lambda v: _num(v) and v >= 0, "a number >= 0"),
    Rule("model.label_smoothing", lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("model.dropout_scale", lambda v: _num(v) and 0 <= v < 2, "a number in [0, 2) (1 = the study's rates, up to 0.5)"),
    Rule("model.bn_momentum", lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1] (PyTorch's convention)", True),
    Rule("model.bn_eps", lambda v: _num(v) and v > 0, "a number > 0", True),
    _choice("model.init", INITS),
    _choice("model.compile", COMPILE_MODES, " (true: torch.compile; graphs: with CUDA graphs, trainer=gpu only)"),
    Rule("model.tta", lambda v: isinstance(v, bool), "true or false"),
    Rule("model.freeze", lambda v: v == "backbone", "backbone (only the classifier trains), or null", True),
    Rule("init_from", lambda v: isinstance(v, str) and v.strip() != "", "a checkpoint file to fine-tune, or null", True),
    Rule("init_classes", lambda v: isinstance(v, str) and v.strip() != "",
         "a YAML map of `run class: checkpoint class` lines, or null", True),
    _choice("data.channels_last", CHANNELS_LAST),
    Rule("threads", lambda v: v == "auto" or (_int(v) and v >= 1), "auto or a whole number >= 1"),
    Rule("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    Rule("trainer.max_epochs", lambda v: _int(v) and (v >= 1 or v == -1), "a whole number >= 1 (-1: no limit)"),
    Rule("strong_epochs", lambda v: _int(v) and v >= 1, "a whole number >= 1 (the epochs of recipe=strong)"),
    Rule("callbacks.early_stopping.patience", lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    _choice("callbacks.precise_bn.when", PRECISE_BN_WHEN),
    Rule("callbacks.trust.coverage", lambda v: _num(v) and 0 < v < 1, "a number in (0, 1), e.g. 0.9"),
    Rule("callbacks.trust.per_class", lambda v: isinstance(v, bool), "true or false"),
)
BY_KEY = {rule.key: rule for rule in RULES}


_MISSING = object()


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value); an interpolation that cannot resolve counts as a bad value, not a crash."""
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=True, default=_MISSING)
    except Exception as err:  # noqa: BLE001 - OmegaConf raises several kinds for a broken interpolation
        return True, f"<cannot resolve: {err}>"
    return node is not _MISSING, node


def _problem(rule: Rule, value: Any) -> str | None:
    """``key=value (expected ...)`` for a bad value, None for a good one."""
    if (value is None and rule.optional) or (value is not None and rule.ok(value)):
        return None
    return f"{rule.key}={value!r} (expected {rule.allowed})"


def _paragraph(bad: list[str]) -> str:
    return (f"Config value{'s' if len(bad) > 1 else ''} out of range or of the wrong type: {'; '.join(bad)}. "
            "Fix the override on the command line (or the YAML under conf/) and run again; "
            "`python train.py --cfg job` prints the composed config.")


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every bad value (key, value given, what is allowed)."""
    bad = []
    for rule in RULES:
        present, value = _lookup(cfg, rule.key)
        if present and (problem := _problem(rule, value)):
            bad.append(problem)
    if bad:
        raise ConfigError(_paragraph(bad))


def check_value(key: str, value: Any, error: type[UserError] = ConfigError) -> None:
    """One setting checked as :func:`check_config` checks it, with its message: for the classes that take these
    values (``error`` keeps their kind, e.g. DataError), which are also built without a config."""
    if problem := _problem(BY_KEY[key], value):
        raise error(_paragraph([problem]))
