"""`bloodcls evaluate`: scores by hand on fixed logits, an end-to-end run on a lab folder, each bad input refused."""

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bloodcls.analysis.evaluate_report import default_output
from bloodcls.cli.evaluate import main
from bloodcls.common.checkpoints import TRUST_KEY
from bloodcls.inference.evaluation import class_scores, score
from bloodcls.uncertainty.conformal import ConformalSets
from bloodcls.uncertainty.state import TrustState
from tests.synthetic import write_synthetic_folder

NAMES = ["a", "b", "c", "d"]  # "d": no image of it in the data, but predicted once
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2])
PREDS = [0, 0, 1, 1, 3, 2]
MARGIN = [10.0, 1.0, 1.0, 10.0, 10.0, 10.0]  # images 1 and 2 are predicted with a small margin


def logits() -> torch.Tensor:
    out = torch.zeros(len(PREDS), len(NAMES))
    out[torch.arange(len(PREDS)), torch.tensor(PREDS)] = torch.tensor(MARGIN)
    return out


def test_class_scores_by_hand():
    s = class_scores(logits(), TARGETS, NAMES)
    assert s["n"] == 6 and s["accuracy"] == pytest.approx(4 / 6)
    # a: tp 2, fn 1 -> P 1, R 2/3, F1 0.8; b: tp 1, fp 1, fn 1 -> 0.5 each; c: all right; d: absent, predicted once
    assert s["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]]
    rows = {r["class"]: r for r in s["per_class"]}
    assert rows["a"]["precision"] == pytest.approx(1) and rows["a"]["recall"] == pytest.approx(2 / 3)
    assert rows["a"]["f1"] == pytest.approx(0.8) and rows["a"]["support"] == 3
    assert (rows["b"]["precision"], rows["b"]["recall"], rows["b"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert rows["c"]["f1"] == pytest.approx(1) and rows["c"]["support"] == 1
    assert rows["d"] == {"class": "d", "precision": 0.0, "recall": None, "f1": None, "support": 0, "predicted": 1}
    assert s["classes_scored"] == 3 and s["macro_f1"] == pytest.approx((0.8 + 0.5 + 1) / 3)  # d left out


def test_a_class_never_predicted_has_no_precision():
    s = class_scores(torch.eye(2)[[0, 0]], torch.tensor([0, 1]), ["x", "y"])
    assert s["per_class"][1] == {"class": "y", "precision": None, "recall": 0.0, "f1": 0.0, "support": 1,
                                 "predicted": 0}
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_trust_scores_by_hand():
    features = torch.tensor([[0.0], [1.0], [3.0], [0.0], [0.0], [-4.0]])  # score 0.5 f^2: > 2 for images 2 and 5
    sets = ConformalSets("lac", 0.9, threshold=0.8, n_calibration=50)  # a class is in when its probability >= 0.2
    trust = TrustState(temperature=2.0, abstain_below=0.6, max_error=0.01, ood_means=torch.zeros(4, 1),
                       ood_precision=torch.eye(1), ood_threshold=2.0, id_accept=0.95, feature_layer="fc",
                       conformal=sets)
    report, judged = score(logits(), features, TARGETS, NAMES, trust)
    # confidence at T = 2: e^5 / (e^5 + 3) = 0.98 for a margin of 10, e^0.5 / (e^0.5 + 3) = 0.35 for 1 (the other
    # three classes 1 / (e^0.5 + 3) = 0.215 each)
    assert judged.confidence[1].item() == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 3))
    assert report["review"] == {"threshold": 0.6, "fires": 2, "share": pytest.approx(2 / 6),
                                "accepted_accuracy": pytest.approx(3 / 4)}  # accepted 0, 3, 4, 5: 4 is wrong
    assert report["gate"] == {"threshold": 2.0, "fires": 2, "share": pytest.approx(2 / 6)}
    assert report["trust"] == {"available": True, "temperature": 2.0, "unavailable": []}
    # sets over the 4 images the gate accepts (0, 1, 3, 4): {a}, {a, b, c, d}, {b}, {d}; image 4 (a b) is missed
    s = report["sets"]
    assert (s["images"], s["gate_refused_share"]) == (4, pytest.approx(2 / 6))
    assert (s["coverage"], s["mean_size"], s["singletons"]) == (0.75, 1.75, 0.75)
    assert s["per_class"] == [{"class": "a", "images": 2, "coverage": 1.0, "mean_size": 2.5},
                              {"class": "b", "images": 2, "coverage": 0.5, "mean_size": 1.0},
                              {"class": "c", "images": 0, "coverage": None, "mean_size": None},  # image 5: refused
                              {"class": "d", "images": 0, "coverage": None, "mean_size": None}]
    assert s["worst_class_coverage"] == 0.5 and s["score"] == "LAC" and s["target_coverage"] == 0.9
    # size 0-1: images 0, 3, 4 cover 2 of 3; size 4-10: image 1 covers: SSCV = max(0.9 - 2/3, 1 - 0.9)
    assert s["strata"] == [{"sizes": "0-1", "images": 3, "coverage": pytest.approx(2 / 3)},
                           {"sizes": "4-10", "images": 1, "coverage": 1.0}]
    assert s["sscv"] == pytest.approx(0.9 - 2 / 3)
    cal = report["calibration"]
    assert cal["before"]["nll"] == pytest.approx(F.cross_entropy(logits(), TARGETS).item(), rel=1e-5)
    assert cal["after"]["nll"] == pytest.approx(F.cross_entropy(logits() / 2, TARGETS).item(), rel=1e-5)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 1) / 3)


