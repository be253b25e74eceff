"""What a user waits for outside training, measured in a real browser (Playwright + Debian chromium).

Each round starts `streamlit run app.py` on its own port with a fresh data root (a finished classification run is
copied in), opens a new browser, and times, from the click (or load) to the result on screen with the app idle:

- the cold first page (from starting the server), and a first visit of Model, Data, Layers, Train, Test, Runs;
- importing a folder of photos by its path on the Data page (time to the check's report);
- the Test page's first prediction on an uploaded photo (model loading included) and a second photo;
- on the Runs page: computing the results, opening them again, the report and the export download being ready.

Each measurement once per round (3 rounds by default): the median and range are reported, with the load average
(`uptime`) taken before each measurement. Results: bench/results/wait_<label>_s42.json and .md;
`--table` merges every wait_*_s42.json there into wait_table_s42.md.

Prepare the finished run once (about a minute):
  TRANSFER_STUDIO_HOME=/tmp/wait42/seed .venv/bin/transfer-studio train --data ../shared/datasets/hymenoptera \
      --epochs 1 --freeze head --name "wait bench" --json
Run:
  .venv/bin/python bench/wait_bench.py --seed-home /tmp/wait42/seed --label before [--rounds 3] [--port 8650]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATASETS = (ROOT / ".." / "shared" / "datasets").resolve()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SLOW_MS = 300_000
TAG = "s42"

#: the measurements in the order of the table, with the words the table uses
STEPS = {
    "cold_home": "first page after `streamlit run` (cold)",
    "visit_model": "first visit: Model (latency of every backbone measured, fresh data root)",
    "visit_data": "first visit: Data",
    "import_folder": "Data: import clothing10 by its path (3,409 photos) to the report",
    "visit_layers": "first visit: Layers",
    "visit_train": "first visit: Train",
    "visit_test": "first visit: Test (run chosen, model loaded)",
    "predict_first": "Test: first photo to its answer",
    "predict_first_done": "Test: first photo, answer + Grad-CAM drawn",
    "predict_second": "Test: second photo, answer + Grad-CAM drawn",
    "visit_runs": "first visit: Runs (table + run opened)",
    "results_compute": "Runs: Compute results to metrics + matrix + mistakes",
    "results_reopen": "Runs: open the page again, results shown",
    "report_ready": "Runs: Make the HTML report to its download button",
    "export_ready": "Runs: Export and check (safetensors) to the zip's download button",
    "runs_after_export": "Runs: open the page again once an export exists",
}


def load() -> float:
    """The 1-minute load average (as `uptime` shows it)."""
    return round(os.getloadavg()[0], 2)


def fresh_home(base: Path, seed_home: Path) -> Path:
    """An empty data root holding a copy of the seed root's finished runs (nothing else: caches start empty)."""
    if base.exists():
        shutil.rmtree(base)
    (base / "runs").mkdir(parents=True)
    for run in sorted((seed_home / "runs").iterdir()):
        if (run / "checkpoints" / "best.safetensors").is_file():
            shutil.copytree(run, base / "runs" / run.name,
                            ignore=shutil.ignore_patterns("evaluation*.json", "report.html", "exports"))
    return base


def start_app(port: int, home: Path, log: Path, wrap: list[str], app_dir: Path) -> tuple[subprocess.Popen, float]:
    """`streamlit run app.py` as the e2e tests start it (after the command prefix `wrap`, e.g. a profiler);
    (process, monotonic start time)."""
    cmd = [*wrap, sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = t0 + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as resp:
                if resp.read().decode().strip() == "ok":
                    return proc, t0
        except OSError:
            pass
        time.sleep(0.05)
    stop_app(proc)
    raise RuntimeError("the app did not answer /_stcore/health within 120 s")


def stop_app(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def wait_idle(page, timeout: int = SLOW_MS) -> None:
    """Connected, the script not running, no running indicator, nothing stale (greyed out)."""
    from playwright.sync_api import expect

    app = page.locator('[data-testid="stApp"]')
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout)
    expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout)


