"""In a real browser: the Test page (upload a photo, see the top answers; a broken file gets a clear message) and the
Runs page's export (ONNX, checked against PyTorch, downloaded as a zip).

Both use one tiny run trained beforehand with the CLI, in a subprocess whose TRANSFER_STUDIO_HOME is the e2e
server's data root (`app_home`): test_resnet from scratch on synthetic colour folders, one epoch, a few seconds.
Other e2e tests of the session may add runs to that root, so the run is always chosen by its id.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data_fixtures import IPHONE_PHOTO
from tests.synthetic import COLOURS, make_colour_folders

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUN_NAME = "e2e colours"
CLASSES = ("blue", "green", "red")
TRAIN_TIMEOUT_S = 300
EXPORT_MS = 180_000  # the export runs the CLI in a subprocess: export, then the check against PyTorch
ANSWER = re.compile(rf"^({'|'.join(CLASSES)}|not sure)$")


def _png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 48, 3), COLOURS[colour], dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def run_id(app_url: str, app_home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished tiny run in the e2e server's data root; its id (the run folder's name)."""
    data = make_colour_folders(tmp_path_factory.mktemp("e2e-colours") / "data", train=6, val=3)
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    cmd = [python, "-m", "core.cli", "train", "--data", str(data), "--model", "test_resnet", "--freeze", "all",
           "--epochs", "1", "--batch-size", "6", "--precision", "fp32", "--device", "cpu", "--name", RUN_NAME,
           "--quiet", "--json"]
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(app_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S,
                          check=False)
    assert proc.returncode == 0, f"training the tiny run failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "completed", summary
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "checkpoints" / "best.safetensors").is_file()
    return run_dir.name


def _fresh(locator):
    """Only the matches that are not stale leftovers of the previous run of the script."""
    return locator.locator('xpath=self::*[not(ancestor-or-self::*[@data-stale="true"])]')


def _choose_run(page, label: str, run: str) -> None:
    """Pick the option of the st.selectbox labelled exactly `label` whose text ends with '(<run id>)'."""
    from playwright.sync_api import expect

    option = re.compile(rf"\({re.escape(run)}\)$")
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    page.get_by_role("listbox").get_by_role("option", name=option).click()
    expect(box).to_have_value(option)


def _photo_name(main, name: str):
    """The photo's name in bold above its answer (the uploader's file chip shows it too)."""
    return _fresh(main.locator("strong").filter(has_text=re.compile(rf"^{re.escape(name)}$")))


def _no_traceback(page) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stException")).to_have_count(0)
    body = page.locator("body").inner_text()
    assert "Traceback" not in body, body[-2000:]


def _open(page, app_url: str, st, link: str, url_path: str, heading: str) -> None:
    """Home, then the sidebar link `link`; wait for the page's title."""
    from playwright.sync_api import expect

    st.open(page, app_url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=link, exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, url_path), timeout=st.SLOW_MS)
    expect(st.main(page).get_by_role("heading", name=heading)).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)


def test_test_page_answers_a_photo_and_explains_a_broken_file(page, app_url, st_helpers, run_id):
    from playwright.sync_api import expect

    st = st_helpers
    main = st.main(page)
    _open(page, app_url, st, "5 · Test", "test", "5 · Test your model")
    _choose_run(page, "Run", run_id)
    st.wait_idle(page)
    expect(main.get_by_text("3 classes: blue, green, red", exact=True)).to_be_visible()

    uploader = page.locator(".st-key-test_files input[type=file]")
    uploader.set_input_files(files=[{"name": "red.png", "mimeType": "image/png", "buffer": _png("red")}])
    answers = _fresh(main.get_by_role("heading", name=ANSWER))
    expect(answers).to_have_count(1, timeout=st.SLOW_MS)
    st.wait_idle(page)
    expect(_photo_name(main, "red.png")).to_be_visible()

    # The top-k chart: plotly draws one bar (g.point) per answer, and the classes on the y axis.
    chart = _fresh(main.get_by_test_id("stPlotlyChart"))
    expect(chart.locator(".js-plotly-plot")).to_have_count(1)
    expect(chart.locator("g.trace.bars g.point")).to_have_count(3)
    y_labels = chart.locator("g.ytick text")
    for name in CLASSES:
        expect(y_labels.filter(has_text=re.compile(rf"^{name}$"))).to_have_count(1)
    expect(_fresh(main.get_by_text(re.compile(r"^\d+ ms for this photo on \S+")))).to_have_count(1)
    _no_traceback(page)

    # A file that is not an image: named, with a clear message, and the good photo still answered.
    uploader.set_input_files(files=[{"name": "x.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"}])
    error = _fresh(main.get_by_test_id("stAlert").filter(has_text=re.compile(r"^This file cannot be read: \S")))
    expect(error).to_have_count(1, timeout=st.SLOW_MS)
    st.wait_idle(page)
    expect(_photo_name(main, "x.jpg")).to_be_visible()
    expect(error).to_be_visible()
    expect(answers).to_have_count(1)
    expect(_fresh(main.get_by_text(re.compile(r"^\d+ ms for this photo on ")))).to_have_count(1)
    _no_traceback(page)