def test_without_a_trust_state_only_uncalibrated_scores():
    report, judged = score(logits(), torch.zeros(6, 1), TARGETS, NAMES, None)
    assert report["review"] is None and report["gate"] is None and report["calibration"]["after"] is None
    assert "bloodcls trust <run folder> --refit" in report["trust"]["why"]
    assert judged.confidence[0].item() == pytest.approx(math.exp(10) / (math.exp(10) + 3)) and not judged.calibrated


# -- the command ------------------------------------------------------------------------------------------------
LAB = ("basophil", "Eosinophils", "erythroblast", "ig", "blast")  # synthetic classes 0-4; ig needs the map; blast unknown


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = write_synthetic_folder(tmp_path_factory.mktemp("data") / "lab2", n_per_class=5, size=28, classes=LAB)
    (root / "basophil" / "notes.txt").write_text("not an image\n")
    classes = root.parent / "classes.yaml"
    classes.write_text("ig: immature_granulocytes\n")
    return root, classes


def test_cli_writes_the_report_predictions_and_figure(trained_checkpoint, lab, tmp_path, capsys):
    root, classes = lab
    out = tmp_path / "out"
    assert main([str(trained_checkpoint), str(root), "--classes", str(classes), "--out", str(out), "--json",
                 "--batch-size", "7"]) == 0
    report = json.loads(capsys.readouterr().out)  # stdout is the JSON document and nothing else
    assert report["n"] == 20 and report["classes"]["unknown"] == {"blast": 6}  # counted apart, never decoded (broken.png too)
    assert "ig -> immature_granulocytes" in report["classes"]["matched"]
    assert report["skipped"] == [{"path": "basophil/notes.txt", "reason": "not a .png/.jpg/.jpeg/.tif/.tiff/.bmp file"}]
    assert sum(map(sum, report["confusion_matrix"])) == 20 and report["classes_scored"] == 4
    per_class = {r["class"]: r for r in report["per_class"]}
    assert per_class["eosinophil"]["support"] == 5 and per_class["monocyte"]["support"] == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["accuracy"] == report["accuracy"] and saved["files"]["confusion"] == str(out / "confusion.png")
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and {r["label"] for r in rows} == {"basophil", "Eosinophils", "erythroblast", "ig"}
    assert {r["true"] for r in rows if r["label"] == "ig"} == {"immature_granulocytes"}
    assert sum(r["correct"] == "True" for r in rows) / 20 == pytest.approx(report["accuracy"])
    # the report's figures are the rows' (the same judgement): review, gate, and sets over the accepted images
    assert report["review"]["fires"] == sum(r["review"] == "True" for r in rows)
    assert report["gate"]["fires"] == sum(r["gate_fires"] == "True" for r in rows) and report["trust"]["available"]
    assert all(r["calibrated"] == "True" for r in rows)
    accepted = [r for r in rows if r["gate_fires"] == "False"]
    assert all(r["prediction_set"] == "" for r in rows if r["gate_fires"] == "True")
    sets = report["sets"]  # the training run fitted 90 % sets on its validation split
    assert sets["target_coverage"] == 0.9 and sets["images"] == len(accepted)
    assert sets["coverage"] == pytest.approx(sum(r["true"] in r["prediction_set"].split("|") for r in accepted)
                                             / len(accepted))
    assert sets["mean_size"] == pytest.approx(sum(len(r["prediction_set"].split("|")) for r in accepted) / len(accepted))
    assert all(r["predicted"] in r["prediction_set"].split("|") for r in accepted)
    per_class = {c["class"]: c for c in sets["per_class"]}
    eos = [r for r in accepted if r["true"] == "eosinophil"]
    assert per_class["eosinophil"]["images"] == len(eos) and per_class["monocyte"]["images"] == 0
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_report_and_a_checkpoint_without_trust(trained_checkpoint, lab, tmp_path, capsys):
    root, _ = lab
    plain = tmp_path / "old.ckpt"
    contents = torch.load(trained_checkpoint, weights_only=True)
    contents.pop(TRUST_KEY)
    torch.save(contents, plain)
    assert main([str(plain), str(root), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "15 images scored: accuracy" in text and "macro-F1" in text  # ig unmatched without the map
    assert "not scored, classes the model does not know: blast (6), ig (5)" in text
    assert "(no image of this class: not in the macro mean)" in text and "note: this checkpoint has no trust" in text
    assert "review (" not in text and f"written: {tmp_path / 'o' / 'report.json'}" in text
    assert json.loads((tmp_path / "o" / "report.json").read_text())["review"] is None


def test_default_output_is_in_the_run_folder(trained_checkpoint, tmp_path):
    run = trained_checkpoint.parent.parent
    assert default_output(trained_checkpoint, tmp_path / "lab2").folder == run / "evaluate" / "lab2"
    assert default_output(trained_checkpoint, tmp_path / "lab.csv").folder.name == "lab"
    loose = tmp_path / "model.ckpt"
    assert default_output(loose, tmp_path / "lab2").folder.as_posix() == "evaluate/lab2"


@pytest.mark.parametrize("case, words", [
    ("missing checkpoint", "does not exist"),
    ("broken checkpoint", "not a readable PyTorch checkpoint"),
    ("malicious checkpoint", "Refusing to load"),
    ("missing folder", "does not exist"),
    ("empty folder", "is empty (no class folders)"),
    ("loose images", "holds image files but no class folders"),
    ("no class in common", "None of the classes of"),
    ("bad map", "is not valid YAML"),
    ("map to an unknown class", "which the model does not have"),
    ("batch size", "--batch-size 0"),
])
def test_bad_inputs_are_one_paragraph_exit_2(case, words, trained_checkpoint, lab, tmp_path, capsys):
    root, _ = lab
    ckpt, data, extra = str(trained_checkpoint), str(root), []
    if case == "missing checkpoint":
        ckpt = str(tmp_path / "nope.ckpt")
    elif case == "broken checkpoint":
        (tmp_path / "bad.ckpt").write_text("not a checkpoint\n")
        ckpt = str(tmp_path / "bad.ckpt")
    elif case == "malicious checkpoint":
        import pickle

        from tests.test_checkpoint import MakesAFile

        (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": MakesAFile(tmp_path / "ran")}))
        ckpt = str(tmp_path / "evil.ckpt")
    elif case == "missing folder":
        data = str(tmp_path / "absent")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    elif case == "loose images":
        (tmp_path / "loose").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "loose" / "cell.png")
        data = str(tmp_path / "loose")
    elif case == "no class in common":
        data = str(write_synthetic_folder(tmp_path / "other", n_per_class=2, size=8, classes=("blast", "smudge")))
    elif case == "bad map":
        (tmp_path / "m.yaml").write_text("ig: [unclosed\n")
        extra = ["--classes", str(tmp_path / "m.yaml")]
    elif case == "map to an unknown class":
        (tmp_path / "m.yaml").write_text("ig: megakaryocyte\n")
        extra = ["--classes", str(tmp_path / "m.yaml")]
    else:
        extra = ["--batch-size", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main([ckpt, data, "--out", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and words in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert not (tmp_path / "ran").exists()
    assert "data.path" not in captured.err  # train's config key means nothing to a user of evaluate
