"""scripts/precise_bn_check.py, whose figures docs/results/validation-statistics.md quotes, on a finished synthetic run."""

import json
import runpy

import pytest

from tests.helpers import REPO

SCRIPT = runpy.run_path(str(REPO / "scripts" / "precise_bn_check.py"))


def test_precise_bn_check_reads_each_checkpoint_as_the_run_did_and_on_exact_statistics(reference_run, tmp_path):
    run_dir, results = reference_run
    out = tmp_path / "check.json"
    SCRIPT["main"]([str(run_dir), "--json", str(out)])
    [row] = json.loads(out.read_text())
    n_test, n_val = (results["data"]["split_sizes"][s] for s in ("test", "val"))
    # best.ckpt as saved reads what the run's test read (to one image: the run tested in its own precision) ...
    assert abs(row["best"]["saved"]["test"]["acc"] - 100 * results["test"]["acc"]) <= 100 / n_test + 0.01
    # ... and last.ckpt as saved reads what the run's last validation logged: the checkpoint is written after it
    last_logged = results["history"][-1]["val/acc"]
    assert row["last"]["epoch"] == results["efficiency"]["epochs_run"] == len(results["history"])
    assert abs(row["last"]["saved"]["val"]["acc"] - 100 * last_logged) <= 100 / n_val + 0.01
    # ... in the very loss early stopping monitored (val/loss: plain cross-entropy; a class-weighted loss here
    # once made the page's "kept against last" a different criterion from the one the run stopped on)
    assert row["last"]["saved"]["val"]["loss"] == pytest.approx(results["history"][-1]["val/loss"], abs=2e-4)
    # the synthetic split (192 training images) is smaller than recipe=study's 2,048-image sample, so the run's own
    # recomputation already was exact: recomputing again changes nothing
    assert row["best"]["exact"]["val"] == pytest.approx(row["best"]["saved"]["val"], abs=0.02)
    assert (row["recipe"], row["epochs"], row["max_epochs"]) == ("study", 2, 2)
    assert not row["early_stopped"] and not row["stopped_on_noise"]  # it ran its 2 epochs: nothing stopped it


def _row(seed, epochs, kept_loss, last_loss, recipe="study", acc=95.0):
    return {"run": f"baseline_aug_s{seed}", "experiment": "baseline_aug", "recipe": recipe, "seed": seed,
            "epochs": epochs, "max_epochs": 40,
            "early_stopped": epochs < 40, "stopped_on_noise": epochs < 40 and last_loss < kept_loss,
            "best": {"epoch": epochs - 5, "exact": {"val": {"loss": kept_loss}}, "saved": {"test": {"acc": acc}}},
            "last": {"exact": {"val": {"loss": last_loss}}}}


def test_the_choice_table_counts_stops_on_noise_from_validation_only():
    rows = [_row(0, 11, 0.19, 0.17, "study+running_bn", 93.5), _row(1, 18, 0.20, 0.21, "study+running_bn", 94.0),
            _row(2, 40, 0.15, 0.14, "study+running_bn", 96.0), _row(0, 30, 0.12, 0.13), _row(1, 25, 0.14, 0.15)]
    table = SCRIPT["choice_table"](rows)
    assert "| baseline_aug | `study+running_bn` | 3 | 11 / 18 / 40 | 6 / 13 / 35 | 0.1800 ± 0.0265 | 2 of 3 | 1 of 3 |" \
        in table  # the 40-epoch run did not stop early, so its better last epoch is not a stop on noise
    assert "| baseline_aug | `study` | 2 | 30 / 25 | 25 / 20 | 0.1300 ± 0.0141 | 2 of 2 | 0 of 2 |" in table
    assert "test" not in table  # the choice is made without the test split
    assert "| baseline_aug | `study+running_bn` | 0, 1, 2 | 94.50 ± 1.32 | 93.50 / 94.00 / 96.00 |" \
        in SCRIPT["test_table"](rows)


@pytest.mark.parametrize("size", [64, 128])
def test_the_pages_choice_tables_are_what_the_kept_evidence_prints(size):
    """docs/results/validation-statistics.md quotes the check's tables; they are regenerated from the kept JSON
    (``--from-json``), never typed: a figure edited by hand, or a pair added to the JSON and not to the page, fails."""
    rows = json.loads((REPO / "results" / "evidence" / f"pbn_check_{size}.json").read_text())
    page = (REPO / "docs" / "results" / "validation-statistics.md").read_text()
    assert SCRIPT["choice_table"](rows) in page
    assert SCRIPT["runs_table"](rows) in page


def test_scoring_again_replaces_a_runs_row_and_keeps_the_others(tmp_path):
    kept = tmp_path / "check.json"
    kept.write_text(json.dumps([_row(0, 11, 0.19, 0.17, "study+running_bn", 93.5), _row(0, 30, 0.12, 0.13)]))
    rows = SCRIPT["merged"](kept, [_row(0, 12, 0.18, 0.17, "study+running_bn", 93.0), _row(1, 25, 0.14, 0.15)])
    assert [(r["recipe"], r["seed"], r["epochs"]) for r in rows] == [
        ("study", 0, 30), ("study", 1, 25), ("study+running_bn", 0, 12)]


def test_the_check_scores_the_loss_early_stopping_monitors_not_the_class_weighted_one():
    """val/loss is the plain cross-entropy averaged over images; on an imbalanced split a class-weighted loss differs
    (here 0.6269 against 1.1269 with inverse-frequency weights), and the check must read what the run read."""
    import torch

    class Fixed(torch.nn.Module):  # every image gets logits (2, 0)
        def forward(self, x):
            return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)

    images = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 1])  # three of class 0, one of class 1 (wrong: it costs log(1 + e^2))
    score = SCRIPT["_score"](Fixed(), images, labels)
    assert score == {"acc": 75.0, "loss": pytest.approx(0.6269, abs=1e-4)}
