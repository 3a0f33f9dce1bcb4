"""Screenshot of a sweep in TensorBoard for docs/trackers.md: start TensorBoard on localhost, open it in headless Chromium.

    python scripts/tracker_screenshot.py outputs/sweeps/<name>/runs docs/tensorboard.png [--tags 'val/(acc|f1)|test/acc']
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logdir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--tags", default=r"^(val/(acc|f1|loss)|train/loss|test/(acc|f1))$", help="regex of the scalar tags shown")
    p.add_argument("--view", choices=["timeseries", "hparams", "images"], default="timeseries")
    p.add_argument("--width", type=int, default=1500)
    p.add_argument("--height", type=int, default=1050)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tensorboard = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen([str(tensorboard), "--logdir", str(args.logdir), "--host", "127.0.0.1", "--port", str(port),
                               "--reload_interval", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "data/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        url = f"{base}?darkMode=false#{args.view}"
        with sync_playwright() as pw:  # Playwright starts Chromium with a fresh temporary profile
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url, wait_until="networkidle")
            if args.view == "timeseries":
                page.wait_for_selector("input[placeholder='Filter tags (regex)']", timeout=60_000)
                page.locator("input[placeholder='Filter tags (regex)']:visible").first.fill(args.tags)
                smoothing = page.locator("input.slider-input").first  # a few epochs: no smoothing
                smoothing.fill("0")
                smoothing.press("Enter")
                page.locator("button[aria-label='Close side pane']").first.click()  # the settings pane
            time.sleep(4)  # the charts draw after their data arrive
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
