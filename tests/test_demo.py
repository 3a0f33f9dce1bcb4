"""The browser demo: the page shows what `bloodcls predict --json` computes (calibrated probabilities, review
and not-a-cell verdicts), old checkpoints still work, bad files get a message in the page and the server lives on;
driven through its HTTP API and in headless Chromium (Debian's, via Playwright)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcls.cli.demo import main
from bloodcls.data import file_name
from bloodcls.errors import UserError
from bloodcls.inference.app import (
    NO_TRUST_NOTE,
    PREDICTED,
    analyse,
    headline,
    load_demo_model,
    model_facts,
    probability_table,
)
from bloodcls.inference.classify import NOT_A_CELL, REVIEW, classify, predict_proba
from bloodcls.inference.images import ImageError, load_image
from tests.conftest import SHARED_DATA
from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BAD = {"notes.png": "not an image", "truncated.png": "corrupt or truncated", "empty.jpg": "empty (0 bytes)",
       "bomb.png": "decompression bomb"}
TRUST_FIELDS = ("confidence", "abstain", "in_distribution", "ood_score", "verdict")


def predict_json(ckpt: Path, image: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bloodcls", "predict", str(ckpt), str(image), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"][0]


@pytest.fixture(scope="module")
def cell_image(tmp_path_factory) -> Path:
    """A real PBC cell JPEG (200 x 200) when ../shared/data is present, else a synthetic 90 x 70 RGBA image."""
    d = tmp_path_factory.mktemp("cell")
    parts = sorted(SHARED_DATA.glob("pbc200.part*.tar"))
    if parts:
        with tarfile.open(parts[0]) as tar:
            member = next(m for m in tar if m.isfile() and m.name.endswith(".jpg"))
            path = d / Path(member.name).name
            path.write_bytes(tar.extractfile(member).read())
        return path
    rgba = np.random.default_rng(3).integers(0, 256, (70, 90, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(d / "cell.png")
    return d / "cell.png"


@pytest.fixture(scope="module")
def own_cell(reference_run, synthetic_root, tmp_path_factory) -> Path:
    """Of the run's own synthetic test images, the one its gate likes best among those it answers confidently (a PNG)."""
    from bloodcls.inference.classify import judge_images

    images = np.load(synthetic_root / file_name(28))["test_images"][:16]
    judged = judge_images(load_demo_model(reference_run[0]).trained, images)
    scores = np.where((judged.accepted & ~judged.review).numpy(), judged.gate_score.numpy(), np.inf)
    assert np.isfinite(scores).any(), "the gate or the review threshold turns away all of the run's own test images"
    path = tmp_path_factory.mktemp("own") / "synthetic_test.png"
    Image.fromarray(images[int(np.argmin(scores))]).save(path)
    return path


@pytest.fixture(scope="module")
def noise_image(tmp_path_factory) -> Path:
    """Uniform RGB noise, 200 x 200: not a cell; the gate must turn it away."""
    path = tmp_path_factory.mktemp("noise") / "noise.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)
    return path


def same_row(got: dict, want: dict) -> None:
    """The demo's answer carries predict's JSON fields with the same values."""
    assert got["class"] == want["class"] and got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    for key in TRUST_FIELDS:
        assert got[key] == (pytest.approx(want[key], rel=1e-5) if isinstance(want[key], float) else want[key]), key


def test_the_page_computes_what_predict_computes(reference_run, images, own_cell):
    model = load_demo_model(reference_run[0])  # a run folder: its best.ckpt and results.json
    assert model.trained.trust is not None  # fitted at training end: calibrated, with a gate
    ckpt = reference_run[0] / "checkpoints" / "best.ckpt"
    for path in (images / "rgba.png", images / "grey.jpg", images / "wide.tiff", own_cell):  # odd modes and shapes
        for tta in (False, True):
            got = analyse(model, path, tta=tta)
            (want,) = classify(model.trained, [path], tta=tta)["results"]
            same_row(got, want)
            assert got["row"] == {k: v for k, v in want.items() if k != "path"}
    shown = analyse(model, images / "rgba.png", target=model.trained.class_names[3])
    assert shown["cam_class"] == model.trained.class_names[3] and shown["cam"].shape == shown["seen"].shape == (256, 256, 3)
    assert load_demo_model(ckpt).results == model.results


