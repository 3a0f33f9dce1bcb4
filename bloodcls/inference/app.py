"""Try a trained model in the browser: drop in a cell image, see the 8 probabilities, where the model looked and
whether to trust the answer.

    bloodcls demo <checkpoint or run folder> [--port 7860] [--host 127.0.0.1]
    make demo CKPT=outputs/runs/<date>/<time>_skip_s0_<id>

A local Gradio app. An image is prepared by :mod:`bloodcls.inference.classify`'s own code (same reader, centre
square, bicubic resize, the same judgement via ``judge_images``: with TTA the set comes from the TTA
probabilities), so the page and ``bloodcls predict --json`` agree. With the checkpoint's trust state, an image the out-of-distribution gate rejects
gets "does not look like a BloodMNIST cell image" instead of a class, and one below the review threshold "uncertain:
have a person review it" with the best guess; a checkpoint written before trust states names the class as before,
with a note. The model is loaded once; a bad file gets a message in the page and the server keeps going. Beside
the answer: the run's recipe, test accuracy, calibration and gate scores and per-class F1 from its
``results.json``, so a user knows how far to trust it. A research tool, not a diagnostic device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcls.common.bundle import is_bundle
from bloodcls.common.markdown import md_table
from bloodcls.common.records import ResultsRecord
from bloodcls.common.rundir import RunPaths
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel
from bloodcls.inference.classifier import Classifier
from bloodcls.inference.classify import NOT_A_CELL, REVIEW, judge_images, set_text, to_tensor
from bloodcls.inference.images import MAX_PIXELS, ImageError, load_image
from bloodcls.inference.saliency import cam_layer, overlay, saliency_map

PREDICTED = "predicted class"
VIEW_PX = 256  # images are shown at this size (nearest-neighbour, so the model's pixels stay visible)
NO_TRUST_NOTE = "uncalibrated: calibration and the not-a-cell gate are unavailable for this checkpoint"
DISCLAIMER = ("**Research tool, not a diagnostic device.** It was trained on BloodMNIST (PBC dataset, one "
              "hospital's smears and scanner); its answer on other images may be wrong without warning.")


@dataclass
class DemoModel:
    """The loaded network and what the page says about it."""

    trained: TrainedModel
    results: ResultsRecord | None = None  # the run's results.json, when there is one
    examples: list[Path] = field(default_factory=list)

    @cached_property
    def cam(self) -> tuple | None:
        """Where the maps are taken (found once per model, not per request)."""
        return cam_layer(self.trained.net, self.trained.img_size)


def load_demo_model(target: str | Path) -> DemoModel:
    """A run folder (its best.ckpt), a checkpoint or a model bundle, with the run's results where there are any (a
    bundle carries them in its config.json; a checkpoint in a run folder finds them there)."""
    target = Path(target).expanduser()
    if target.is_dir() and not is_bundle(target) and not RunPaths(target).checkpoints.is_dir():
        raise UserError(f"{target} is not a run folder (no checkpoints/ in it) and not a model bundle: pass a run folder "
                        "(outputs/runs/<date>/<time>_<name>_<id>), its checkpoints/best.ckpt, or a folder written by "
                        "`bloodcls bundle`.")
    clf = Classifier.load(target)
    results = (clf.records or {}).get("results")
    return DemoModel(trained=clf.model, results=ResultsRecord.from_dict(results) if results else None)


def disclaimer(model: DemoModel) -> str:
    """:data:`DISCLAIMER`, naming the user's own folder for a model trained on one (data=folder)."""
    from bloodcls.data.sources import is_folder_run

    data = (model.results.config.get("data") if model.results is not None else None) or {}
    if not is_folder_run(data):
        return DISCLAIMER
    return (f"**Research tool, not a diagnostic device.** It was trained on the images of `{data.get('path')}`; "
            "its answer on images unlike them may be wrong without warning.")


def model_facts(model: DemoModel) -> str:
    """Markdown: architecture, input size, trust state, recipe, test accuracy, trust scores and per-class F1."""
    t, r = model.trained, model.results
    arch = t.hparams.get("arch") or t.name
    lines = [f"**Model:** {arch} ({t.name}), {t.img_size} px input, checkpoint `{t.path.name}`"
             + (f" (epoch {t.info['epoch']})" if "epoch" in t.info else "")]
    lines.append(trust_facts(t))
    if r is None:
        lines.append("No results.json beside this checkpoint: its test scores are unknown.")
        return "\n\n".join(lines)
    env = r.environment
    lines.append(f"**Run:** {r.run_name} · recipe {r.recipe or 'pre-recipe'} · seed {r.seed} · "
                 f"{env.get('device', '?')} · commit {env.get('commit', '?')} · {str(env.get('date', '?'))[:10]}")
    test = r.test
    if test.get("acc") is not None:
        tta = (r.test_tta or {}).get("acc")
        lines.append(f"**Test accuracy:** {100 * test['acc']:.2f} %" + (f" ({100 * tta:.2f} % with TTA)" if tta else "")
                     + f" · macro F1 {100 * (test.get('f1') or 0):.2f} % on the test split of the run's data")
    if measured := trust_scores(r.trust or {}):
        lines.append(measured)
    if test.get("acc") is not None:
        scores = test.get("scores") or {}
        rows = [[c, f"{100 * scores[f'test/f1/{c}']:.1f}"] for c in t.class_names if f"test/f1/{c}" in scores]
        if rows:
            lines.append("\n".join(md_table(["class", "test F1 (%)"], rows)))
    return "\n\n".join(lines)


