"""A model bundle's model card (README.md), generated from the records of the run the model came from.

:func:`run_records` takes what a card needs from a finished run folder (results.json without its per-image
predictions and curves, the trust report, the shift suite's record, the run's overrides) into the plain dict a
bundle's config.json keeps under ``records``, so a bundle re-saved later (adapted, re-calibrated, pushed) writes
the same card. :func:`model_card` writes the card from config.json alone: intended use, how to run it, what an
image goes through, training data and split, recipe and seed, test scores per class with device, commit and date,
calibration, review and gate figures, robustness where measured, the trust state the model carries, and its known
limits (another lab's images; for an adapted model, that it is for its lab).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from bloodcls.common.markdown import md_table
from bloodcls.inference.finished_run import FinishedRun

DROPPED = {"predictions", "labels", "reliability", "curve", "history", "summary"}  # per-image or per-step: not a card's
NOT_A_DEVICE = ("**Not a diagnostic device.** A research and teaching model: it has not been validated for clinical "
                "use, it is not a medical device, and no diagnosis or treatment decision may rest on it. A person "
                "qualified to read blood smears must check every answer.")
OWN_IMAGES = "docs/results/own-images.md"  # the second-lab measurements, in the bloodcls repository


def _trimmed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _trimmed(v) for k, v in value.items() if k not in DROPPED}
    return value


def run_records(run: FinishedRun) -> dict[str, Any] | None:
    """What a card is generated from, out of a run folder's records (None without a results.json)."""
    if run.results is None:
        return None
    results = _trimmed({k: v for k, v in run.results.raw.items() if k != "config"})
    config = run.results.config or {}
    results["config"] = {"data": config.get("data"), "recipe_name": config.get("recipe_name")}  # the demo reads these
    overrides = None
    if run.paths.hydra_overrides.is_file():
        import yaml

        overrides = [str(o) for o in yaml.safe_load(run.paths.hydra_overrides.read_text()) or []]
    return {"source": str(run.folder), "results": results,
            "trust_report": _trimmed(run.trust.report) if run.trust is not None else None,
            "robustness": _trimmed(run.robustness.raw) if run.robustness is not None else None,
            "overrides": overrides}


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def model_card(config: dict[str, Any], card_data: ModelCardData) -> ModelCard:
    """The card for a bundle's config.json; ``card_data`` is the library's metadata (library name, tags)."""
    r = (config.get("records") or {}).get("results") or {}
    data = ModelCardData(**card_data.to_dict(), model_name=r.get("run_name") or config["architecture"]["name"],
                         eval_results=_eval_results(r) or None)
    body = "\n\n".join(part for part in (
        _title(config, r), "## Intended use\n\n" + _intended(config), "## How to use\n\n" + _usage(config),
        "## Input\n\n" + _input(config), "## Training data and split\n\n" + _data(r), "## Recipe\n\n" + _recipe(config),
        "## Test scores\n\n" + _scores(config, r), "## Calibration, review and the not-a-cell gate\n\n" + _trust(config),
        "## Robustness under the shift suite\n\n" + _robustness(config), "## Known limitations\n\n" + _limits(config),
        "## Files\n\n" + _files(config)) if part)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _eval_results(r: dict[str, Any]) -> list[EvalResult]:
    test = r.get("test") or {}
    if test.get("acc") is None:
        return []
    common = {"task_type": "image-classification", "dataset_type": _dataset(r)[0], "dataset_name": _dataset(r)[1],
              "dataset_split": "test"}
    found = [EvalResult(metric_type="accuracy", metric_value=test["acc"], **common)]
    if test.get("f1") is not None:
        found.append(EvalResult(metric_type="f1", metric_name="macro F1", metric_value=test["f1"], **common))
    return found


def _dataset(r: dict[str, Any]) -> tuple[str, str]:
    from bloodcls.data.sources import is_folder_run

    data = (r.get("config") or {}).get("data") or {}
    if is_folder_run(data):
        return "folder", f"a lab's folder of labelled images ({data.get('path')})"
    return "bloodmnist", f"BloodMNIST at {r.get('img_size')} px (MedMNIST v2; PBC dataset)"


