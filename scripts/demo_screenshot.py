"""Screenshot of the demo page for the docs (docs/demo.png): start `bloodcls.inference.demo`, upload an image in headless Chromium.

    python scripts/demo_screenshot.py <run folder or .ckpt> <image> <out.png> [--tta]
    python scripts/demo_screenshot.py <run folder or .ckpt> --draw-cell <out.png>   # a drawn, non-PBC cell

The docs' screenshot (docs/guide/predict.md) uses --draw-cell: the PBC images (and files built from them) are not committed.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("image", nargs="?")
    p.add_argument("out")
    p.add_argument("--draw-cell", action="store_true")
    p.add_argument("--tta", action="store_true")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    image = draw_cell(Path(tempfile.mkdtemp()) / "drawn_cell.png") if args.draw_cell else Path(args.image)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bloodcls.demo", args.checkpoint, "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#upload input[type=file]").set_input_files(str(image))
            page.wait_for_function("document.querySelector('#prob-table')?.innerText.includes('%')", timeout=60_000)
            if args.tta:
                page.locator("#tta input").check()
                page.wait_for_function("document.querySelector('#verdict')?.innerText.includes('TTA')", timeout=60_000)
            page.screenshot(path=args.out, full_page=True)
            print(page.inner_text("#verdict"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