def trust_scores(trust: dict[str, Any]) -> str:
    """Markdown: how the run measured its calibration, abstention and gate on its test split ("" if it did not)."""
    cal, sel, gate = trust.get("calibration") or {}, trust.get("selective") or {}, trust.get("gate") or {}
    parts = []
    if isinstance(cal.get("before"), dict) and isinstance(cal.get("after"), dict):
        parts.append(f"ECE {100 * cal['before']['ece']:.2f} % → {100 * cal['after']['ece']:.2f} % calibrated")
    if sel.get("acc_at_90") is not None:
        parts.append(f"accuracy at 90 % coverage {100 * sel['acc_at_90']:.2f} %")
    if gate.get("fires_on_test") is not None:
        parts.append(f"the gate turns away {100 * gate['fires_on_test']:.1f} % of clean test images")
    aurocs = [v["auroc"] for v in (gate.get("far_ood") or {}).values() if isinstance(v, dict) and "auroc" in v]
    if aurocs:
        parts.append(f"far-OOD AUROC ≥ {min(aurocs):.3f}")
    return ("**Trust on the test split:** " + " · ".join(parts)) if parts else ""


def _view(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((VIEW_PX, VIEW_PX), Image.NEAREST))


def trust_facts(t: TrainedModel) -> str:
    """Markdown: the checkpoint's temperature and thresholds, so a user can read the headline's numbers."""
    trust = t.trust
    if trust is None:
        return f"**Trust:** {NO_TRUST_NOTE} (written before they existed): the probabilities are the raw softmax."
    return (f"**Trust:** probabilities calibrated (temperature {trust.temperature:.3g}) · below "
            f"{pct(trust.abstain_below)} confidence: *{REVIEW}* (chosen for ≤ {pct(trust.max_error)} validation "
            f"error) · gate score above {trust.ood_threshold:.3g}: *{NOT_A_CELL}* (set to let "
            f"at least {pct(trust.id_accept)} of cell images through)")


def pct(p: float) -> str:
    """A percentage with 2 decimals, more where 2 would round a value under 1 up to 100.00 %."""
    text = f"{100 * p:.2f}"
    if text == "100.00" and p < 1:
        text = f"{100 * p:.6f}".rstrip("0")
    return f"{text} %"


