import pytest
import torch

from bloodcls.training.metrics import classification_metrics, flatten_scores

NAMES = [f"c{i}" for i in range(8)]


def test_scores_on_a_hand_made_case():
    # class 0: 3 true, 2 found + 1 false positive; class 1: 2 true, 1 found; class 2: 1 true, found
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 0, 2])
    logits = torch.nn.functional.one_hot(pred, 8).float()
    metrics = classification_metrics(8)
    metrics.update(logits, y)
    computed = metrics.compute()
    scores = flatten_scores(computed, NAMES, "test")
    assert scores["test/acc"] == pytest.approx(4 / 6)
    assert scores["test/precision/c0"] == pytest.approx(2 / 3)
    assert scores["test/recall/c0"] == pytest.approx(2 / 3)
    assert scores["test/precision/c1"] == pytest.approx(1 / 2)
    assert scores["test/recall/c1"] == pytest.approx(1 / 2)
    assert scores["test/f1/c2"] == pytest.approx(1.0)
    # macro over the classes present (absent classes are ignored by torchmetrics' macro average)
    assert scores["test/f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    cm = computed["confmat"]
    assert cm[0].tolist()[:3] == [2, 1, 0] and cm[1].tolist()[:3] == [1, 1, 0] and cm.sum() == 6


def test_weighted_mean_weights_batches_by_size():
    from bloodcls.training.metrics import WeightedMean

    m = WeightedMean()
    m.update(torch.tensor(0.5), weight=16)
    m.update(torch.tensor(1.0), weight=4)
    assert float(m.compute()) == pytest.approx((0.5 * 16 + 1.0 * 4) / 20)
    m.update(torch.tensor(float("nan")), weight=1)
    assert torch.isnan(m.compute())  # a NaN loss is not dropped silently