@pytest.mark.parametrize(("name", "reason"), list(BAD.items()))
def test_bad_files_raise_predicts_reason(reference_run, images, name, reason):
    model = load_demo_model(reference_run[0])
    with pytest.raises(ImageError, match=re.escape(reason)):
        analyse(model, images / name)


def test_model_facts_come_from_the_runs_results(reference_run):
    facts = model_facts(load_demo_model(reference_run[0]))
    acc = reference_run[1]["test"]["acc"]
    assert f"{100 * acc:.2f} %" in facts and "unet" in facts and "28 px" in facts and "| platelet |" in facts
    trust = load_demo_model(reference_run[0]).trained.trust
    assert f"temperature {trust.temperature:.3g}" in facts and f"gate score above {trust.ood_threshold:.3g}" in facts
    assert "Trust on the test split:** ECE" in facts
    assert probability_table({"a": 0.25, "b": 0.75}).splitlines()[2] == "| b | 75.00 % |"


def test_the_headline_names_no_class_when_the_gate_fires_and_asks_for_review_when_unsure(reference_run, own_cell,
                                                                                         noise_image):
    model = load_demo_model(reference_run[0])
    names = model.trained.class_names
    cell = analyse(model, own_cell)
    assert cell["verdict"] == "ok" and headline(model, cell).startswith(f"**{cell['class']}** (")
    noise = analyse(model, noise_image)
    assert noise["verdict"] == "not_a_cell" and noise["in_distribution"] is False
    text = headline(model, noise)
    assert text.startswith(f"**{NOT_A_CELL}**") and not any(c in text for c in names)
    model.trained.trust = replace(model.trained.trust, abstain_below=1.01, abstain_below_tta=1.01)  # all below
    unsure = analyse(model, own_cell, tta=True)
    assert unsure["verdict"] == "review" and unsure["abstain"] is True
    assert headline(model, unsure).startswith(f"**{REVIEW}** · best guess **{unsure['class']}** (")


def test_a_checkpoint_without_trust_state_still_works(trained_checkpoint, images, tmp_path):
    """Written before calibration and the gate existed: the class as before (raw softmax) and a note saying so."""
    import torch

    contents = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    del contents["trust"]
    old = tmp_path / "old.ckpt"
    torch.save(contents, old)
    model = load_demo_model(old)
    assert model.trained.trust is None
    got = analyse(model, images / "rgba.png")
    raw = predict_proba(model.trained.net, load_image(images / "rgba.png", 28)[None])[0]  # uncalibrated softmax
    assert got["probabilities"] == pytest.approx(dict(zip(model.trained.class_names, raw.tolist(), strict=True)),
                                                 abs=1e-6)
    assert got["verdict"] == "unchecked" and all(got[k] is None for k in TRUST_FIELDS[:-1])
    assert got["row"] == {k: v for k, v in classify(model.trained, [images / "rgba.png"])["results"][0].items()
                          if k != "path"}
    text = headline(model, got)
    assert text.startswith(f"**{got['class']}** (") and text.endswith(NO_TRUST_NOTE)
    assert "unavailable for this checkpoint" in model_facts(model)


