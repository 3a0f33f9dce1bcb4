"""scripts/set_scores.py, which chooses the default prediction-set score, on a finished synthetic run."""

import json
import runpy

import torch

from bloodcls.inference.finished_run import FinishedRun
from bloodcls.uncertainty.calibration import fit_temperature
from bloodcls.uncertainty.conformal import ConformalSets, SetOptions
from bloodcls.uncertainty.judgement import calibrated_proba
from bloodcls.uncertainty.outputs import network_outputs
from tests.helpers import REPO


def test_set_scores_tunes_on_one_half_fits_on_the_other_and_reports_on_test(reference_run, tmp_path, capsys):
    run_dir, _ = reference_run
    script = runpy.run_path(str(REPO / "scripts" / "set_scores.py"))
    out = tmp_path / "scores.json"
    # 48 validation images, 6 per class: halves of 3 per class, enough for class-conditional sets at 75 %
    assert script["main"]([str(run_dir), "--coverage", "0.75", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| score (target 75 %) | chosen (of 1 runs) | test coverage (%)")
    (result,) = json.loads(out.read_text())
    assert (result["tuning_images"], result["calibration_images"], result["test_images"]) == (24, 24, 80)
    assert result["chosen"] in script["SCORES"] and set(result["test"]) == set(script["SCORES"])
    assert f"| {result['chosen']} | 1 |" in text
    # the halves: disjoint, 3 images of every class each, the same for the same seed
    labels = FinishedRun.open(run_dir).load_splits(28)["val"][1].reshape(-1)
    tune, cal = script["halves"](labels, 0)
    assert not set(tune) & set(cal) and [int((labels[cal] == c).sum()) for c in range(8)] == [3] * 8
    assert all((a == b).all() for a, b in zip(script["halves"](labels, 0), (tune, cal), strict=True))
    # LAC's test figures, recomputed with the library: temperature from the tuning half, quantile from the other
    run = FinishedRun.open(run_dir)
    model, splits = run.load_model(), run.load_splits(28)
    val, test = network_outputs(model.net, splits["val"][0]), network_outputs(model.net, splits["test"][0])
    y_val, y_test = torch.as_tensor(labels).long(), torch.as_tensor(splits["test"][1]).reshape(-1).long()
    t = fit_temperature(val.logits[tune], y_val[tune])
    lac = ConformalSets.fit(calibrated_proba(val.logits[cal], t), y_val[cal], SetOptions(0.75, "lac"))
    inside = lac.sets(calibrated_proba(test.logits, t))
    covered = inside[torch.arange(80), y_test].double().mean().item()
    assert result["test"]["LAC"]["coverage"] == covered and result["test"]["LAC"]["mean_size"] == inside.sum(1).double().mean().item()
