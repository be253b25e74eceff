"""In a real browser: choose a backbone on the Model page, then the layers to train on the Layers page."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e

LITE0 = "tf_efficientnet_lite0"
LITE0_LABEL = f"EfficientNet-Lite0 ({LITE0})"
LITE0_GROUPS = ["stem", "blocks.6 + conv_head + bn2", "head"]


def _count(text: str) -> int:
    """A metric value such as '3,371,008' as an int."""
    return int(text.strip().replace(",", ""))


RECOMMENDED = "Head first, then the rest (lower LR early) · recommended"  # classification's default preset


def test_choose_model_then_layers(page, app_url, st_helpers):
    from playwright.sync_api import expect

    st = st_helpers
    st.open(page, app_url)
    expect(st.main(page).get_by_role("heading", name="Transfer Studio")).to_be_visible()

    # Model page (from the sidebar). Its first visit measures each backbone's CPU latency: slow.
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="1 · Model", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "model"), timeout=st.SLOW_MS)
    box = page.get_by_role("combobox", name="Model to use")
    expect(box).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)

    table = st.dataframe_cells(page)
    expect(table.filter(has_text="mobilenetv2_100").first).to_be_attached()
    expect(table.filter(has_text="EfficientNet-Lite0").first).to_be_attached()
    expect(box).to_have_value("MobileNetV2 1.0 (mobilenetv2_100)")

    st.choose(page, "Model to use", LITE0_LABEL)
    st.wait_idle(page)
    expect(st.metric_value(page, "Input size")).to_have_text("224 px")
    expect(st.main(page).get_by_text(
        "Pretrained weights are on this machine: TF EfficientNet-Lite0 ImageNet checkpoint.")).to_be_visible()

    # No photos chosen yet: the Model page's Next leads to step 2, Data; from there the sidebar to Layers.
    st.main(page).get_by_role("button", name="Next: bring your photos").click()
    expect(page).to_have_url(st.page_url(app_url, "data"), timeout=st.SLOW_MS)
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="3 · Layers", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "layers"), timeout=st.SLOW_MS)
    expect(st.main(page).get_by_text(f"Model: {LITE0}")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    assert f"backbone={LITE0}" in page.url  # the choice is in the address ...
    page.reload()  # ... so a reload (a new session) comes back to it instead of "Choose a model first"
    expect(st.main(page).get_by_text(f"Model: {LITE0}")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)

    # The group names: in the plotly chart's y axis (SVG text) and in the dataframe's accessible grid.
    y_labels = st.chart_y_labels(page)
    for group in LITE0_GROUPS:
        expect(y_labels.filter(has_text=re.compile(rf"^{re.escape(group)}$"))).to_have_count(1)
    cells = st.dataframe_cells(page)
    for group in LITE0_GROUPS:
        expect(cells.get_by_text(group, exact=True)).to_have_count(1)
    expect(st.metric_value(page, "Layer groups")).to_have_text("9")
    # Nothing chosen yet: the recommended preset (head first, then the rest); then head only.
    expect(page.get_by_role("radio", name=RECOMMENDED, exact=True)).to_be_checked()
    page.get_by_test_id("stRadio").get_by_text("Head only", exact=True).click()
    expect(page.get_by_role("radio", name="Head only", exact=True)).to_be_checked()
    st.wait_idle(page)
    expect(st.metric_value(page, "Trainable parameters")).to_have_text("2,562")  # head only: 1280 x 2 + 2
    frozen = _count(st.metric_value(page, "Frozen parameters").inner_text())
    assert frozen > 1_000_000

    # Train everything: nothing stays frozen.
    page.get_by_test_id("stRadio").get_by_text("Everything", exact=True).click()
    expect(page.get_by_role("radio", name="Everything", exact=True)).to_be_checked()
    expect(st.metric_value(page, "Frozen parameters")).to_have_text("0")
    st.wait_idle(page)
    expect(st.metric_value(page, "Frozen parameters")).to_have_text("0")
    expect(st.metric_value(page, "Trainable parameters")).to_have_text(f"{frozen + 2_562:,}")


def test_try_sample_data_lands_on_layers(page, app_url, st_helpers):
    from playwright.sync_api import expect

    st = st_helpers
    st.open(page, app_url)
    page.get_by_role("button", name="Try it with sample data").click()
    expect(page).to_have_url(st.page_url(app_url, "layers"), timeout=st.SLOW_MS)
    expect(st.main(page).get_by_text("Model: mobilenetv2_100")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    expect(page.get_by_role("radio", name=RECOMMENDED, exact=True)).to_be_checked()
    expect(st.chart_y_labels(page).filter(has_text=re.compile(r"^head$"))).to_have_count(1)
    expect(page.get_by_test_id("stSidebar").get_by_text("Model: mobilenetv2_100")).to_be_visible()


def test_sidebar_follows_the_current_choice(page, app_url, st_helpers):
    from playwright.sync_api import expect

    st = st_helpers
    st.open(page, app_url)
    page.get_by_role("button", name="Try it with sample data").click()
    expect(st.main(page).get_by_text("Model: mobilenetv2_100")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    page.get_by_test_id("stRadio").get_by_text("Everything", exact=True).click()
    expect(st.metric_value(page, "Frozen parameters")).to_have_text("0")
    st.wait_idle(page)
    expect(page.get_by_test_id("stSidebar").get_by_text("Layers: Everything")).to_be_visible(timeout=10_000)


def test_home_answers_at_its_own_address(page, app_url, st_helpers):
    """Typing /home (the sidebar's Home is served at /) shows the home page, not Streamlit's "Page not found"."""
    from playwright.sync_api import expect

    st = st_helpers
    st.open(page, f"{app_url}/home")
    expect(st.main(page).get_by_role("heading", name="Transfer Studio")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.get_by_role("button", name="Try it with sample data")).to_be_visible()


def test_pages_ask_nothing_from_the_internet(page, app_url, st_helpers):
    """Everything runs on the user's machine: no page asks another host for anything (the tab's icon used to be
    fetched from fonts.gstatic.com, and failed offline)."""
    from playwright.sync_api import expect

    st = st_helpers
    outside: list[str] = []
    page.on("request", lambda req: outside.append(req.url)
            if not req.url.startswith((app_url, "data:", "blob:")) else None)
    st.open(page, app_url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "data"), timeout=st.SLOW_MS)
    st.wait_idle(page)
    icon = page.locator("link[rel='shortcut icon']")
    expect(icon).to_have_count(1)
    assert not icon.get_attribute("href").startswith("http") or icon.get_attribute("href").startswith(app_url)
    assert outside == [], outside
