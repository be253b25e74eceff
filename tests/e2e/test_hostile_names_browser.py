"""In a real browser: a dataset whose name, class names and a file name are HTML / Markdown / script injections is
shown as literal text on the Data page (no dialog, no injected element, no traceback).

The dataset is imported beforehand with the CLI (`data import` of a folder keeps the class names as they are), in a
subprocess whose TRANSFER_STUDIO_HOME is the e2e server's data root (`app_home`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DATASET_NAME = "<i>hostile</i>"
CLASSES = ("<img src=x onerror=alert(1)>", "[x](javascript:alert(2))", "<b>bold<b>")  # no "/": a path separator
HOSTILE_FILE = "<svg onload=alert(3)>.png"
IMPORT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def hostile_dataset(app_url: str, app_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The hostile dataset, imported into the e2e server's store; the CLI's JSON summary."""
    root = tmp_path_factory.mktemp("e2e-hostile") / "hostile"
    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        files = [HOSTILE_FILE if (k == 0 and i == 0) else f"img{i}.png" for i in range(3)]
        for i, file in enumerate(files):
            pixels = np.full((32, 32, 3), (40 + 80 * k, 200 - 60 * i, 30 * i + 20 * k), dtype=np.uint8)
            pixels[i * 4:(i + 1) * 4, :, :] = 255  # every image distinct: no duplicates reported
            Image.fromarray(pixels).save(folder / file, format="PNG")
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    cmd = [python, "-m", "core.cli", "data", "import", str(root), "--name", DATASET_NAME, "--json", "--quiet"]
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(app_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S,
                          check=False)
    assert proc.returncode == 0, f"importing the hostile dataset failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["name"] == DATASET_NAME, summary
    assert sorted(summary["classes"]) == sorted(CLASSES), summary  # a folder import keeps the names as they are
    return summary


def _no_traceback(page) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stException")).to_have_count(0)
    body = page.locator("body").inner_text()
    assert "Traceback" not in body, body[-2000:]


def test_hostile_names_are_shown_as_text(page, app_url, st_helpers, hostile_dataset):
    from playwright.sync_api import expect

    st = st_helpers
    main = st.main(page)
    dialogs: list[str] = []

    def _on_dialog(dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", _on_dialog)

    st.open(page, app_url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "data"), timeout=st.SLOW_MS)
    expect(main.get_by_role("heading", name="2 · Bring your photos")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)

    n_images = hostile_dataset["images"]
    option = f"{DATASET_NAME} — {n_images:,} images, {len(CLASSES)} classes"
    box = page.get_by_role("combobox", name="Dataset to train on", exact=True)
    box.click()
    # A plain string, not a regex: Playwright cannot parse a regex holding "/" in a role selector.
    page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()
    expect(box).to_have_value(option)
    st.wait_idle(page)

    # The report: the dataset's name as a subheader, literally, then the per-class thumbnails.
    expect(main.get_by_role("heading", name=DATASET_NAME, exact=True)).to_be_visible(timeout=st.SLOW_MS)
    expect(main.get_by_text("A few images per class", exact=True)).to_be_visible()
    st.wait_idle(page)

    # Every class name appears literally as text (escaped, not rendered).
    for name in CLASSES:
        expect(main.get_by_text(name, exact=False).first).to_be_visible()
    body = page.locator("body").inner_text()
    for fragment in ("onerror=alert(1)", "[x](javascript:alert(2))", "<b>bold<b>", DATASET_NAME):
        assert fragment in body, f"{fragment!r} is not shown literally"

    # Nothing was injected.
    page.wait_for_timeout(500)  # give an injected onerror/onload the chance to fire
    assert dialogs == [], f"dialogs fired: {dialogs}"
    expect(page.locator('img[src="x"]')).to_have_count(0)
    expect(page.locator("svg[onload]")).to_have_count(0)
    expect(page.locator("[onerror], [onload]")).to_have_count(0)
    expect(main.locator("b").filter(has_text="bold")).to_have_count(0)
    expect(main.locator("i").filter(has_text="hostile")).to_have_count(0)
    expect(main.locator('a[href^="javascript:"]')).to_have_count(0)
    _no_traceback(page)
