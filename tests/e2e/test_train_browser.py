"""In a real browser: sample data, then the Train page: a quick model, then a 2-epoch fine-tune with live curves.

The training runs in a separate worker process and the page's live fragment re-reads the run folder every second,
so everything here waits on what the page shows (expect / polling), never on fixed sleeps.

While a fragment rerun is in flight, Streamlit keeps the previous run's elements on screen, marked
data-stale="true", next to the new ones: for a moment a chart or an alert can be there twice (seen with the
"Loss" and "Training loss per batch" charts). The assertions on the live part therefore skip stale elements.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e

BACKBONE = "mobilenetv2_100"
# The quick model's worker decodes the 156 sample images, then embeds them all on the CPU (2 cores here).
QUICK_MS = 120_000
# The fine-tune decodes the images again (its own process), then trains 2 epochs with augmentations on the CPU.
FINETUNE_MS = 300_000
MIN_QUICK_ACCURACY = 60.0  # percent; 3 classes (brick, grass, gravel): chance is 33 %
PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def _fresh(locator):
    """Only the matches that are not stale leftovers of the previous (fragment) run."""
    return locator.locator('xpath=self::*[not(ancestor-or-self::*[@data-stale="true"])]')


def _alert(page, pattern: str):
    """The (non-stale) st.success / st.info / ... box whose text starts with `pattern` (a regex)."""
    return _fresh(page.get_by_test_id("stMain").get_by_test_id("stAlert").filter(has_text=re.compile(f"^{pattern}")))


def _metric(page, label: str):
    """The value of the (non-stale) st.metric labelled exactly `label`."""
    metric = _fresh(page.get_by_test_id("stMetric")).filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    return metric.get_by_test_id("stMetricValue")


def _chart_title(page, title: str):
    """The title (SVG text in the DOM) of the (non-stale) plotly chart titled exactly `title`."""
    return _fresh(page.get_by_test_id("stPlotlyChart")).locator(".gtitle").filter(
        has_text=re.compile(rf"^{re.escape(title)}$"))


def _percent(text: str) -> float:
    """A metric value such as '93.9%' as 93.9."""
    match = PERCENT.search(text)
    assert match, f"no percentage in {text!r}"
    return float(match.group(1))


@pytest.mark.timeout(900)
def test_quick_model_then_fine_tune(page, app_url, st_helpers):
    from playwright.sync_api import expect

    st = st_helpers
    main = st.main(page)
    st.open(page, app_url)

    # Home → sample data (lands on the Layers page) → sidebar "4 · Train".
    page.get_by_role("button", name="Try it with sample data").click()
    expect(page).to_have_url(st.page_url(app_url, "layers"), timeout=st.SLOW_MS)
    expect(main.get_by_text(f"Model: {BACKBONE}")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="4 · Train", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "train"), timeout=st.SLOW_MS)
    expect(main.get_by_role("heading", name="4 · Train")).to_be_visible(timeout=st.SLOW_MS)
    quick = main.get_by_role("button", name="Quick model (seconds)")
    expect(quick).to_be_visible()
    st.wait_idle(page)

    # Quick model: a linear head on the frozen backbone's embeddings.
    quick.click()
    expect(_fresh(main.get_by_role("heading", name=f"Quick model · {BACKBONE}"))).to_be_visible(timeout=st.SLOW_MS)
    expect(_alert(page, "Quick model ready in ")).to_be_visible(timeout=QUICK_MS)
    best = _metric(page, "Best validation accuracy")
    expect(best).to_have_text(PERCENT, timeout=st.SLOW_MS)
    quick_accuracy = _percent(best.inner_text())
    assert quick_accuracy > MIN_QUICK_ACCURACY, f"quick model validation accuracy {quick_accuracy} %"

    # Fine-tune for 2 epochs: open the settings, set the epochs, start.
    page.get_by_test_id("stExpander").get_by_text("Settings (the defaults work well)", exact=True).click()
    epochs = page.get_by_label("Epochs", exact=True)
    expect(epochs).to_be_visible()
    epochs.fill("2")
    epochs.press("Enter")
    expect(epochs).to_have_value("2")
    st.wait_idle(page)
    expect(epochs).to_have_value("2")
    main.get_by_role("button", name="Start training").click()

    expect(_fresh(main.get_by_role("heading", name=f"Fine-tune · {BACKBONE}"))).to_be_visible(timeout=st.SLOW_MS)
    # Decoding the images and 2 epochs take many seconds: the live fragment shows the progress bar meanwhile.
    expect(_fresh(page.get_by_test_id("stProgress"))).to_be_visible(timeout=FINETUNE_MS)
    expect(_alert(page, "Finished 2 epochs; best validation accuracy ")).to_be_visible(timeout=FINETUNE_MS)

    expect(_metric(page, "Epochs done")).to_have_text("2 / 2")
    expect(best).to_have_text(PERCENT)
    assert 0.0 <= _percent(best.inner_text()) <= 100.0
    expect(_metric(page, "Device")).to_have_text(re.compile(r"\S"))
    for title in ("Loss", "Accuracy", "Training loss per batch"):
        expect(_chart_title(page, title)).to_be_visible()
    expect(_fresh(page.get_by_test_id("stProgress"))).to_have_count(0)
