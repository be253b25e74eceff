"""Real-browser (Playwright + Debian chromium) fixtures: one Streamlit server per session, one browser context per test.

Prerequisites: the `playwright` pip package and a system chromium (`/usr/bin/chromium`; `playwright install` is never
used). Without them the tests here are skipped, except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_TIMEOUT_S = 60
# The first visit of the Model page measures every backbone's latency on the CPU: be generous.
SLOW_MS = 60_000
DEFAULT_MS = 30_000


def _chromium_path() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _missing_prerequisite() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the 'playwright' pip package is not installed (pip install -e '.[dev]')"
    if _chromium_path() is None:
        return "no system chromium (/usr/bin/chromium or `chromium` on PATH): `apt-get install chromium`"
    return None


@pytest.fixture(scope="session")
def e2e_prerequisites() -> str:
    """The chromium executable; skips (or, under CI=true, fails) when Playwright or chromium is missing."""
    missing = _missing_prerequisite()
    if missing:
        message = f"e2e browser tests need Playwright and chromium: {missing}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: these tests must run in CI)", pytrace=False)
        pytest.skip(message)
    return _chromium_path()  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, then SIGKILL whatever is left: no orphans."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:  # children (e.g. measurement workers) may outlive the main process: kill the group regardless
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="session")
def app_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The e2e server's data root (its TRANSFER_STUDIO_HOME): tests may put runs or datasets there beforehand, e.g.
    with the CLI in a subprocess whose environment sets TRANSFER_STUDIO_HOME to this folder."""
    return tmp_path_factory.mktemp("e2e-home")


@pytest.fixture(scope="session")
def app_url(e2e_prerequisites: str, app_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `streamlit run app.py` on a free 127.0.0.1 port with its own data root (`app_home`); yield its URL."""
    home = app_home
    log_path = tmp_path_factory.mktemp("e2e-server") / "streamlit.log"
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    port = _free_port()
    cmd = [python, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true"]
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode} before answering; log {log_path}:\n"
                            f"{_log_tail(log_path)}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200 and resp.read().decode().strip() == "ok":
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer /_stcore/health within {SERVER_START_TIMEOUT_S} s; "
                            f"log {log_path}:\n{_log_tail(log_path)}", pytrace=False)
            time.sleep(0.25)
        yield url
    finally:
        _stop_group(proc)


@pytest.fixture(scope="session")
def browser(e2e_prerequisites: str):
    """One headless chromium for the session (the system one, never a Playwright download)."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=e2e_prerequisites, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


SCREENSHOT_DIR = pytest.StashKey[Path]()


@pytest.fixture()
def page(browser, app_url: str, request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh browser context (so a fresh Streamlit session) and page per test, 1400x1000."""
    from playwright.sync_api import expect

    request.node.stash[SCREENSHOT_DIR] = tmp_path
    expect.set_options(timeout=DEFAULT_MS)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(DEFAULT_MS)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On a failing e2e test (setup or call), save a full-page screenshot and name it in the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when not in ("setup", "call") or not rep.failed:
        return
    pg = getattr(item, "funcargs", {}).get("page")
    shots = item.stash.get(SCREENSHOT_DIR, None)
    if pg is None or shots is None or pg.is_closed():
        return
    path = shots / f"failure-{rep.when}.png"
    try:
        pg.screenshot(path=str(path), full_page=True)
    except Exception as err:  # the screenshot must never hide the real failure
        rep.sections.append(("e2e screenshot", f"could not save a screenshot: {err}"))
        return
    rep.sections.append(("e2e screenshot", f"saved to {path} (page url {pg.url})"))
    print(f"\n[e2e] screenshot of the failing page: {path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Helpers for the tests, handed out by the `st_helpers` fixture (no `import conftest`: nothing depends on sys.path).


class StreamlitHelpers:
    """Waiting for Streamlit: the app root carries data-test-script-state / data-test-connection-state."""

    SLOW_MS = SLOW_MS

    @staticmethod
    def wait_idle(page, timeout: int = SLOW_MS) -> None:
        """Wait until the app is connected, its script is not running and no element is stale (greyed out).

        Right after a click the rerun may not have started yet, so pair this with an `expect(...)` on the text the
        action should produce: that retries until it appears.
        """
        from playwright.sync_api import expect

        app = page.locator('[data-testid="stApp"]')
        expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout)
        expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout)
        expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout)

    @staticmethod
    def page_url(app_url: str, path: str) -> re.Pattern:
        """The address of one page, whatever draft ids follow it (`?backbone=…&dataset_id=…`, kept for reloads)."""
        return re.compile(re.escape(f"{app_url}/{path}") + r"(\?.*)?$")

    @staticmethod
    def open(page, url: str, timeout: int = SLOW_MS) -> None:
        page.goto(url, timeout=timeout)
        StreamlitHelpers.wait_idle(page, timeout)

    @staticmethod
    def click_until(page, button, result, timeout: int = SLOW_MS, tries: int = 3) -> None:
        """Click `button` once the app is idle and wait for `result`; click again if the app went idle without it.

        A click that lands while a rerun is in flight (e.g. the one a file upload starts) can be dropped by the
        frontend; the app then sits idle with the button still there. A dropped click is retried, a slow one is not:
        we only click again when the script is not running and `result` has not appeared.
        """
        from playwright.sync_api import expect

        for attempt in range(tries):
            StreamlitHelpers.wait_idle(page, timeout)
            if result.count() > 0:
                return
            button.click()
            try:
                expect(result.first).to_be_visible(timeout=timeout // tries)
                return
            except AssertionError:
                if attempt == tries - 1:
                    raise

    @staticmethod
    def main(page):
        """The main area (the sidebar repeats some texts, e.g. "Model: ...")."""
        return page.get_by_test_id("stMain")

    @staticmethod
    def metric_value(page, label: str):
        """The value element of the st.metric whose label is exactly `label`."""
        metric = page.get_by_test_id("stMetric").filter(
            has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
        return metric.get_by_test_id("stMetricValue")

    @staticmethod
    def choose(page, label: str, option: str) -> None:
        """Pick `option` in the st.selectbox labelled `label`: open it, click the option in the listbox."""
        from playwright.sync_api import expect

        box = page.get_by_role("combobox", name=label)
        box.click()
        page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()
        expect(box).to_have_value(option)

    @staticmethod
    def dataframe_cells(page, key_testid: str = "stDataFrame"):
        """Cells of st.dataframe: glide-data-grid draws on a canvas but keeps an accessible table of the visible
        rows in the DOM (td[role=gridcell]). It is not in the accessibility tree, hence CSS, not get_by_role."""
        return page.get_by_test_id(key_testid).locator('[role="gridcell"]')

    @staticmethod
    def chart_y_labels(page):
        """The y-axis tick labels of the plotly charts (SVG text in the DOM)."""
        return page.locator('[data-testid="stPlotlyChart"] g.ytick text')


@pytest.fixture()
def st_helpers() -> type[StreamlitHelpers]:
    return StreamlitHelpers
