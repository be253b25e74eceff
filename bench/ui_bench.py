"""UI responsiveness while a run trains, measured in a real browser (Playwright + Debian chromium).

A full fine-tune of MobileNetV2 runs in its worker process (using the CPU as a user's run would); meanwhile the
browser switches pages, flips a widget and watches the Train page's live progress. Reports the median and worst
page-switch and widget-response times and the interval between live updates.

Run (alone on the machine): .venv/bin/python bench/ui_bench.py [--rounds 8] [--watch 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = [("Home", "Transfer Studio"), ("3 · Layers", "3 · "), ("4 · Train", "4 · Train"),
         ("6 · Runs & export", "6 · Runs"), ("2 · Data", "2 · ")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_training(epochs: int) -> Path:
    """A real fine-tune (all layers) of the pretrained MobileNetV2 on the sample textures, as a detached job."""
    from core import jobs, runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig

    cfg = RunConfig("mobilenetv2_100", "sample:textures", FreezeConfig("all"), TrainConfig(epochs=epochs),
                    name="UI benchmark load")
    run_dir = runs.create_run(cfg, trainset.resolve("sample:textures"))
    jobs.start(run_dir)
    deadline = time.time() + 300
    while runs.read_status(run_dir).get("phase") != "training" and time.time() < deadline:
        time.sleep(0.5)
    return run_dir


def start_app(port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), f"--server.port={port}",
           "--server.headless=true", "--server.address=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the app did not start")


def _idle(page) -> None:
    """Wait until Streamlit has finished the current script run (its 'running' indicator is gone)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


def measure(port: int, rounds: int, watch: float) -> dict:
    from playwright.sync_api import sync_playwright

    out: dict = {"page_switch_s": [], "widget_response_s": [], "live_update_intervals_s": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.get_by_role("heading", name="Transfer Studio").wait_for(timeout=120_000)
        page.get_by_role("button", name="Try it with sample data").click()  # a model and data in the draft
        page.locator("h1").filter(has_text="3 · ").first.wait_for(timeout=120_000)
        _idle(page)
        for _ in range(rounds):  # page switches via the sidebar, while the run trains
            for label, heading in PAGES:
                t0 = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
                page.locator("h1").filter(has_text=heading).first.wait_for(timeout=60_000)
                out["page_switch_s"].append(time.perf_counter() - t0)
                _idle(page)
        page.locator('[data-testid="stSidebarNav"]').get_by_text("4 · Train", exact=True).click()
        page.locator("h1").filter(has_text="4 · Train").first.wait_for(timeout=60_000)
        page.get_by_text("Settings (the defaults work well)").click()
        box = page.get_by_text("Set the learning rate myself")
        for _ in range(rounds):  # a widget: the learning-rate input appears / disappears
            _idle(page)
            shown = page.get_by_label("Learning rate", exact=True).count() > 0
            t0 = time.perf_counter()
            box.click()
            if shown:
                page.get_by_label("Learning rate", exact=True).wait_for(state="detached", timeout=60_000)
            else:
                page.get_by_label("Learning rate", exact=True).wait_for(timeout=60_000)
            out["widget_response_s"].append(time.perf_counter() - t0)
        last, changes = None, []
        end = time.time() + watch
        while time.time() < end:  # how often the live progress text changes
            try:
                text = page.locator('[data-testid="stProgress"]').first.inner_text(timeout=2000)
            except Exception:  # noqa: BLE001 - between two fragment runs the element may be replaced
                text = None
            if text and text != last:
                changes.append(time.perf_counter())
                last = text
            time.sleep(0.05)
        out["live_update_intervals_s"] = [b - a for a, b in zip(changes, changes[1:], strict=False)]
        browser.close()
    summary = {}
    for key, values in out.items():
        if values:
            summary[key] = {"n": len(values), "median": round(statistics.median(values), 3),
                            "p90": round(sorted(values)[int(0.9 * (len(values) - 1))], 3),
                            "max": round(max(values), 3)}
        else:
            summary[key] = {"n": 0}
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--watch", type=float, default=30.0, help="seconds to watch the live progress")
    ap.add_argument("--epochs", type=int, default=30, help="of the background run (keeps the CPU busy)")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="ui-bench-")
    os.environ["TRANSFER_STUDIO_HOME"] = home
    from core import jobs

    run_dir = start_training(args.epochs)
    port = _free_port()
    app = start_app(port, Path(home) / "app.log")
    try:
        result = measure(port, args.rounds, args.watch)
        from core import runs

        result["training_images_per_second_during"] = runs.read_status(run_dir).get("images_per_second")
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        jobs.cancel(run_dir)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