def fresh(locator):
    """Only matches that are not stale leftovers of the previous script run."""
    return locator.locator('xpath=self::*[not(ancestor-or-self::*[@data-stale="true"])]')


def heading(page, text: str):
    return fresh(page.get_by_test_id("stMain").locator("h1").filter(has_text=text))


class Round:
    """One server, one browser context, one pass over every measurement."""

    def __init__(self, page, url: str) -> None:
        self.page, self.url, self.out = page, url, {}

    def timed(self, key: str, action, done) -> None:
        """Time `action()` then `done()` (which waits for the result on screen); record seconds and load."""
        before = load()
        t0 = time.monotonic()
        action()
        done()
        self.out[key] = {"s": round(time.monotonic() - t0, 3), "load": before}
        print(f"  {key:20s} {self.out[key]['s']:7.2f} s  (load {before})", flush=True)

    def nav(self, link: str, title: str) -> None:
        self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=link, exact=True).click()
        self.shown(heading(self.page, title))

    def shown(self, locator) -> None:
        locator.first.wait_for(timeout=SLOW_MS)
        wait_idle(self.page)

    def visit(self, key: str, link: str, title: str) -> None:
        self.timed(key, lambda: self.page.get_by_test_id("stSidebarNav").get_by_role(
            "link", name=link, exact=True).click(), lambda: self.shown(heading(self.page, title)))


