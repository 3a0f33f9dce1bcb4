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
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bloodcls.errors import UserError


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


SIZES = (28, 64, 128, 224)
# Lightning's precision strings, and auto (bloodcls.training.compute picks bf16-mixed or 32-true).
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16",
              "64-true", "64", "transformer-engine", "transformer-engine-float16")

RULES: tuple[Rule, ...] = (
    Rule("seed", lambda v: _int(v) and v >= 0, "a whole number >= 0, e.g. seed=1"),
    Rule("data.img_size", lambda v: _int(v) and v in SIZES, f"one of {', '.join(map(str, SIZES))} (BloodMNIST's releases)"),
    Rule("data.batch_size", lambda v: _int(v) and v >= 1, "a whole number >= 1, e.g. data.batch_size=64"),
    Rule("data.eval_batch_size", lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    Rule("data.num_workers", lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    Rule("data.augment", lambda v: isinstance(v, bool) or v == "robust", "true, false or robust"),
    Rule("data.min_augment", lambda v: v in ("none", "geometric"), "none or geometric"),
    Rule("data.loader", lambda v: v in ("tensor", "torch"), "tensor or torch"),
    Rule("data.on_device", lambda v: str(v).lower() in ("auto", "true", "false"), "auto, true or false"),
    Rule("model.optimizer.lr", lambda v: _num(v) and v > 0, "a number > 0 (the study's Adam uses 1e-4)"),
    Rule("model.optimizer.weight_decay", lambda v: _num(v) and v >= 0, "a number >= 0"),
    Rule("model.label_smoothing", lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("model.dropout_scale", lambda v: _num(v) and 0 <= v < 2, "a number in [0, 2) (1 = the study's rates, up to 0.5)"),
    Rule("model.bn_momentum", lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1] (PyTorch's convention)", True),
    Rule("model.bn_eps", lambda v: _num(v) and v > 0, "a number > 0", True),
    Rule("model.init", lambda v: v in ("keras", "torch"), "keras or torch"),
    Rule("model.compile", lambda v: v in (False, True, "graphs"), "false, true or graphs"),
    Rule("model.tta", lambda v: isinstance(v, bool), "true or false"),
    Rule("data.channels_last", lambda v: isinstance(v, bool) or v == "auto", "auto, true or false"),
    Rule("threads", lambda v: v == "auto" or (_int(v) and v >= 1), "auto or a whole number >= 1"),
    Rule("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    Rule("trainer.max_epochs", lambda v: _int(v) and (v >= 1 or v == -1), "a whole number >= 1 (-1: no limit)"),
    Rule("callbacks.early_stopping.patience", lambda v: _int(v) and v >= 0, "a whole number >= 0"),
)


_MISSING = object()


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value); an interpolation that cannot resolve counts as a bad value, not a crash."""
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=True, default=_MISSING)
    except Exception as err:  # noqa: BLE001 - OmegaConf raises several kinds for a broken interpolation
        return True, f"<cannot resolve: {err}>"
    return node is not _MISSING, node


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every bad value (key, value given, what is allowed)."""
    bad = []
    for rule in RULES:
        present, value = _lookup(cfg, rule.key)
        if not present or (value is None and rule.optional):
            continue
        if value is None or not rule.ok(value):
            bad.append(f"{rule.key}={value!r} (expected {rule.allowed})")
    if bad:
        raise ConfigError(
            f"Config value{'s' if len(bad) > 1 else ''} out of range or of the wrong type: {'; '.join(bad)}. "
            "Fix the override on the command line (or the YAML under conf/) and run again; "
            "`python train.py --cfg job` prints the composed config."
        )