def _title(config: dict[str, Any], r: dict[str, Any]) -> str:
    arch = config["architecture"]
    name = arch["arguments"].get("arch") or arch["name"]
    return (f"# {r.get('run_name') or arch['name']}: a blood-cell image classifier\n\n"
            f"A `{name}` network (bloodcls model `{arch['name']}`) that sorts single-cell crops of peripheral blood "
            f"smears into {len(config['class_names'])} classes: {', '.join(config['class_names'])}. Written by "
            "`bloodcls bundle`; its judgement is that of `bloodcls predict`: a calibrated class probability, a review "
            "flag, a not-a-cell gate and a conformal prediction set.")


def _intended(config: dict[str, Any]) -> str:
    return (f"{NOT_A_DEVICE}\n\nIt is meant for studying how such classifiers behave: on single, centred cells "
            "imaged like its training data, one cell per image. Predictions below the review threshold, images the "
            "gate turns away and sets of more than one class say where a person must look.")


def _usage(config: dict[str, Any]) -> str:
    return ("```python\nfrom bloodcls import Classifier\n\nclf = Classifier.load(\"<this folder>\")\n"
            "rows = clf.predict([\"cell.png\"])  # class, confidence, abstain, in_distribution, prediction_set, "
            "verdict\n```\n\nor `bloodcls predict <this folder> cell.png --json`. Without bloodcls, "
            "`model.safetensors` holds the weights and `config.json` says what the network is and what it takes.")


def _input(config: dict[str, Any]) -> str:
    i = config["input"]
    return (f"{i['tensor']}. Each image file: {i['color']}; {i['orientation']}; {i['crop']}; resized to {i['size']} x "
            f"{i['size']} px, {i['interpolation']}; {i['scale']}. Normalisation: {i['normalisation']}. Output: "
            f"{config['output']['shape']} {config['output']['name']}; probabilities {config['output']['probabilities']}.")


def _from_one(epoch: Any) -> str:
    """The records count epochs from 0; the card, like the progress lines and the tables, from 1."""
    return str(epoch + 1) if isinstance(epoch, int) else "?"


def _device(env: dict[str, Any]) -> str:
    """The device with the processor's name where the run recorded it (the published records' wording)."""
    device, processor = env.get("device", "?"), env.get("processor")
    return f"{device}, {processor}" if processor and str(device).startswith("CPU") else str(device)


def _official_md5(size: Any) -> str | None:
    try:
        from bloodcls.data.files import official_md5

        return official_md5(int(size))
    except Exception:  # noqa: BLE001 - no medmnist INFO here: the card then does not claim either way
        return None


def _data(r: dict[str, Any]) -> str:
    if not r:
        return "Unknown: the model was bundled without the records of the run that trained it."
    data, split = r.get("data") or {}, (r.get("data") or {}).get("split_sizes") or {}
    sizes = ", ".join(f"{k} {v}" for k, v in split.items())
    kind, where = _dataset(r)
    if kind == "folder":
        split_kind = "the run's stratified, seeded split (its split.csv)"
    elif data.get("md5") and data.get("md5") != _official_md5(r.get("img_size")):
        split_kind = ("the official split sizes and class counts, in a file built from the PBC source images (its MD5 is "
                      "not the official release's), so not necessarily the official membership: comparable with, not "
                      "identical to, published BloodMNIST figures")
    else:
        split_kind = "BloodMNIST's official split"
    return (f"{where}; file `{data.get('path')}`" + (f" (MD5 {data.get('md5')})" if data.get("md5") else "")
            + f". Split: {sizes or 'unknown'} images, {split_kind}. The test images were used only to score the "
            "finished model.")


