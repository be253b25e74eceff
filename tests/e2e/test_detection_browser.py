"""In a real browser: choose Object detection, open a dataset of photos without boxes, draw a box on a photo with
the mouse, press Complete, and find the box saved with the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

_MAKE = """
import io, sys
from PIL import Image, ImageDraw
from core.tasks.detection.dataset import import_images
files = []
for i in range(3):
    img = Image.new("RGB", (320, 240), (200, 200, 200))
    ImageDraw.Draw(img).rectangle([60 + 10 * i, 50, 200, 180], fill=(30, 60, 220))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    files.append((f"cup_{i}.png", buf.getvalue()))
dataset_id, _ = import_images(files, "Cups to box", ["cup"])
print(dataset_id)
"""


def _boxes(home: Path, dataset_id: str) -> list[list[list[float]]]:
    side = json.loads((home / "datasets" / dataset_id / "detection.json").read_text())
    return [img["boxes"] for img in side["images"]]


def test_draw_a_box_and_see_it_saved(page, app_url, app_home: Path, st_helpers):
    from playwright.sync_api import expect

    st = st_helpers
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(app_home)}
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
    made = subprocess.run([python, "-c", _MAKE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=True)
    dataset_id = made.stdout.strip().splitlines()[-1]
    assert _boxes(app_home, dataset_id) == [[], [], []]

    st.open(page, app_url)
    st.main(page).get_by_text("Object detection", exact=True).click()
    expect(page.get_by_test_id("stSidebar").get_by_text("Object detection")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(st.main(page).get_by_role("heading", name="2 · Data: photos with boxes")).to_be_visible(
        timeout=st.SLOW_MS)
    st.wait_idle(page)
    st.main(page).get_by_text("Draw boxes", exact=True).click()
    frame_el = st.main(page).locator("iframe[title*='detection']").first
    expect(frame_el).to_be_visible(timeout=st.SLOW_MS)
    frame = frame_el.content_frame
    canvas = frame.locator("canvas").first
    expect(canvas).to_be_visible(timeout=st.SLOW_MS)
    time.sleep(1.0)  # the photo loads into the canvas
    box = canvas.bounding_box()
    assert box and box["width"] > 100
    x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2
    x1, y1 = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    frame.get_by_role("button", name="Complete").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(_boxes(app_home, dataset_id)):
        time.sleep(0.5)
    saved = [b for b in _boxes(app_home, dataset_id) if b]
    assert len(saved) == 1 and len(saved[0]) == 1
    x1_, y1_, x2_, y2_ = saved[0][0]
    # the drag covered 20 %→60 % of the width and 20 %→70 % of the height of a 320 × 240 photo
    assert abs(x1_ - 64) < 12 and abs(x2_ - 192) < 12 and abs(y1_ - 48) < 12 and abs(y2_ - 168) < 12
    expect(st.main(page).get_by_text("Saved boxes: cup", exact=False)).to_be_visible(timeout=st.SLOW_MS)


def _voc_folder(root: Path) -> None:
    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(6):
        img = Image.new("RGB", (160, 120), (200, 200, 200))
        ImageDraw.Draw(img).rectangle([20 + 5 * i, 20, 100, 90], fill=(30, 60, 220))
        img.save(root / "images" / f"cup_{i}.jpg")
        if i < 4:
            (root / "annotations" / f"cup_{i}.xml").write_text(
                f"<annotation><filename>cup_{i}.jpg</filename><object><name>cup</name><bndbox><xmin>{20 + 5 * i}"
                "</xmin><ymin>20</ymin><xmax>100</xmax><ymax>90</ymax></bndbox></object></annotation>")
    (root / "annotations" / "cup_4.xml").write_text("")  # empty: cup_4 is left out; cup_5 has no XML at all


def test_drop_a_folder_with_a_missing_and_an_empty_annotation(page, app_url, st_helpers, tmp_path: Path):
    """A folder dragged onto the page imports (before, only a zip or a typed path did); the photo without an XML file
    is named as one that now counts as 'nothing to find', the empty XML by its name."""
    from playwright.sync_api import expect

    st = st_helpers
    root = tmp_path / "kitchen cups"
    _voc_folder(root)
    st.open(page, app_url)
    st.main(page).get_by_text("Object detection", exact=True).click()
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    main = st.main(page)
    expect(main.get_by_role("heading", name="2 · Data: photos with boxes")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    if not main.get_by_text("Drop a folder", exact=True).is_visible():
        main.get_by_text("Bring new photos").click()
    main.get_by_text("Drop a folder", exact=True).click()
    page.locator(".st-key-det_dir input[type=file]").set_input_files(root)
    st.click_until(page, main.get_by_role("button", name="Import the folder"),
                   main.get_by_text("1 photo had no annotation file or lost every box", exact=False))
    st.wait_idle(page)
    expect(st.metric_value(page, "Photos")).to_have_text("5")
    expect(page.get_by_role("combobox", name="Your detection datasets")).to_have_value("kitchen cups — 5 photos")
    expect(main.get_by_test_id("stAlert").filter(has_text="cup_5.jpg")).to_be_visible()
