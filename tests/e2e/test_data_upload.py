"""In a real browser: upload a folder (and a zip) of class folders through the Data page and see the report."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _open_data_page(page, app_url, st) -> None:
    from playwright.sync_api import expect

    st.open(page, app_url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "data"), timeout=st.SLOW_MS)
    expect(st.main(page).get_by_role("heading", name="2 · Bring your photos")).to_be_visible()
    st.wait_idle(page)
    add = st.main(page).get_by_test_id("stExpander").filter(has_text="Add a dataset")
    tab = add.get_by_role("tab", name="Upload a folder")
    if not tab.is_visible():
        add.get_by_text("Add a dataset", exact=True).click()
    expect(tab).to_be_visible()


def test_upload_a_folder_shows_the_report(page, app_url, st_helpers, tmp_path: Path):
    from playwright.sync_api import expect

    st = st_helpers
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    root = tmp_path / "critters"
    for c_idx, (label, n) in enumerate({"ants": 3, "bees": 4}.items()):
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{label}_{i}.jpg").write_bytes(_jpeg(100 * c_idx + i))
    (root / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "bees" / ".DS_Store").write_bytes(b"junk")

    _open_data_page(page, app_url, st)
    main = st.main(page)
    page.locator(".st-key-data_upload_folder input[type=file]").set_input_files(root)
    expect(main.get_by_text("9 files", exact=False)).to_be_visible()
    st.click_until(page, main.get_by_role("button", name="Import these photos"),
                   main.get_by_role("heading", name="critters"))
    st.wait_idle(page)
    expect(main.get_by_text("7 images in 2 classes", exact=False)).to_be_visible()
    expect(st.metric_value(page, "Images")).to_have_text("7")
    expect(st.metric_value(page, "Classes")).to_have_text("2")
    x_labels = page.locator('[data-testid="stPlotlyChart"] g.xtick text')
    for label in ("ants", "bees"):
        expect(x_labels.filter(has_text=re.compile(rf"^{label}$"))).to_have_count(1)
    cells = st.dataframe_cells(page)
    expect(cells.get_by_text("critters/bees/broken.jpg", exact=True)).to_have_count(1)  # named in the problems
    # the broken photo was never imported: the fix clears its note (nothing in the dataset is dropped)
    expect(main.get_by_role("button", name=re.compile(r"Clear the notes about files never imported \(1\)"))
           ).to_be_visible()
    expect(page.get_by_role("combobox", name="Dataset to train on")).to_have_value(re.compile(r"^critters — 7 images"))
    # the uploader was emptied after the import (its bytes released)
    expect(page.get_by_test_id("stFileChip")).to_have_count(0)
    assert dialogs == []


def test_upload_a_zip_with_hostile_names(page, app_url, st_helpers, tmp_path: Path):
    from playwright.sync_api import expect

    st = st_helpers
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"zipped/cats/cat_{i}.jpg", _jpeg(500 + i))
            zf.writestr(f"zipped/dogs/dog_{i}.jpg", _jpeg(600 + i))
        zf.writestr("zipped/dogs/<img src=x onerror=alert(1)>.jpg", _jpeg(700))
        zf.writestr("../evil.jpg", _jpeg(701))
    zpath = tmp_path / "pets.zip"
    zpath.write_bytes(buf.getvalue())

    _open_data_page(page, app_url, st)
    main = st.main(page)
    main.get_by_role("tab", name="Upload a zip").click()
    page.locator(".st-key-data_upload_zip input[type=file]").set_input_files(zpath)
    expect(page.get_by_test_id("stFileChip").filter(has_text="pets.zip")).to_be_visible()
    st.click_until(page, main.get_by_role("button", name="Import this zip"), main.get_by_role("heading", name="pets"))
    st.wait_idle(page)
    expect(st.metric_value(page, "Images")).to_have_text("7")
    x_labels = page.locator('[data-testid="stPlotlyChart"] g.xtick text')
    for label in ("cats", "dogs"):
        expect(x_labels.filter(has_text=re.compile(rf"^{label}$"))).to_have_count(1)
    cells = st.dataframe_cells(page)
    expect(cells.get_by_text("../evil.jpg", exact=True)).to_have_count(1)  # refused entry, named
    assert dialogs == []