def _recipe(config: dict[str, Any]) -> str:
    rec = config.get("records") or {}
    r = rec.get("results") or {}
    if not r:
        return "Unknown (no run records)."
    eff = r.get("efficiency") or {}
    lines = [f"Experiment `{r.get('experiment')}`, recipe `{r.get('recipe') or 'keras (before recipes)'}`, "
             f"seed {r.get('seed')}; {eff.get('epochs_run', '?')} epochs (best {_from_one(eff.get('best_epoch'))}), "
             f"{eff.get('params_trainable', '?'):,} trainable parameters; augmentation {'on' if r.get('augment') else 'off'}."
             if isinstance(eff.get("params_trainable"), int) else
             f"Experiment `{r.get('experiment')}`, recipe `{r.get('recipe')}`, seed {r.get('seed')}."]
    if rec.get("overrides"):
        lines.append(f"Reproduce: `python train.py {' '.join(rec['overrides'])}` (run `{r.get('run_name')}`).")
    if r.get("init_from"):
        lines.append(f"Fine-tuned from `{r['init_from'].get('checkpoint')}` (`init_from=`).")
    return " ".join(lines)


def _scores(config: dict[str, Any], r: dict[str, Any]) -> str:
    test = r.get("test") or {}
    if test.get("acc") is None:
        return "Unknown: no test scores were recorded for this model."
    env = r.get("environment") or {}
    n = ((r.get("data") or {}).get("split_sizes") or {}).get("test")
    tta = (r.get("test_tta") or {}).get("acc")
    head = (f"Test accuracy **{_pct(test['acc'])}**, macro F1 {_pct(test.get('f1'))}"
            + (f" ({_pct(tta)} with the 8 rotations/flips averaged)" if tta is not None else "")
            + f" on the {n or '?'} test images; measured on {_device(env)}, commit `{env.get('commit', '?')}`, "
            f"{str(env.get('date', '?'))[:10]}.")
    if config.get("adapted_on"):
        head += " These are the scores of the model before it was adapted (see Known limitations)."
    scores = test.get("scores") or {}
    rows = [[c, *(_pct(scores.get(f"test/{m}/{c}"), 1) for m in ("precision", "recall", "f1"))]
            for c in config["class_names"] if f"test/f1/{c}" in scores]
    return head + ("\n\n" + "\n".join(md_table(["class", "precision", "recall", "F1"], rows)) if rows else "")


def _trust(config: dict[str, Any]) -> str:
    rec = config.get("records") or {}
    report = rec.get("trust_report") or (rec.get("results") or {}).get("trust") or {}
    state = config.get("trust")
    lines = []
    if report:
        cal, sel, gate = report.get("calibration") or {}, report.get("selective") or {}, report.get("gate") or {}
        far = (gate.get("far_ood") or {}).get("all") or {}
        sets = report.get("sets") or {}
        lines.append(f"Measured by the run on its test split: expected calibration error {_pct((cal.get('before') or {}).get('ece'))} "
                     f"before temperature scaling, {_pct((cal.get('after') or {}).get('ece'))} after (temperature "
                     f"{report.get('temperature', 0):.3g}); the review flag keeps {_pct(sel.get('coverage'), 1)} of the "
                     f"images, {_pct(sel.get('accepted_acc'))} of them right; the not-a-cell gate turns away "
                     f"{_pct(gate.get('fires_on_test'), 1)} of the clean test cells and {_pct(far.get('fires'), 1)} of "
                     f"{far.get('n_ood', '?')} images that are not blood cells (photos, plain colours, noise; AUROC "
                     f"{far.get('auroc', float('nan')):.4f}).")
        if sets:
            lines.append(f"Prediction sets ({sets.get('score')}, {_pct(sets.get('target_coverage'), 0)} asked): they "
                         f"hold the true class for {_pct(sets.get('coverage'), 1)} of the test images the gate "
                         f"accepts, {sets.get('mean_size', float('nan')):.2f} classes on average, worst class "
                         f"{_pct(sets.get('worst_class_coverage'), 1)}.")
    if state is None:
        lines.append("This model carries no trust state: its probabilities are uncalibrated, and there is no review "
                     "threshold, gate or prediction set.")
        return "\n\n".join(lines)
    sets = state.get("conformal")
    lines.append(f"The trust state it carries: temperature {state['temperature']:.4g}; review below "
                 f"{_pct(state['abstain_below'])} calibrated confidence"
                 + (f" ({_pct(state['abstain_below_tta'])} with --tta)" if state.get("abstain_below_tta") is not None else "")
                 + f"; gate threshold {state['ood_threshold']:.4g} on the Mahalanobis distance of the features of layer "
                 f"`{state['feature_layer']}` (accepting {_pct(state['id_accept'], 0)} of validation); "
                 + (f"prediction sets {sets['method']} at {_pct(sets['coverage'], 0)} coverage, fitted on "
                    f"{sets['n_calibration']} images." if sets else "no prediction sets."))
    if state.get("calibrated_on"):
        c = state["calibrated_on"]
        lines.append(f"Re-calibrated with `bloodcls calibrate` on {c.get('images')} images of `{c.get('data')}` "
                     f"({c.get('date')}): the trust state is that lab's, and the figures measured by the run above "
                     "describe the state fitted in training, not this one.")
    return "\n\n".join(lines)


