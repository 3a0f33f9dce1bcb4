"""The browser demo: the page shows what `python -m bloodcls.predict --json` computes, bad files get a message in the page
and the server lives on; driven through its HTTP API and in headless Chromium (Debian's, via Playwright)."""

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
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcls.demo import main
from bloodcls.errors import UserError
from bloodcls.inference.demo import PREDICTED, analyse, load_demo_model, model_facts, probability_table
from bloodcls.inference.images import ImageError
from bloodcls.inference.predict import classify
from tests.conftest import SHARED_DATA
from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BAD = {"notes.png": "not an image", "truncated.png": "corrupt or truncated", "empty.jpg": "empty (0 bytes)",
       "bomb.png": "decompression bomb"}


def predict_json(ckpt: Path, image: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bloodcls.predict", str(ckpt), str(image), "--json"], cwd=REPO,
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


def test_the_page_computes_what_predict_computes(reference_run, images):
    model = load_demo_model(reference_run[0])  # a run folder: its best.ckpt and results.json
    ckpt = reference_run[0] / "checkpoints" / "best.ckpt"
    for name in ("rgba.png", "grey.jpg", "wide.tiff"):  # transparency, greyscale, non-square go predict's way
        for tta in (False, True):
            got = analyse(model, images / name, tta=tta)
            (want,) = classify(model.trained, [images / name], tta=tta)["results"]
            assert got["class"] == want["class"]
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
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
    assert probability_table({"a": 0.25, "b": 0.75}).splitlines()[2] == "| b | 75.00 % |"


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
    """`python -m bloodcls.demo <run folder>` on a free loopback port, as a user starts it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONWARNINGS": "ignore"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bloodcls.demo", str(reference_run[0]), "--port", str(port),
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
def test_http_api_answers_like_predict_and_survives_bad_files(server, reference_run, cell_image, images):
    from gradio_client import Client, handle_file

    url, proc = server
    client = Client(url, verbose=False)
    verdict, label, table, seen, cam = client.predict(handle_file(str(cell_image)), False, PREDICTED,
                                                      api_name="/classify")
    want = predict_json(reference_run[0] / "checkpoints" / "best.ckpt", cell_image)
    assert label["label"] == want["class"] and verdict.startswith(f"**{want['class']}**")
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(want["probabilities"], abs=1e-6)
    assert Image.open(seen).size == Image.open(cam).size == (256, 256)
    for name, reason in BAD.items():
        verdict, label, *_ = client.predict(handle_file(str(images / name)), False, PREDICTED, api_name="/classify")
        assert verdict.startswith("**Cannot use this file:**") and reason in verdict and not label
    assert proc.poll() is None  # the server is still up


def _shown_probabilities(page) -> dict[str, float]:
    rows = [line.split("\t") for line in page.inner_text("#prob-table").splitlines()[1:]]
    return {c.strip(): float(p.strip().rstrip("%").strip()) for c, p in rows}


@pytest.mark.slow
def test_in_a_headless_browser(server, reference_run, cell_image, images, tmp_path):
    """Upload a cell image in Chromium; the page shows predict's class and probabilities; then a broken file."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[demo])")
    if not Path(CHROMIUM).is_file():
        pytest.skip("no Chromium: `apt-get install chromium` (Playwright's own browser download is unreachable here)")
    url, proc = server
    want = predict_json(reference_run[0] / "checkpoints" / "best.ckpt", cell_image)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
            "--no-first-run", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        upload = page.locator("#upload input[type=file]")
        upload.wait_for(state="attached", timeout=60_000)
        upload.set_input_files(str(cell_image))
        page.wait_for_function("document.querySelector('#prob-table')?.innerText.includes('%')", timeout=60_000)
        assert page.inner_text("#verdict").startswith(want["class"])
        shown = _shown_probabilities(page)
        assert shown == {c: pytest.approx(100 * p, abs=0.006) for c, p in want["probabilities"].items()}
        assert "Research tool, not a diagnostic device" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        page.locator("#upload button[aria-label='Clear']").first.click()
        upload.set_input_files(str(images / "truncated.png"))
        page.wait_for_function("document.querySelector('#verdict')?.innerText.includes('Cannot use this file')",
                               timeout=60_000)
        assert "corrupt or truncated" in page.inner_text("#verdict")
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000 and proc.poll() is None


def test_the_map_layer_is_found_once_per_model(reference_run, images, monkeypatch):
    from bloodcls.inference import demo

    calls = []
    real = demo.cam_layer
    monkeypatch.setattr(demo, "cam_layer", lambda net, size: calls.append(size) or real(net, size))
    model = load_demo_model(reference_run[0])
    first = analyse(model, images / "rgba.png")
    second = analyse(model, images / "rgba.png", target=model.trained.class_names[2])
    assert calls == [28] and first["cam_method"] == second["cam_method"]
