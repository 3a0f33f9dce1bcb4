"""One judgement per image: calibrated probabilities, review flag, gate and prediction set from one function, by hand
on constructed logits; TTA sets from TTA probabilities; the network's outputs computed once; old states load."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bloodcls.errors import UserError
from bloodcls.uncertainty.conformal import ConformalSets, SetOptions, conformal_threshold
from bloodcls.uncertainty.fitting import check_fit_data, fit_calibration, fit_gate
from bloodcls.uncertainty.judgement import judge
from bloodcls.uncertainty.outputs import network_outputs
from bloodcls.uncertainty.state import NO_TTA_SETS, TrustState

NAMES = ["a", "b", "c"]
LOGITS = torch.tensor([[4.0, 0, 0], [2, 2, 0], [0, 0, 6], [6, 0, 0]])
FEATURES = torch.tensor([[0.0], [1.0], [0.0], [3.0]])  # gate score 0.5 f^2: 0, 0.5, 0, 4.5; image 3 above 2


def lac(threshold: float) -> ConformalSets:
    return ConformalSets("lac", 0.9, threshold=threshold, n_calibration=100)


def state(**kw) -> TrustState:
    base = dict(temperature=2.0, abstain_below=0.6, max_error=0.01, ood_means=torch.zeros(3, 1),
                ood_precision=torch.eye(1), ood_threshold=2.0, id_accept=0.95, feature_layer="fc",
                abstain_below_tta=0.7, conformal=lac(0.6), conformal_tta=lac(0.5))
    return TrustState(**{**base, **kw})


def test_one_judgement_by_hand():
    judged = judge(LOGITS, FEATURES, state())
    # T = 2: image 0 e^2 / (e^2 + 2) = 0.787; image 1 e / (2e + 1) = 0.422 twice; image 2 e^3 / (e^3 + 2) = 0.909
    assert judged.proba[0, 0].item() == pytest.approx(math.exp(2) / (math.exp(2) + 2), rel=1e-6)
    assert judged.proba[1, :2].tolist() == pytest.approx([math.e / (2 * math.e + 1)] * 2, rel=1e-6)
    assert judged.calibrated and not judged.tta and judged.predicted.tolist() == [0, 0, 2, 0]
    assert judged.review.tolist() == [False, True, False, False]  # 0.422 < 0.6
    assert judged.gate_score.tolist() == pytest.approx([0, 0.5, 0, 4.5]) and judged.accepted.tolist() == [True] * 3 + [False]
    # LAC at 0.6: a class is in the set when its probability is >= 0.4; image 3 is refused: no set at all
    assert judged.sets.tolist() == [[True, False, False], [True, True, False], [False, False, True], [False] * 3]
    assert judged.verdicts() == ["ok", "review", "ok", "not_a_cell"] and judged.set_coverage == 0.9
    rows = judged.rows(NAMES)
    assert [r.get("prediction_set") for r in rows[:3]] == [["a"], ["a", "b"], ["c"]]
    assert "prediction_set" not in rows[3] and rows[3]["in_distribution"] is False and rows[3]["class"] == "a"
    assert rows[1]["abstain"] is True and rows[1]["confidence"] == pytest.approx(math.e / (2 * math.e + 1), rel=1e-6)
    assert json.loads(json.dumps(rows)) == rows


def test_tta_sets_come_from_tta_probabilities_and_hold_the_class_shown():
    # the image as it is says a; its 7 other views say b: averaged, b (0.801) is shown, and its set must hold b
    views = torch.tensor([[3.0, 0, 0]] + [[0, 3.0, 0]] * 7).view(8, 1, 3)
    judged = judge(views, torch.zeros(1, 1), state(temperature=1.0))
    p = [math.exp(3) / (math.exp(3) + 2), 1 / (math.exp(3) + 2)]
    assert judged.tta and judged.proba[0].tolist() == pytest.approx([(p[0] + 7 * p[1]) / 8, (p[1] + 7 * p[0]) / 8,
                                                                     p[1]], rel=1e-5)
    assert judged.predicted.tolist() == [1] and judged.review_threshold == 0.7  # the TTA review threshold
    assert judged.sets.tolist() == [[False, True, False]]  # the TTA quantile on TTA probabilities
    single = judge(views[0], torch.zeros(1, 1), state(temperature=1.0))
    assert single.predicted.tolist() == [0] and single.sets.tolist() == [[True, False, False]]


def test_without_a_tta_state_the_sets_are_absent_and_said_to_be():
    judged = judge(torch.zeros(8, 2, 3), torch.zeros(2, 1), state(conformal_tta=None))
    assert judged.sets is None and judged.notes == [NO_TTA_SETS]
    assert all(r["prediction_set"] is None for r in judged.rows(NAMES))
    with pytest.raises(UserError, match="--tta"):  # a state without a TTA review threshold cannot judge TTA
        judge(torch.zeros(8, 2, 3), torch.zeros(2, 1), state(abstain_below_tta=None))


def test_without_a_trust_state_the_raw_softmax_is_unchecked():
    judged = judge(LOGITS, FEATURES, None)
    assert not judged.calibrated and judged.proba[0, 0].item() == pytest.approx(math.exp(4) / (math.exp(4) + 2))
    assert judged.verdicts() == ["unchecked"] * 4 and judged.sets is None and judged.accepted is None
    assert judged.rows(NAMES)[0]["confidence"] is None and judged.rows(NAMES)[0]["prediction_set"] is None


def test_a_version_1_state_still_loads_saying_what_is_unavailable():
    old = {k: v for k, v in state().to_dict().items() if k != "conformal_tta"}
    old["version"] = 1
    old["conformal"] = {"method": "aps", "coverage": 0.9, "threshold": 0.99, "n_calibration": 1712,
                        "randomized": False, "penalty": 0.0, "kreg": 0}  # as version 1 wrote it
    loaded = TrustState.from_dict(old)
    assert loaded.conformal.method == "aps" and not loaded.conformal.randomized and loaded.conformal_tta is None
    assert loaded.unavailable(tta=False) == [] and loaded.unavailable(tta=True) == [NO_TTA_SETS]
    assert TrustState.from_dict({**old, "version": 3}) is None  # a newer state than this code reads: none


class Tiny(nn.Module):
    """Features = the mean colour of each quarter of the image (12 numbers), then a linear classifier."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