def analyse(model: DemoModel, path: str | Path, tta: bool = False, target: str = PREDICTED,
            max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """Everything the page shows for one file; an unusable file raises :class:`ImageError`.

    ``row`` holds predict's JSON fields for the image (same calibration, gate and ``verdict``)."""
    t = model.trained
    image = load_image(path, t.img_size, max_pixels=max_pixels)
    judged = judge_images(t, image[None], tta=tta)
    row = judged.row(0, t.class_names)
    best = t.class_names.index(row["class"])
    cam_class = best if target in (None, "", PREDICTED) else t.class_names.index(target)
    cam = saliency_map(t.net, to_tensor(image[None]), target=cam_class, layer=model.cam)
    return {
        **row,
        "row": row,
        "tta": tta,
        "set_coverage": judged.set_coverage,
        "seen": _view(image),
        "cam": _view(overlay(image, cam.heat)),
        "cam_class": t.class_names[cam_class],
        "cam_method": cam.method,
    }


def headline(model: DemoModel, a: dict[str, Any]) -> str:
    """The verdict line: no class named when the gate fires, a review request below the threshold."""
    trust, tta = model.trained.trust, " · TTA x8" if a["tta"] else ""
    cam = f" · map for **{a['cam_class']}** ({a['cam_method']})"
    if a["verdict"] == "not_a_cell":
        return (f"**{NOT_A_CELL}**: no class is given (gate score {a['ood_score']:.3g} > {trust.ood_threshold:.3g})."
                " Try a single stained blood cell, imaged like the PBC smears.")
    named = f"**{a['class']}** ({pct(a['probability'])})"
    if len(a.get("prediction_set") or []) > 1:  # the classes that hold the true one at the fitted coverage
        tta = f" · {set_text(a['prediction_set'], a['set_coverage'])}{tta}"
    if a["verdict"] == "review":
        return f"**{REVIEW}** · best guess {named}, below {pct(trust.review_threshold(a['tta']))}{tta}{cam}"
    note = f" · {NO_TRUST_NOTE}" if a["verdict"] == "unchecked" else ""
    return named + tta + cam + note


def probability_table(probabilities: dict[str, float]) -> str:
    rows = sorted(probabilities.items(), key=lambda kv: -kv[1])
    return "\n".join(md_table(["class", "probability"], [[c, f"{100 * p:.2f} %"] for c, p in rows]))


def example_images(model: TrainedModel, root: str | Path | None, folder: Path) -> list[Path]:
    """One test-split image per class as PNG files: from the BloodMNIST file for the model's size when present, or,
    for a model trained on a folder of the user's images, from that folder's test split (the run's split.csv)."""
    from bloodcls.common.rundir import RESULTS_FILE, read_json, run_folder_of
    from bloodcls.data import default_root, file_name, load_npz
    from bloodcls.data.sources import is_folder_run, run_splits

    run = run_folder_of(model.path, strict=False)
    data = ((read_json(run / RESULTS_FILE) or {}).get("config") or {}).get("data") if run else None
    path = Path(root or default_root()).expanduser() / file_name(model.img_size)
    if not is_folder_run(data) and not path.is_file():
        return []
    try:
        if is_folder_run(data):
            images, labels = run_splits(run, data, model.img_size)[0]["test"]
        else:
            images, labels = load_npz(path, model.img_size)["test"]
    except (UserError, OSError, ValueError, KeyError):
        return []
    out = []
    for c, name in enumerate(model.class_names):
        idx = np.flatnonzero(labels.reshape(-1) == c)
        if idx.size:
            out.append(folder / f"test_{idx[0]:04d}_{name}.png")
            Image.fromarray(images[idx[0]]).save(out[-1])
    return out


def build_app(model: DemoModel, max_pixels: int = MAX_PIXELS):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    t = model.trained

    def run(path: str | None, tta: bool, target: str):
        """(headline, probabilities, table, seen, map, predict's JSON row, path to remember): never raises, so the
        server lives on."""
        if not path:
            return "Drop a cell image above (PNG, JPEG, TIFF or BMP).", None, "", None, None, None, None
        try:
            a = analyse(model, path, tta=tta, target=target, max_pixels=max_pixels)
        except UserError as err:  # a checkpoint whose review threshold cannot judge TTA
            return f"**Cannot use TTA:** {err}", None, "", None, None, None, None
        except ImageError as err:
            return (f"**Cannot use this file:** {Path(path).name}: {err}. Try a PNG, JPEG, TIFF or BMP image of "
                    "one cell."), None, "", None, None, None, None
        table = probability_table(a["probabilities"])
        if a["verdict"] == "not_a_cell":  # the label's headline would name a class: show the refusal there too
            label, table = NOT_A_CELL, f"*The classifier's scores anyway (not meaningful for this image):*\n\n{table}"
        else:
            label = a["probabilities"]
        return headline(model, a), label, table, a["seen"], a["cam"], {"tta": tta, **a["row"]}, path

    with gr.Blocks(title="bloodcls demo") as app:
        gr.Markdown("## Blood-cell classifier\n" + disclaimer(model))
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Cell image (PNG, JPEG, TIFF, BMP)", type="filepath", elem_id="upload")
                pasted = gr.Image(label="…or paste one", sources=["clipboard"], type="filepath", image_mode=None,
                                  format="png", elem_id="paste")
                tta = gr.Checkbox(label="Average over the 8 rotations/flips (TTA)", value=False, elem_id="tta")
                target = gr.Dropdown([PREDICTED, *t.class_names], value=PREDICTED, label="Class-activation map for",
                                     elem_id="target")
                gr.Markdown(model_facts(model), elem_id="facts")
            with gr.Column():
                verdict = gr.Markdown(elem_id="verdict")
                label = gr.Label(num_top_classes=len(t.class_names), label="Probabilities", elem_id="probs")
                table = gr.Markdown(elem_id="prob-table")
                with gr.Row():
                    seen = gr.Image(label=f"As the model saw it ({t.img_size} px)", elem_id="seen", interactive=False)
                    cam = gr.Image(label="Where it looked (HiResCAM)", elem_id="cam", interactive=False)
                with gr.Accordion("As bloodcls predict --json reports it", open=False):
                    details = gr.JSON(elem_id="json", show_label=False)
        current = gr.State(None)  # the last image, re-scored when TTA or the map's class changes
        outputs = [verdict, label, table, seen, cam, details, current]
        upload.upload(run, [upload, tta, target], outputs, api_name="classify")
        pasted.upload(run, [pasted, tta, target], outputs, api_name=False)
        for control in (tta, target):
            control.change(run, [current, tta, target], outputs, api_name=False)
        if model.examples:
            gr.Examples([[str(p)] for p in model.examples], inputs=[upload], label="Test-split examples",
                        fn=lambda p: run(p, tta.value, PREDICTED), outputs=outputs, run_on_click=True,
                        cache_examples=False)
    return app
