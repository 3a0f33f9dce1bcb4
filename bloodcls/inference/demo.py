"""Try a trained model in the browser: drop in a cell image, see the 8 probabilities and where the model looked.

    python -m bloodcls.demo <checkpoint or run folder> [--port 7860] [--host 127.0.0.1]
    make demo CKPT=outputs/runs/<date>/<time>_skip_s0_<id>

A local Gradio app. An image is prepared by :mod:`bloodcls.inference.predict`'s own code (same reader, centre
square, bicubic resize, same probabilities), so the page and ``python -m bloodcls.predict --json`` agree. The
model is loaded once; a bad file gets a message in the page and the server keeps going. Beside the
answer: the run's recipe, test accuracy and per-class F1 from its ``results.json``, so a user knows how
far to trust it. A research tool, not a diagnostic device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcls.common.markdown import md_table
from bloodcls.common.rundir import CHECKPOINT_DIR, RESULTS_FILE, read_json
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import TrainedModel, load_trained
from bloodcls.inference.images import MAX_PIXELS, ImageError, load_image
from bloodcls.inference.predict import predict_proba, to_tensor
from bloodcls.inference.saliency import cam_layer, overlay, saliency_map

PREDICTED = "predicted class"
VIEW_PX = 256  # images are shown at this size (nearest-neighbour, so the model's pixels stay visible)
DISCLAIMER = ("**Research tool, not a diagnostic device.** It was trained on BloodMNIST (PBC dataset, one "
              "hospital's smears and scanner); its answer on other images may be wrong without warning.")


@dataclass
class DemoModel:
    """The loaded network and what the page says about it."""

    trained: TrainedModel
    results: dict[str, Any] = field(default_factory=dict)  # the run's results.json, when there is one
    examples: list[Path] = field(default_factory=list)

    @cached_property
    def cam(self) -> tuple | None:
        """Where the maps are taken (found once per model, not per request)."""
        return cam_layer(self.trained.net, self.trained.img_size)


def load_demo_model(target: str | Path) -> DemoModel:
    """A checkpoint, or a run folder (its best.ckpt), plus the run's results.json when it sits in one."""
    from bloodcls.common.rundir import find_checkpoints

    target = Path(target).expanduser()
    if target.is_dir() and not (target / CHECKPOINT_DIR).is_dir():
        raise UserError(f"{target} is not a run folder (no checkpoints/ in it): pass a run folder "
                        "(outputs/runs/<date>/<time>_<name>_<id>) or its checkpoints/best.ckpt.")
    ((run, ckpt),) = find_checkpoints([target])
    return DemoModel(trained=load_trained(ckpt), results=read_json(run / RESULTS_FILE) or {})


def model_facts(model: DemoModel) -> str:
    """Markdown: architecture, input size, recipe, test accuracy and per-class F1, with where they came from."""
    t, r = model.trained, model.results
    arch = t.hparams.get("arch") or t.name
    lines = [f"**Model:** {arch} ({t.name}), {t.img_size} px input, checkpoint `{t.path.name}`"
             + (f" (epoch {t.info['epoch']})" if "epoch" in t.info else "")]
    if not r:
        lines.append("No results.json beside this checkpoint: its test scores are unknown.")
        return "\n\n".join(lines)
    env = r.get("environment") or {}
    lines.append(f"**Run:** {r.get('run_name')} · recipe {r.get('recipe') or 'pre-recipe'} · seed {r.get('seed')} · "
                 f"{env.get('device', '?')} · commit {env.get('commit', '?')} · {str(env.get('date', '?'))[:10]}")
    test = r.get("test") or {}
    if test.get("acc") is not None:
        tta = (r.get("test_tta") or {}).get("acc")
        lines.append(f"**Test accuracy:** {100 * test['acc']:.2f} %" + (f" ({100 * tta:.2f} % with TTA)" if tta else "")
                     + f" · macro F1 {100 * (test.get('f1') or 0):.2f} % on the test split of the run's data")
        scores = test.get("scores") or {}
        rows = [[c, f"{100 * scores[f'test/f1/{c}']:.1f}"] for c in t.class_names if f"test/f1/{c}" in scores]
        if rows:
            lines.append("\n".join(md_table(["class", "test F1 (%)"], rows)))
    return "\n\n".join(lines)


def _view(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((VIEW_PX, VIEW_PX), Image.NEAREST))


def analyse(model: DemoModel, path: str | Path, tta: bool = False, target: str = PREDICTED,
            max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """Everything the page shows for one file; an unusable file raises :class:`ImageError`."""
    t = model.trained
    image = load_image(path, t.img_size, max_pixels=max_pixels)
    probs = predict_proba(t.net, image[None], tta=tta)[0]
    best = int(np.argmax(probs))
    cam_class = best if target in (None, "", PREDICTED) else t.class_names.index(target)
    cam = saliency_map(t.net, to_tensor(image[None]), target=cam_class, layer=model.cam)
    return {
        "class": t.class_names[best],
        "probability": float(probs[best]),
        "probabilities": {c: float(p) for c, p in zip(t.class_names, probs, strict=True)},
        "tta": tta,
        "seen": _view(image),
        "cam": _view(overlay(image, cam.heat)),
        "cam_class": t.class_names[cam_class],
        "cam_method": cam.method,
    }


def probability_table(probabilities: dict[str, float]) -> str:
    rows = sorted(probabilities.items(), key=lambda kv: -kv[1])
    return "\n".join(md_table(["class", "probability"], [[c, f"{100 * p:.2f} %"] for c, p in rows]))


def example_images(model: TrainedModel, root: str | Path | None, folder: Path) -> list[Path]:
    """One test-split image per class as PNG files, when the data file for the model's size is present."""
    from bloodcls.data import default_root, file_name, load_npz

    path = Path(root or default_root()).expanduser() / file_name(model.img_size)
    if not path.is_file():
        return []
    try:
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
        """(verdict, probabilities, table, seen, map, path to remember): never raises, so the server lives on."""
        if not path:
            return "Drop a cell image above (PNG, JPEG, TIFF or BMP).", None, "", None, None, None
        try:
            a = analyse(model, path, tta=tta, target=target, max_pixels=max_pixels)
        except ImageError as err:
            return (f"**Cannot use this file:** {Path(path).name}: {err}. Try a PNG, JPEG, TIFF or BMP image of "
                    "one cell."), None, "", None, None, None
        verdict = (f"**{a['class']}** ({100 * a['probability']:.2f} %)" + (" · TTA x8" if a["tta"] else "")
                   + f" · map for **{a['cam_class']}** ({a['cam_method']})")
        return verdict, a["probabilities"], probability_table(a["probabilities"]), a["seen"], a["cam"], path

    with gr.Blocks(title="bloodcls demo") as app:
        gr.Markdown("## Blood-cell classifier\n" + DISCLAIMER)
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
        current = gr.State(None)  # the last image, re-scored when TTA or the map's class changes
        outputs = [verdict, label, table, seen, cam, current]
        upload.upload(run, [upload, tta, target], outputs, api_name="classify")
        pasted.upload(run, [pasted, tta, target], outputs, api_name=False)
        for control in (tta, target):
            control.change(run, [current, tta, target], outputs, api_name=False)
        if model.examples:
            gr.Examples([[str(p)] for p in model.examples], inputs=[upload], label="Test-split examples",
                        fn=lambda p: run(p, tta.value, PREDICTED), outputs=outputs, run_on_click=True,
                        cache_examples=False)
    return app