def test_each_view_is_computed_once_and_the_gate_reads_the_unrotated_image():
    torch.manual_seed(0)
    net, seen = Tiny(), []
    net.register_forward_hook(lambda _m, inputs, _o: seen.append(len(inputs[0])))
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    out = network_outputs(net, images, tta=True, batch_size=4)
    assert sum(seen) == 8 * 10  # 8 passes per image, not 9
    plain = network_outputs(net, images)
    assert out.views.shape == (8, 10, 3) and torch.allclose(out.views[0], plain.logits, atol=1e-6)
    assert torch.equal(out.logits, out.views[0]) and torch.allclose(out.features, plain.features, atol=1e-6)
    turned = network_outputs(net, np.rot90(images, 1, axes=(1, 2)).copy())  # the third view: turned a quarter
    assert torch.allclose(out.views[2], turned.logits, atol=1e-5)


def test_the_tta_quantile_is_fitted_on_tta_probabilities():
    g = torch.Generator().manual_seed(0)
    views = 2 * torch.randn(8, 60, 3, generator=g)
    labels = views.mean(0).argmax(1)
    labels[:12] = (labels[:12] + 1) % 3  # some wrong
    from bloodcls.uncertainty.outputs import NetworkOutputs

    outputs = NetworkOutputs(views[0], torch.randn(60, 2, generator=g), views)
    fitted = fit_calibration(outputs, labels, torch.zeros(3, 2), torch.eye(2), "fc", SetOptions(0.8, "lac"), NAMES)
    tta = (views / fitted.temperature).softmax(-1).mean(0)
    single = (views[0] / fitted.temperature).softmax(-1)
    assert fitted.conformal_tta.threshold == pytest.approx(conformal_threshold(1 - tta[torch.arange(60), labels], 0.8))
    assert fitted.conformal.threshold == pytest.approx(conformal_threshold(1 - single[torch.arange(60), labels], 0.8))
    assert fitted.conformal_tta.threshold != fitted.conformal.threshold


def test_the_gate_is_fitted_on_a_sample_stratified_by_class():
    # a folder's arrays come in class order: 60 + 60 + 4 images; 12 of them still hold the rare class
    labels = np.array([0] * 60 + [1] * 60 + [2] * 4)
    images = np.zeros((124, 8, 8, 3), np.uint8)
    images[:, :4, :, 0] = (labels * 80)[:, None, None]
    gate, used = fit_gate(Tiny(), images, labels, max_images=12, seed=0)
    assert used == 12 and gate["means"].shape == (3, 12)


def test_a_class_the_trust_fit_cannot_use_is_refused_before_any_work():
    with pytest.raises(UserError, match="The training split has no image of c: "):
        check_fit_data({"train": torch.tensor([0, 1, 1]), "val": torch.tensor([0, 1, 2])}, 3, NAMES)
    with pytest.raises(UserError, match="at least 9 labelled images of every class .*b has 2"):
        check_fit_data({"train": torch.tensor([0, 1, 2]), "val": torch.tensor([0] * 9 + [1] * 2 + [2] * 9)}, 3,
                       NAMES, SetOptions(0.9, per_class=True))
    check_fit_data({"train": torch.tensor([0, 1, 2]), "val": torch.tensor([0] * 9 + [1] * 2 + [2] * 9)}, 3, NAMES,
                   SetOptions(0.9))  # one threshold for all: 20 images are enough


def test_class_conditional_sets_a_run_cannot_fit_are_refused_before_training(synthetic_root, tmp_path):
    from bloodcls.training import train
    from tests.conftest import FAST
    from tests.helpers import compose_train

    cfg = compose_train(["model=baseline", "data.img_size=28", "trainer.max_epochs=1", "logger=csv",
                         "callbacks.trust.per_class=true", f"data.root={synthetic_root}", *FAST], output_dir=tmp_path)
    with pytest.raises(UserError, match=r"need at least 9 labelled images of every class .*basophil has 6"):
        train(cfg, output_dir=tmp_path)  # 6 validation images per class: 0.9 needs 9
    assert not list(tmp_path.rglob("*.ckpt"))  # no epoch was trained