def one_round(browser, port: int, home: Path, photos: list[Path], wrap: list[str], app_dir: Path,
              full: bool = True, think: float = 0.0) -> dict:
    """One pass; `full=False` only times the first page, the Test page and the export (no Model, Data, Layers,
    Train, results or report: a shorter pass for more repeats of those); `think`: seconds between the Test page
    being ready and the photo dropped (a user picking a file)."""
    from playwright.sync_api import expect

    log = home.parent / f"{home.name}.log"
    load_before = load()
    proc, t0 = start_app(port, home, log, wrap, app_dir)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        context.set_default_timeout(SLOW_MS)
        page = context.new_page()
        r = Round(page, f"http://127.0.0.1:{port}")
        server_ready = time.monotonic() - t0
        page.goto(r.url, timeout=SLOW_MS)
        r.shown(heading(page, "Transfer Studio"))
        r.out["cold_home"] = {"s": round(time.monotonic() - t0, 3), "load": load_before,
                              "server_ready_s": round(server_ready, 3)}
        print(f"  cold_home            {r.out['cold_home']['s']:7.2f} s  (server ready {server_ready:.2f} s)")
        main = page.get_by_test_id("stMain")

        if full:
            r.visit("visit_model", "1 · Model", "1 · Choose a model")
            r.visit("visit_data", "2 · Data", "2 · Bring your photos")
            main.get_by_role("tab", name="Folder on this computer").click()
            box = main.get_by_label("Folder path")
            box.fill(str(DATASETS / "clothing10"))
            box.press("Enter")
            wait_idle(page)
            button = main.get_by_role("button", name="Import this folder")
            expect(button).to_be_enabled()
            report = fresh(main.get_by_test_id("stMetric").filter(has_text="Images"))
            r.timed("import_folder", button.click, lambda: r.shown(report))
            r.visit("visit_layers", "3 · Layers", "3 · Choose what to train")
            r.visit("visit_train", "4 · Train", "4 · Train")
        r.visit("visit_test", "5 · Test", "5 · Test your model")
        uploader = page.locator(".st-key-test_files input[type=file]")
        answer = re.compile(r"^(ants|bees|not sure)$")

        def answered(name: str):
            return fresh(main.locator("strong").filter(has_text=re.compile(rf"^{re.escape(name)}$")))

        def first_answer() -> None:
            answered(photos[0].name).first.wait_for(timeout=SLOW_MS)
            fresh(main.get_by_role("heading", name=answer)).first.wait_for(timeout=SLOW_MS)

        time.sleep(think)
        r.timed("predict_first", lambda: uploader.set_input_files(str(photos[0])), first_answer)
        t_first = time.monotonic() - r.out["predict_first"]["s"]
        wait_idle(page)
        fresh(main.get_by_test_id("stImage")).nth(1).wait_for(timeout=SLOW_MS)  # the heat-map beside the photo
        r.out["predict_first_done"] = {"s": round(time.monotonic() - t_first, 3),
                                       "load": r.out["predict_first"]["load"]}
        print(f"  predict_first_done   {r.out['predict_first_done']['s']:7.2f} s")

        def second_answer() -> None:
            answered(photos[1].name).first.wait_for(timeout=SLOW_MS)
            fresh(main.get_by_role("heading", name=answer)).first.wait_for(timeout=SLOW_MS)
            wait_idle(page)
            fresh(main.get_by_test_id("stImage")).nth(1).wait_for(timeout=SLOW_MS)

        r.timed("predict_second", lambda: uploader.set_input_files(str(photos[1])), second_answer)

        r.visit("visit_runs", "6 · Runs & export", "6 · Runs, results and export")
        if full:
            results_shown = lambda: r.shown(fresh(main.locator(".st-key-res_confusion")))  # noqa: E731
            r.timed("results_compute", main.get_by_role("button", name="Compute results").click, lambda: (
                results_shown(), fresh(main.get_by_role("heading", name=re.compile(r"^Mistakes"))).first.wait_for()))
            r.nav("Home", "Transfer Studio")
            r.timed("results_reopen", lambda: page.get_by_test_id("stSidebarNav").get_by_role(
                "link", name="6 · Runs & export", exact=True).click(), results_shown)
        else:
            results_shown = lambda: r.shown(heading(page, "6 · Runs, results and export"))  # noqa: E731
        main.get_by_role("tab", name="Export and share").click()
        wait_idle(page)
        if full:
            r.timed("report_ready", main.get_by_role("button", name="Make the HTML report").click,
                    lambda: r.shown(fresh(main.get_by_role("button", name="Download report.html"))))
        r.timed("export_ready", main.get_by_role("button", name="Export and check").click,
                lambda: r.shown(fresh(main.get_by_role("button", name="Download the export (.zip)"))))
        r.nav("Home", "Transfer Studio")
        r.timed("runs_after_export", lambda: page.get_by_test_id("stSidebarNav").get_by_role(
            "link", name="6 · Runs & export", exact=True).click(), results_shown)
        main.get_by_role("tab", name="Export and share").click()  # the tab's contents were drawn in that script run
        fresh(main.get_by_role("button", name="Download the export (.zip)")).first.wait_for(timeout=SLOW_MS)
        assert page.get_by_test_id("stException").count() == 0, "an exception is on the page"
        context.close()
        return r.out
    finally:
        stop_app(proc)


def summarise(rounds: list[dict]) -> dict:
    """Per measurement: every value, the median, min and max, and the loads seen."""
    out = {}
    for key in STEPS:
        values = [r[key]["s"] for r in rounds if key in r]
        if values:
            out[key] = {"values": values, "median": round(statistics.median(values), 2), "min": round(min(values), 2),
                        "max": round(max(values), 2), "loads": [r[key]["load"] for r in rounds if key in r]}
    return out


def markdown(label: str, summary: dict, meta: dict) -> str:
    lines = [f"# What a user waits for: {label} ({meta['date']})", "",
             f"{meta['rounds']} rounds, each a fresh server + data root + browser; {meta['cpus']} cores; load "
             f"(1-min) {meta['load_start']} at the start, {meta['load_end']} at the end. Command: `{meta['command']}`",
             "", "| wait | median s | range s | load seen |", "|---|---:|---:|---|"]
    for key, words in STEPS.items():
        if key in summary:
            s = summary[key]
            lines.append(f"| {words} | {s['median']:.2f} | {s['min']:.2f}–{s['max']:.2f} | "
                         f"{min(s['loads']):.1f}–{max(s['loads']):.1f} |")
    return "\n".join(lines) + "\n"