def _robustness(config: dict[str, Any]) -> str:
    rob = (config.get("records") or {}).get("robustness")
    if not rob:
        return ("Not measured for this run (`bloodcls robustness <run folder>` scores it under 13 lab shifts at 5 "
                "severities).")
    per = (rob.get("per_severity") or {}).get("acc") or []
    rows = [[str(s), _pct(a, 1)] for s, a in zip(rob.get("severities") or [], per, strict=False)]
    return (f"Accuracy on {rob.get('n_images', '?')} test images: clean {_pct(rob.get('clean_acc'))}, mean over every "
            f"shift and severity {_pct(rob.get('mean_acc'))}, worst {_pct(rob.get('worst_acc'))} "
            f"(`{rob.get('worst')}`).\n\n" + "\n".join(md_table(["severity", "mean accuracy"], rows)))


def _limits(config: dict[str, Any]) -> str:
    names = config["class_names"]
    items = [f"It knows {len(names)} classes only; a cell of any other kind still gets one of them (the gate turns "
             "away images unlike the training cells, not unknown cell types).",
             "Another lab's stain, lamp or camera can cost much of its accuracy: on the project's own second lab "
             "(BloodMNIST test cells under stain and lamp shifts) `baseline_64` models lost more than half of theirs, "
             "were confidently wrong, and their gate turned away nearly every cell of that lab "
             f"({OWN_IMAGES} in the bloodcls repository). Score it on labelled images of your lab first (`bloodcls "
             "evaluate`), then adapt (`bloodcls adapt`), re-calibrate (`bloodcls calibrate`) or fine-tune "
             "(`init_from=`) as that page shows."]
    adapted = config.get("adapted_on")
    if adapted:
        trust = adapted.get("trust") or {}
        calibrated = (config.get("trust") or {}).get("calibrated_on")
        stale = ("; they were re-calibrated on labelled images of the lab since" if calibrated
                 and calibrated != trust.get("calibrated_on_before") else " and are unverified, and its prediction sets "
                 "were removed: `bloodcls calibrate` on labelled images of the lab refits them")
        items.append(f"**Adapted to one lab.** Its BatchNorm statistics were recomputed (`bloodcls adapt`) on "
                     f"{adapted.get('images')} unlabelled images of `{adapted.get('data')}` ({adapted.get('date')}): it "
                     "is for that lab's images. Its not-a-cell gate (training statistics) now sees cells through that "
                     "lab's statistics, so it can refuse BloodMNIST's own clean cells (\"An adapted model is for its lab\" in "
                     "docs/guide/own-images.md of the bloodcls repository): right for a model of that lab, and a reason "
                     "not to use it elsewhere. Its "
                     f"{' and '.join(trust.get('carried_unverified') or ['temperature'])} were fitted before "
                     f"adaptation{stale}." + (f" WARNING: {adapted['warning']}" if adapted.get("warning") else ""))
    return "\n".join(f"- {item}" for item in items)


def _files(config: dict[str, Any]) -> str:
    written = config.get("written") or {}
    source = (config.get("records") or {}).get("source")
    return ("`model.safetensors` (weights, hyper-parameters, trust state; no pickle), `config.json` (this card's "
            "source: the description above and the run's records), `README.md` (this card), and `model.onnx` where "
            f"`--onnx` was given. Written from `{written.get('from')}`"
            + (f" (run folder `{source}`)" if source else "")
            + f" at commit `{written.get('commit')}`, {str(written.get('date'))[:10]}.")