def test_a_checkpoint_that_is_not_plain_weights_is_refused_at_start(tmp_path, capsys):
    import torch

    bad = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"name": "unet"}, "evil": UserError("x")}, bad)
    with pytest.raises(SystemExit) as stop:
        main([str(bad)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit):
        main([str(tmp_path)])  # a folder without checkpoints/
    assert "not a run folder" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(reference_run, tmp_path_factory):
    """`bloodcls demo <run folder>` on a free loopback port, as a user starts it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONWARNINGS": "ignore"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bloodcls", "demo", str(reference_run[0]), "--port", str(port),
                                 "--data-root", str(reference_run[0] / "no-data")], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the demo did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_http_api_answers_like_predict_and_survives_bad_files(server, reference_run, cell_image, own_cell, noise_image,
                                                              images):
    from gradio_client import Client, handle_file

    url, proc = server
    client = Client(url, verbose=False)
    ckpt = reference_run[0] / "checkpoints" / "best.ckpt"
    for path in (own_cell, noise_image, cell_image):  # accepted; turned away; a PBC photo (the toy model's call)
        verdict, label, table, seen, cam, row = client.predict(handle_file(str(path)), False, PREDICTED,
                                                               api_name="/classify")
        want = predict_json(ckpt, path)
        same_row(row, want)
        assert row["tta"] is False and Image.open(seen).size == Image.open(cam).size == (256, 256)
        if want["verdict"] == "not_a_cell":
            assert verdict.startswith(f"**{NOT_A_CELL}**") and label["label"] == NOT_A_CELL
        else:
            assert label["label"] == want["class"] and verdict.startswith(f"**{want['class']}**")
            got = {c["label"]: c["confidence"] for c in label["confidences"]}
            assert got == pytest.approx(want["probabilities"], abs=1e-6)
    assert predict_json(ckpt, noise_image)["verdict"] == "not_a_cell"
    for name, reason in BAD.items():
        verdict, label, *_, row = client.predict(handle_file(str(images / name)), False, PREDICTED,
                                                 api_name="/classify")
        assert verdict.startswith("**Cannot use this file:**") and reason in verdict and not label and not row
    assert proc.poll() is None  # the server is still up


def _shown_probabilities(page) -> dict[str, float]:
    rows = [line.split("\t") for line in page.inner_text("#prob-table").splitlines()[1:]]
    return {c.strip(): float(p.strip().rstrip("%").strip()) for c, p in rows}


def _upload(page, path: Path, shows: str) -> str:
    """Drop ``path`` on the upload box (clearing the last one) and wait until the verdict contains ``shows``."""
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.wait_for_function(f"document.querySelector('#verdict')?.innerText.includes({json.dumps(shows)})",
                           timeout=60_000)
    return page.inner_text("#verdict")


@pytest.mark.slow
def test_in_a_headless_browser(server, reference_run, own_cell, noise_image, images, tmp_path):
    """In Chromium: a cell of the run's own kind gets predict's class and probabilities; noise is turned away with
    no class named; then a broken file gets its message."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[demo])")
    if not Path(CHROMIUM).is_file():
        pytest.skip("no Chromium: `apt-get install chromium` (Playwright's own browser download is unreachable here)")
    url, proc = server
    ckpt = reference_run[0] / "checkpoints" / "best.ckpt"
    want = predict_json(ckpt, own_cell)
    names = load_demo_model(ckpt).trained.class_names
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
            "--no-first-run", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#upload input[type=file]").wait_for(state="attached", timeout=60_000)
        assert want["verdict"] == "ok" and _upload(page, own_cell, want["class"]).startswith(want["class"])
        shown = _shown_probabilities(page)
        assert shown == {c: pytest.approx(100 * p, abs=0.006) for c, p in want["probabilities"].items()}
        assert "Research tool, not a diagnostic device" in page.inner_text("body")
        assert "probabilities calibrated (temperature" in page.inner_text("#facts")
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        refused = _upload(page, noise_image, NOT_A_CELL)
        assert refused.startswith(NOT_A_CELL) and not any(c in refused for c in names)
        assert NOT_A_CELL in page.inner_text("#probs")  # the label's headline too names no class
        page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
        assert "corrupt or truncated" in _upload(page, images / "truncated.png", "Cannot use this file")
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000 and (tmp_path / "refused.png").stat().st_size > 10_000
    assert proc.poll() is None


def test_the_map_layer_is_found_once_per_model(reference_run, images, monkeypatch):
    from bloodcls.inference import app as demo

    calls = []
    real = demo.cam_layer
    monkeypatch.setattr(demo, "cam_layer", lambda net, size: calls.append(size) or real(net, size))
    model = load_demo_model(reference_run[0])
    first = analyse(model, images / "rgba.png")
    second = analyse(model, images / "rgba.png", target=model.trained.class_names[2])
    assert calls == [28] and first["cam_method"] == second["cam_method"]
