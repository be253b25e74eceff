"""In a real browser: choose face recognition, enrol two people from small folders (LFW, read from
../shared/datasets and copied to a tmp folder), enrol them in the frozen face model and identify a new photo."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.datasets, pytest.mark.weights]
ENROL_MS = 240_000

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "lfw_faces"


def _fresh(locator):
    return locator.locator('xpath=self::*[not(ancestor-or-self::*[@data-stale="true"])]')


@pytest.mark.timeout(900)
def test_enrol_two_people_and_identify_a_photo(page, app_url, st_helpers, tmp_path: Path):
    from playwright.sync_api import expect

    if not SHARED.is_dir():
        pytest.skip("../shared/datasets/lfw_faces is not on this machine")
    people = sorted(p.name for p in SHARED.iterdir() if p.is_dir())[:2]
    team = tmp_path / "team"
    for person in people:
        (team / person).mkdir(parents=True)
        for f in sorted((SHARED / person).iterdir())[:4]:
            shutil.copy(f, team / person / f.name)
    probe = sorted((SHARED / people[1]).iterdir())[12]

    st = st_helpers
    main = st.main(page)
    st.open(page, app_url)
    main.get_by_text("Face recognition", exact=True).click()
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(main.get_by_role("heading", name="2 · People")).to_be_visible(timeout=st.SLOW_MS)
    main.get_by_role("tab", name="Folder on this computer").click()
    main.get_by_label("Folder path (one sub-folder per person)").fill(str(team))
    main.get_by_label("Folder path (one sub-folder per person)").press("Enter")
    st.wait_idle(page)
    main.get_by_role("button", name="Enrol this folder").click()
    expect(main.get_by_text("Enrolled 8 photos of 2 people")).to_be_visible(timeout=ENROL_MS)
    expect(st.metric_value(page, "Photos with a face")).to_have_text("8", timeout=ENROL_MS)

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="4 · Train", exact=True).click()
    expect(main.get_by_role("heading", name="4 · Enrol in a model")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    main.get_by_role("button", name="Start").click()
    done = _fresh(main.get_by_test_id("stAlert").filter(has_text=re.compile(r"^Enrolled 2 people")))
    expect(done).to_be_visible(timeout=ENROL_MS)

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="5 · Test", exact=True).click()
    expect(main.get_by_role("heading", name="5 · Identify and verify")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    main.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(probe))
    expect(main.get_by_text(re.compile(rf"{re.escape(people[1])} · score \d\.\d+"))).to_be_visible(timeout=ENROL_MS)
    expect(main.get_by_text(re.compile(r"1 face, \d+ ms"))).to_be_visible()
