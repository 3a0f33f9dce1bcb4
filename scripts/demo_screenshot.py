"""Screenshot of the demo page for the docs: start `bloodcls demo`, upload an image in headless Chromium, save the page.

    python scripts/demo_screenshot.py <run folder or .ckpt> <image> <out.png> [--tta]
    python scripts/demo_screenshot.py <run folder or .ckpt> --draw-cell <out.png>   # a drawn, non-PBC cell
    python scripts/demo_screenshot.py <run or .ckpt> --skimage coffee docs/demo-not-a-cell.png --expect not_a_cell

The docs' screenshots use images that can be committed: --draw-cell (docs/demo.png) and a natural photo shipped with
scikit-image (docs/demo-not-a-cell.png, the gate turning a non-cell image away); the PBC images are not committed.
``--expect`` makes a wrong page an error (exit 1) instead of a misleading screenshot: ``not_a_cell`` needs a
checkpoint with a trust state (calibration and gate) and the refusal in the headline.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

NOT_A_CELL = "does not look like a BloodMNIST cell image"  # bloodcls.inference.classify.NOT_A_CELL
EXPECT = {  # headline -> whether it shows what was asked for
    "any": lambda text: True,
    "class": lambda text: not text.startswith((NOT_A_CELL, "uncertain", "Cannot use")),
    "not_a_cell": lambda text: text.startswith(NOT_A_CELL),
}


def draw_cell(path: Path, side: int = 200) -> Path:
    """A stained white cell with a lobed nucleus among red cells, drawn with Pillow (no real image)."""
    img = Image.new("RGB", (side, side), (236, 214, 196))
    d = ImageDraw.Draw(img)
    for cx, cy in [(20, 30), (175, 25), (185, 170), (25, 180), (100, 190), (190, 95)]:
        d.ellipse([cx - 32, cy - 32, cx + 32, cy + 32], fill=(214, 160, 160), outline=(196, 140, 140), width=3)
    d.ellipse([52, 52, 148, 148], fill=(205, 185, 215))
    for cx, cy, r in [(85, 88, 20), (112, 84, 18), (118, 112, 19), (88, 116, 17)]:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(88, 48, 130))
    img.filter(ImageFilter.GaussianBlur(1.2)).save(path)
    return path


def skimage_photo(name: str, path: Path) -> Path:
    """A natural image shipped with scikit-image (``skimage.data.<name>()``, e.g. coffee, astronaut), as a PNG."""
    import numpy as np
    from skimage import data

    loader = getattr(data, name, None)
    if not callable(loader):
        raise SystemExit(f"error: skimage.data has no image {name!r} (try coffee, astronaut, chelsea, rocket)")
    Image.fromarray(np.asarray(loader())).save(path)
    return path


def pick_image(args: argparse.Namespace, folder: Path) -> Path:
    if args.draw_cell:
        return draw_cell(folder / "drawn_cell.png")
    if args.skimage:
        return skimage_photo(args.skimage, folder / f"{args.skimage}.png")
    image = args.image or args.image_pos
    if not image:
        raise SystemExit("error: give an image: <image>, --image PATH, --draw-cell or --skimage NAME")
    return Path(image)


def check_trust(checkpoint: str) -> None:
    """A refusal screenshot only means something with a fitted gate: stop before starting a server without one."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bloodcls.inference.app import load_demo_model

    if load_demo_model(checkpoint).trained.trust is None:
        raise SystemExit(f"error: {checkpoint} has no trust state (calibration and gate): fit it first "
                         "(bloodcls trust <run folder> --refit); no screenshot taken")


def serve(checkpoint: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bloodcls", "demo", checkpoint, "--port", str(port)])
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"error: the demo exited with status {server.returncode}") from None
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("error: the demo did not answer within 2 minutes")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a run folder or a .ckpt / .safetensors file")
    p.add_argument("image_pos", nargs="?", metavar="image", help="the image to drop in (or use an option below)")
    p.add_argument("out", help="the PNG to write")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="the image to drop in")
    src.add_argument("--draw-cell", action="store_true", help="a cell drawn with Pillow")
    src.add_argument("--skimage", metavar="NAME", help="a scikit-image sample photo, e.g. coffee")
    p.add_argument("--tta", action="store_true", help="tick TTA before the screenshot")
    p.add_argument("--expect", choices=sorted(EXPECT), default="any",
                   help="what the headline must show (not_a_cell: the gate's refusal); otherwise exit 1")
    args = p.parse_args()
    if args.expect == "not_a_cell":
        check_trust(args.checkpoint)
    from playwright.sync_api import sync_playwright

    image = pick_image(args, Path(tempfile.mkdtemp()))
    server, url = serve(args.checkpoint)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            if args.tta:  # before the upload, so the one answer is the TTA one
                page.locator("#tta input").check()
            page.locator("#upload input[type=file]").set_input_files(str(image))
            page.wait_for_function("document.querySelector('#prob-table')?.innerText.includes('%') || "
                                   "document.querySelector('#verdict')?.innerText.includes('Cannot use')",
                                   timeout=60_000)
            verdict = page.inner_text("#verdict")
            print(verdict)
            if not EXPECT[args.expect](verdict):
                print(f"error: the page does not show the expected {args.expect!r}; no screenshot written",
                      file=sys.stderr)
                return 1
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
