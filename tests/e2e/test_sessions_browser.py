"""In a real browser: three sessions (three browser contexts) use the app at the same time. Each sees only its own
uploads in progress and its own draft (chosen dataset, typed dataset name). Stored datasets are shared by design
in local mode: a dataset one session imports appears in the others' lists without changing their choices.

Two datasets are imported beforehand with the CLI into the e2e server's data root (`app_home`).
"""

from __future__ import annotations

import io
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
SHARED = ("Shared Alpha", "Shared Beta")
VIEWPORT = {"width": 1400, "height": 1000}


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _folder(root: Path, prefix: str, per_class: int, seed: int) -> Path:
    for c, label in enumerate(("ants", "bees")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            (root / label / f"{prefix}_{label}_{i}.jpg").write_bytes(_jpeg(seed + 10 * c + i))
    return root


@pytest.fixture(scope="module")
def shared_datasets(app_url: str, app_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two stored datasets (name -> selectbox option text), imported with the CLI into the server's data root."""
    options = {}
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
    for k, name in enumerate(SHARED):
        src = _folder(tmp_path_factory.mktemp(f"shared{k}") / "photos", f"shared{k}", 3, 1000 * (k + 1))
        cmd = [python, "-m", "core.cli", "data", "import", str(src), "--name", name, "--json", "--quiet"]
        env = {**os.environ, "TRANSFER_STUDIO_HOME": str(app_home), "PYTHONUNBUFFERED": "1"}
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        options[name] = f"{name} — {summary['images']:,} images, {len(summary['classes'])} classes"
    return options


def _open_data_page(page, app_url, st) -> None:
    from playwright.sync_api import expect

    st.open(page, app_url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "data"), timeout=st.SLOW_MS)
    expect(st.main(page).get_by_role("heading", name="2 · Bring your photos")).to_be_visible()
    st.wait_idle(page)
    _show_uploads(page)


def _show_uploads(page) -> None:
    from playwright.sync_api import expect

    add = page.get_by_test_id("stMain").get_by_test_id("stExpander").filter(has_text="Add a dataset")
    tab = add.get_by_role("tab", name="Upload a folder")
    if not tab.is_visible():
        add.get_by_text("Add a dataset", exact=True).click()
    expect(tab).to_be_visible()


def _choose(page, st, option: str) -> None:
    from playwright.sync_api import expect

    box = page.get_by_role("combobox", name="Dataset to train on", exact=True)
    for attempt in range(3):  # a rerun still in flight (from the previous input) can redraw the box under the click
        st.wait_idle(page)
        box.click()
        page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()
        try:
            expect(box).to_have_value(option, timeout=10_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    st.wait_idle(page)


def _revisit_data_page(page, app_url, st) -> None:
    """Leave for Home and come back through the sidebar: same session, so the draft must still be there."""
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Home", exact=True).click()
    expect(st.main(page).get_by_role("heading", name="Transfer Studio")).to_be_visible(timeout=st.SLOW_MS)
    st.wait_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="2 · Data", exact=True).click()
    expect(page).to_have_url(st.page_url(app_url, "data"), timeout=st.SLOW_MS)
    st.wait_idle(page)
    _show_uploads(page)


def _uploaded_names(page) -> str:
    """Full names of the files waiting in the page's uploaders (the chips show them shortened; the title is whole)."""
    return " ".join(page.get_by_test_id("stFileChipName").evaluate_all("els => els.map(e => e.title)"))


def test_three_sessions_keep_their_uploads_and_drafts_apart(browser, app_url, st_helpers, shared_datasets,
                                                          tmp_path: Path):
    from playwright.sync_api import expect

    st = st_helpers
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(3)]
    dialogs: list[str] = []
    try:
        pages = []
        for ctx in contexts:
            ctx.set_default_timeout(st.SLOW_MS)
            pg = ctx.new_page()
            pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            pages.append(pg)
        a, b, c = pages
        for pg in pages:  # all three connected at once
            _open_data_page(pg, app_url, st)

        # Two sessions start uploads (not imported yet) and choose different stored datasets; the third does nothing.
        alpha, beta = shared_datasets[SHARED[0]], shared_datasets[SHARED[1]]
        a.locator(".st-key-data_upload_folder input[type=file]").set_input_files(
            _folder(tmp_path / "a" / "alpha upload", "alphafile", 2, 1))
        b.locator(".st-key-data_upload_folder input[type=file]").set_input_files(
            _folder(tmp_path / "b" / "beta upload", "betafile", 3, 2))
        expect(st.main(a).get_by_text("4 files", exact=False)).to_be_visible()
        expect(st.main(b).get_by_text("6 files", exact=False)).to_be_visible()
        st.wait_idle(a)
        st.wait_idle(b)
        a.get_by_role("textbox", name="Dataset name", exact=True).fill("alpha typed name")
        a.get_by_role("textbox", name="Dataset name", exact=True).press("Enter")
        st.wait_idle(a)
        _choose(a, st, alpha)
        _choose(b, st, beta)

        def check_apart() -> None:
            """Each session shows its own uploads and draft only."""
            for pg in pages:
                st.wait_idle(pg)
            assert "alphafile" in _uploaded_names(a) and "betafile" not in _uploaded_names(a)
            assert "betafile" in _uploaded_names(b) and "alphafile" not in _uploaded_names(b)
            expect(c.get_by_test_id("stFileChip")).to_have_count(0)
            expect(a.get_by_test_id("stFileChip")).to_have_count(4)
            expect(b.get_by_test_id("stFileChip")).to_have_count(6)
            for pg, own in ((a, "alphafile"), (b, "betafile"), (c, None)):
                html = pg.content()  # text and attributes (titles, labels) of the whole page
                leaked = [name for name in ("alphafile", "betafile") if name != own and name in html]
                assert leaked == [], f"another session's upload is visible: {leaked}"
            expect(a.get_by_role("textbox", name="Dataset name", exact=True)).to_have_value("alpha typed name")
            expect(b.get_by_role("textbox", name="Dataset name", exact=True)).to_have_value("")
            expect(c.get_by_role("textbox", name="Dataset name", exact=True)).to_have_count(0)
            sidebar = [pg.get_by_test_id("stSidebar") for pg in pages]
            expect(sidebar[0].get_by_text(f"Data: {SHARED[0]}")).to_be_visible()
            expect(sidebar[1].get_by_text(f"Data: {SHARED[1]}")).to_be_visible()
            expect(sidebar[2].get_by_text("Data: not chosen yet")).to_be_visible()
            expect(a.get_by_role("combobox", name="Dataset to train on", exact=True)).to_have_value(alpha)
            expect(b.get_by_role("combobox", name="Dataset to train on", exact=True)).to_have_value(beta)
            expect(c.get_by_role("combobox", name="Dataset to train on", exact=True)).to_have_value("")

        check_apart()
        _revisit_data_page(c, app_url, st)  # the idle session moves around: nothing of the others leaks in
        check_apart()

        # A imports its upload. The new dataset is shared (it appears in B's and C's lists) but B keeps its own
        # upload in progress, its typed name and its choice, and C still has chosen nothing.
        st.main(a).get_by_role("button", name="Import these photos").click()
        expect(st.main(a).get_by_role("heading", name="alpha typed name")).to_be_visible(timeout=st.SLOW_MS)
        st.wait_idle(a)
        expect(a.get_by_test_id("stSidebar").get_by_text("Data: alpha typed name")).to_be_visible()
        expect(a.get_by_test_id("stFileChip")).to_have_count(0)  # A's uploader emptied, only A's
        name_b = b.get_by_role("textbox", name="Dataset name", exact=True)
        name_b.fill("beta typed name")  # B works on (a rerun of its own page, upload kept)
        name_b.press("Enter")
        _revisit_data_page(c, app_url, st)
        new_option = "alpha typed name — 4 images, 2 classes"
        for pg in (b, c):
            st.wait_idle(pg)
            box = pg.get_by_role("combobox", name="Dataset to train on", exact=True)
            box.click()
            expect(pg.get_by_role("listbox").get_by_role("option", name=new_option, exact=True)).to_have_count(1)
            pg.keyboard.press("Escape")
            st.wait_idle(pg)
        expect(b.get_by_role("combobox", name="Dataset to train on", exact=True)).to_have_value(beta)
        expect(c.get_by_role("combobox", name="Dataset to train on", exact=True)).to_have_value("")
        expect(name_b).to_have_value("beta typed name")
        expect(st.main(b).get_by_text("6 files", exact=False)).to_be_visible()
        expect(b.get_by_test_id("stFileChip")).to_have_count(6)
        assert "betafile" in _uploaded_names(b) and "alphafile" not in b.content()
        expect(c.get_by_test_id("stFileChip")).to_have_count(0)
        expect(b.get_by_test_id("stSidebar").get_by_text(f"Data: {SHARED[1]}")).to_be_visible()
        expect(c.get_by_test_id("stSidebar").get_by_text("Data: not chosen yet")).to_be_visible()
        _revisit_data_page(a, app_url, st)  # A's own choice survives its page moves
        expect(a.get_by_role("combobox", name="Dataset to train on", exact=True)).to_have_value(
            "alpha typed name — 4 images, 2 classes")
        for pg in pages:
            expect(pg.get_by_test_id("stException")).to_have_count(0)
        assert dialogs == []
    finally:
        for ctx in contexts:
            ctx.close()
