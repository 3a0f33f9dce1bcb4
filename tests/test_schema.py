"""Config values are checked before a run starts: one paragraph naming each bad value, printed once, exit 2."""

import pytest

from bloodcls import schema
from bloodcls.errors import UserError
from bloodcls.schema import ConfigError, check_config
from tests.helpers import compose_train, no_data, run_cli

# (override, what the message must say): the four values a new user tried, and more of the same kinds
BAD = [
    ("data.batch_size=0", "data.batch_size=0 (expected a whole number >= 1"),
    ("seed=foo", "seed='foo' (expected a whole number >= 0"),
    ("model.optimizer.lr=-1", "model.optimizer.lr=-1 (expected a number > 0"),
    ("data.img_size=100", "data.img_size=100 (expected one of 28, 64, 128, 224"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 (expected a whole number >= 1"),
    ("data.augment=maybe", "data.augment='maybe' (expected true, false or robust"),
    ("model.label_smoothing=1.5", "model.label_smoothing=1.5 (expected a number in [0, 1)"),
    ("model.compile=graph", "model.compile='graph' (expected false, true or graphs"),
    ("model.compile=1", "model.compile=1 (expected false, true or graphs"),  # a number is not a switch
    ("data.loader=pil", "data.loader='pil' (expected tensor or torch)"),
    ("callbacks.precise_bn.when=later", "callbacks.precise_bn.when='later' (expected validation or test)"),
    ("strong_epochs=0", "strong_epochs=0 (expected a whole number >= 1 (the epochs of recipe=strong)"),
]


@pytest.mark.parametrize(("override", "said"), BAD)
def test_each_bad_value_is_named(override, said, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(compose_train([override], output_dir=tmp_path))
    assert said in str(err.value)


def test_every_bad_value_in_one_paragraph(tmp_path):
    cfg = compose_train(["data.batch_size=0", "seed=-3", "model.bn_momentum=2"], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    text = str(err.value)
    assert "\n" not in text and text.count("(expected") == 3 and text.startswith("Config values out of range")


def test_shipped_configs_pass(tmp_path):
    for overrides in ([], ["experiment=baseline_64"], ["recipe=strong"], ["experiment=resnet18_28", "recipe=keras"],
                      ["trainer=gpu"], ["model.bn_momentum=null"]):
        check_config(compose_train(overrides, output_dir=tmp_path))


def _built(key: str, value):
    """Build what takes ``key`` with ``value`` outside Hydra."""
    from bloodcls.data import BloodMNISTDataModule
    from bloodcls.models import build_model
    from bloodcls.training.batchnorm import PreciseBatchNorm
    from bloodcls.training.module import BloodCellClassifier

    group, name = key.rsplit(".", 1)
    if group == "data":
        return BloodMNISTDataModule(img_size=28, **{name: value})
    if key == "model.init":
        return build_model("skip", 28, init=value)
    if key == "model.compile":
        return BloodCellClassifier(name="skip", img_size=28, compile=value)
    return PreciseBatchNorm(when=value)


@pytest.mark.parametrize(("key", "value"), [("data.loader", "pil"), ("data.on_device", "maybe"), ("data.augment", "maybe"),
                                            ("data.min_augment", "all"), ("data.channels_last", "sometimes"),
                                            ("model.init", "he"), ("model.compile", "graph"),
                                            ("callbacks.precise_bn.when", "later")])
def test_classes_refuse_with_the_config_check_message(key, value, tmp_path):
    # one home for the allowed values: the classes (built without Hydra too) say what check_config says
    with pytest.raises(ConfigError) as from_config:
        check_config(compose_train(["recipe=study", f"{key}={value}"], output_dir=tmp_path))
    with pytest.raises(UserError) as from_class:
        _built(key, value)
    assert str(from_class.value) == str(from_config.value)


def test_allowed_values_are_the_constants_the_classes_use():
    assert schema.BY_KEY["data.loader"].allowed == "tensor or torch" and schema.either(schema.COMPILE_MODES) == \
        "false, true or graphs"
    from bloodcls.data import SIZES

    assert SIZES is schema.SIZES  # the data files and the check list the same releases
    assert schema.among(True, schema.COMPILE_MODES) and not schema.among(0, schema.COMPILE_MODES)


@pytest.mark.slow
def test_train_py_exits_2_with_the_paragraph_once(tmp_path):
    # the four values a new user tried and two more, in one command: one paragraph names each once, nothing is written
    bad = BAD[:6]
    proc = run_cli("train.py", *(override for override, _ in bad), f"paths.log_dir={tmp_path}", "logger=csv",
                   *no_data(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    for _, said in bad:
        assert out.count(said) == 1, said
    assert out.count("Config values out of range") == 1
    assert "Traceback" not in out and "ZeroDivisionError" not in out
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("*.ckpt"))