def test_export_onnx_then_download_the_zip(page, app_url, st_helpers, run_id, tmp_path: Path):
    from playwright.sync_api import expect

    st = st_helpers
    main = st.main(page)
    _open(page, app_url, st, "6 · Runs & export", "runs", "6 · Runs, results and export")
    _choose_run(page, "Open a run", run_id)
    st.wait_idle(page)

    main.get_by_role("tab", name="Export and share").click()
    fmt = page.locator(".st-key-runs_export_fmt")
    expect(fmt).to_be_visible()
    fmt.get_by_text("onnx", exact=True).click()
    expect(fmt.get_by_role("radio", name="onnx")).to_be_checked()
    st.wait_idle(page)

    main.get_by_role("button", name="Export and check").click()
    checked = _fresh(main.get_by_test_id("stAlert").filter(
        has_text=re.compile(r"^onnx: checked — outputs match PyTorch on \d+ images")))
    expect(checked).to_be_visible(timeout=EXPORT_MS)
    st.wait_idle(page)
    _no_traceback(page)

    with page.expect_download(timeout=st.SLOW_MS) as info:
        main.get_by_role("button", name="Download the export (.zip)").click()
    download = info.value
    assert download.failure() is None, download.failure()
    assert download.suggested_filename == f"e2e-colours-{run_id[-6:]}-model.zip"  # named after the run
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        names = set(zf.namelist())
        assert {"model.onnx", "manifest.json"} <= names, names
        manifest = json.loads(zf.read("manifest.json"))
        assert zf.read("model.onnx")[:1] == b"\x08"  # an ONNX protobuf starts with field 1 (ir_version)
    assert manifest["classes"] == list(CLASSES), manifest


def test_the_same_photo_twice_and_an_iphone_photo(page, app_url, st_helpers, run_id, tmp_path: Path):
    """Dropping one photo twice stopped the page with an error (two charts with one key); a HEIC photo (an
    iPhone's default) was refused by the uploader, then said to be a format the app cannot open."""
    from playwright.sync_api import expect

    st = st_helpers
    main = st.main(page)
    _open(page, app_url, st, "5 · Test", "test", "5 · Test your model")
    _choose_run(page, "Run", run_id)
    st.wait_idle(page)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder in (first, second):
        (folder / "red.png").write_bytes(_png("red"))
    (first / "IMG_0001.HEIC").write_bytes(IPHONE_PHOTO.read_bytes())
    (first / "IMG_0002.HEIC").write_bytes(IPHONE_PHOTO.read_bytes()[:600])  # cut off
    uploader = page.locator(".st-key-test_files input[type=file]")
    uploader.set_input_files([str(first / "red.png"), str(first / "IMG_0001.HEIC"), str(first / "IMG_0002.HEIC")])
    st.wait_idle(page)
    uploader.set_input_files([str(second / "red.png")])  # the same photo again, from another folder
    answers = _fresh(main.get_by_role("heading", name=ANSWER))
    expect(answers).to_have_count(3, timeout=st.SLOW_MS)  # both reds and the iPhone photo
    st.wait_idle(page)
    expect(_fresh(main.get_by_test_id("stAlert").filter(
        has_text="This file cannot be read: corrupt HEIC file"))).to_have_count(1)
    _no_traceback(page)
