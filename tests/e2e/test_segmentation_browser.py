"""In a real browser: choose Segmentation, upload a small folder of images + masks, see the report (with a problem
named by file); the mask brush is offered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e


def _make(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            img = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
            mask = np.zeros((48, 64), dtype=np.uint8)
            mask[10:30, 12:40] = 1
            img[mask == 1] = (220, 30, 30)
            Image.fromarray(img).save(root / split / "images" / f"{split}_{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}_{i}.png")
    Image.new("L", (20, 20), 1).save(root / "train" / "masks" / "train_3.png")  # wrong size: reported by name
    (root / "classes.txt").write_text("road\ncar\n")


def test_upload_images_and_masks_and_see_the_report(page, app_url, st_helpers, tmp_path: Path):
    from playwright.sync_api import expect

    st = st_helpers
    root = tmp_path / "street"
    _make(root)
    st.open(page, app_url)
    st.main(page).get_by_text("Segmentation", exact=True).click()
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    main = st.main(page)
    expect(main.get_by_role("heading", name="2 · Images and masks")).to_be_visible(timeout=st.SLOW_MS)
    page.locator(".st-key-seg_data_upload input[type=file]").set_input_files(root)
    st.click_until(page, main.get_by_role("button", name="Import these images and masks"),
                   main.get_by_text("Imported “street”: 5 usable image + mask pairs", exact=False))
    st.wait_idle(page)
    # still there once the page has settled (the emptied uploader's rerun used to wipe it)
    expect(main.get_by_text("Imported “street”: 5 usable image + mask pairs", exact=False)).to_be_visible()
    expect(st.metric_value(page, "Usable pairs")).to_have_text("5")
    expect(st.metric_value(page, "Problems")).to_have_text("1")
    expect(main.get_by_text("Mask size differs from the image: 1")).to_be_visible()
    expect(main.get_by_text("Share of labelled pixels per class")).to_be_visible()
    expect(main.get_by_role("button", name="Import these images and masks")).to_have_count(0)  # no double import

    # a second folder: the page shows it (it kept showing the first set, under the same default name)
    (root / "train" / "masks" / "train_3.png").unlink()
    Image.fromarray(np.full((48, 64), 1, dtype=np.uint8)).save(root / "train" / "masks" / "train_3.png")
    page.locator("[class*='st-key-seg_data_upload'] input[type=file]").set_input_files(root)
    st.click_until(page, main.get_by_role("button", name="Import these images and masks"),
                   main.get_by_text("Imported “street”: 6 usable", exact=False))
    st.wait_idle(page)
    expect(st.metric_value(page, "Usable pairs")).to_have_text("6")
    expect(st.metric_value(page, "Problems")).to_have_text("0")


    # the brush tool (streamlit-drawable-canvas) is offered; a click that lands during a rerun is retried
    st.click_until(page, main.get_by_text("Paint or fix a mask"), main.get_by_text("Draw on the photo, then save."))
