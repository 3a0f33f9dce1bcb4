"""scripts/precise_bn_check.py, whose figures docs/results/study-table-cpu.md quotes, on a finished synthetic run."""

import json
import runpy

from tests.helpers import REPO


def test_precise_bn_check_scores_best_as_the_run_did_and_last_both_ways(reference_run, tmp_path, capsys):
    run_dir, results = reference_run
    out = tmp_path / "check.json"
    script = runpy.run_path(str(REPO / "scripts" / "precise_bn_check.py"))
    script["main"]([str(run_dir), "--json", str(out)])
    [row] = json.loads(out.read_text())
    # best.ckpt holds the statistics the run's test rewrote: scored again, it reads what the test read
    # (to one image: the run tested in its own precision).
    n_test = sum(map(sum, results["test"]["confusion_matrix"]))
    assert abs(row["best"]["precise"]["test"]["acc"] - 100 * results["test"]["acc"]) <= 100 / n_test + 0.01
    assert "running" not in row["best"]
    # last.ckpt: the epoch the run ended on, read with its running statistics and with recomputed ones.
    assert row["last"]["epoch"] == results["efficiency"]["epochs_run"]
    for kind in ("running", "precise"):
        for split in ("val", "test"):
            assert 0 <= row["last"][kind][split]["acc"] <= 100 and row["last"][kind][split]["loss"] > 0
    assert f"{row['run']} last (epoch {row['last']['epoch']}): running val" in capsys.readouterr().out