def table(groups: list[str]) -> str:
    """The labels (or globs of labels, whose rounds are pooled) side by side: median [min–max] (load range seen)."""
    data = []
    for group in groups:
        paths = sorted(RESULTS.glob(f"wait_{group}_{TAG}.json"))
        rounds = [r for p in paths for r in json.loads(p.read_text())["rounds"]]
        data.append((f"{group.replace('*', 'N')} ({len(rounds)} rounds)", summarise(rounds)))
    lines = ["| wait | " + " | ".join(label for label, _ in data) + " |", "|---|" + "---:|" * len(data)]
    for key, words in STEPS.items():
        cells = []
        for _, summary in data:
            s = summary.get(key)
            cells.append(f"{s['median']:.2f} [{s['min']:.2f}–{s['max']:.2f}] (load {min(s['loads']):.1f}–"
                         f"{max(s['loads']):.1f})" if s else "—")
        lines.append(f"| {words} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save(label: str, rounds: list[dict], meta: dict) -> str:
    """Write bench/results/wait_<label>_s42.json and .md; the markdown."""
    summary = summarise(rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"wait_{label}_{TAG}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": {**meta, "rounds": len(rounds)}, "rounds": rounds,
                                                     "summary": summary}, indent=1))
    stem.with_suffix(".md").write_text(text := markdown(label, summary, {**meta, "rounds": len(rounds)}))
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-home", type=Path, default=Path("/tmp/wait42/seed"),
                    help="a data root holding a finished classification run (see above)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wait42/bench"), help="fresh data roots go here")
    ap.add_argument("--label", default="now")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=8650)
    ap.add_argument("--app-dir", type=Path, default=ROOT,
                    help="the source tree to run the app from (e.g. a copy with the code before a change)")
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds between the Test page being ready and the first photo dropped")
    ap.add_argument("--short", action="store_true", help="only the first page, the Test page and the export")
    ap.add_argument("--wrap", default="", help="a command prefix for the server, e.g. 'py-spy record -o x --'")
    ap.add_argument("--table", nargs="+", metavar="LABEL",
                    help="only write wait_table_s42.md from these labels' results (a glob pools its rounds)")
    args = ap.parse_args()
    if args.table:
        legend = ("Seconds from the click (or load) to the result on screen, median [min–max] over the rounds, with "
                  "the 1-min load average seen (2 cores; other work ran beside). `short`: first page, Test page and "
                  "export only; `think3`: the same with 3 s between the Test page being ready and the photo dropped. "
                  "`before` runs a copy of the tree with the code before the change (`--app-dir`).\n\n")
        (RESULTS / f"wait_table_{TAG}.md").write_text(text := legend + table(args.table))
        print(text)
        return 0
    from playwright.sync_api import sync_playwright

    photos = sorted((DATASETS / "hymenoptera" / "val" / "ants").glob("*.jpg"))[:1] + \
        sorted((DATASETS / "hymenoptera" / "val" / "bees").glob("*.jpg"))[:1]
    meta = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "cpus": os.cpu_count(),
            "app_dir": str(args.app_dir), "short": args.short, "think_s": args.think,
            "load_start": load(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    rounds: list[dict] = []
    with sync_playwright() as pw:
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds} (load {load()})", flush=True)
            home = fresh_home(args.work / f"{args.label}-{i}", args.seed_home)
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                rounds.append(one_round(browser, args.port, home, photos, args.wrap.split(), args.app_dir,
                                        full=not args.short, think=args.think))
            finally:
                browser.close()
            text = save(args.label, rounds, {**meta, "load_end": load()})  # after each round: a partial run counts
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
