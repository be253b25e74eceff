"""Data: bring photos in (folder, zip, sample, a folder on this computer), check them, fix problems, choose one.

Everything the user supplied (dataset, class and file names) is shown as text: escaped in Markdown, plain in tables.
Heavy work (reports, thumbnails, the dataset list) is cached by dataset id + manifest time.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import time
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import store
from core.data.archive import ArchiveError
from core.data.names import PHOTO_UPLOAD_TYPES
from core.data.samples import ensure_sample_dataset
from core.data.splits import SplitConfig
from core.data.usage import ACTIVE_STATES, describe_runs, runs_using
from core.settings import datasets_root, subdir
from views.common import count, draft, esc, refusal_reason, set_draft, step_page

QUOTA_ENV = "TRANSFER_STUDIO_UPLOAD_QUOTA_MB"
SERVER_PATHS_ENV = "TRANSFER_STUDIO_SERVER_PATHS"  # "1" / "0" overrides the local-only rule
THUMBS_PER_CLASS = 6
MAX_THUMB_CLASSES = 24
MAX_CONFLICT_ROWS = 10  # rows of "keep it in this class" buttons shown at once
SPLIT_COLOURS = {"train": "#2563eb", "val": "#f59e0b", "test": "#10b981"}
SPLIT_MODES = {"folders": "from the train/val folders",
               "folders+stratified": "from the folders; validation photos drawn from train, the same share per class",
               "stratified": "validation photos drawn at random, the same share per class (the same draw each time)"}
DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate", "leakage")
BAD_KINDS = ("unreadable", "unsupported_format", "too_small", "too_large", "low_detail", "not_image_file", "link",
             "too_deep", "outside_class_folder", "unsafe_path", "special_file", "duplicate_name", "nested_archive",
             "encrypted", "corrupt")
KIND_LABELS = {
    "no_images": "no images", "too_few_classes": "too few classes", "too_few_images": "too few images",
    "few_images": "few images", "imbalance": "imbalance", "missing_split": "missing split", "unreadable": "unreadable",
    "unsupported_format": "unsupported format", "too_small": "too small", "too_large": "too large",
    "low_detail": "not a photo?", "not_image_file": "not an image", "outside_class_folder": "outside a class folder",
    "link": "link", "too_deep": "nested too deep", "exact_duplicate": "duplicate", "near_duplicate": "near duplicate",
    "leakage": "train/val leakage", "conflicting_label": "two classes", "unsafe_path": "unsafe path",
    "special_file": "special file", "duplicate_name": "duplicate name", "nested_archive": "archive in archive",
    "encrypted": "encrypted", "corrupt": "corrupt",
}
SEVERITY_ICONS = {"error": "⛔ error", "warning": "⚠️ warning", "info": "ℹ️ note"}
SPOOL_NAME = re.compile(r"upload-[0-9a-f]{16}\.zip")  # the app's own name for an uploaded zip while it is imported


def _flash(kind: str, message: str) -> None:
    """A message shown once at the top of the next run (messages are already escaped)."""
    st.session_state.setdefault("data_flash", []).append((kind, message))


def _choose(dataset_id: str) -> None:
    """Make ``dataset_id`` the draft's dataset and the selectbox's value on the next run."""
    set_draft("dataset_id", dataset_id)
    st.session_state["data_pending_select"] = dataset_id
    st.session_state["data_add_panel_close"] = True  # the new dataset's report is what to see next


def _quota_bytes() -> int:
    try:
        return int(float(os.environ.get(QUOTA_ENV, "2048")) * 1024**2)
    except ValueError:
        return 2048 * 1024**2


def _quota_left() -> int:
    return max(0, _quota_bytes() - int(st.session_state.get("data_upload_used", 0)))


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB" if n >= 1024**3 else f"{n / 1024**2:.1f} MB"


def _server_paths_allowed() -> bool:
    """Server-side folder paths only when the app is bound to this machine (or explicitly allowed/denied)."""
    env = os.environ.get(SERVER_PATHS_ENV, "")
    if env in ("0", "1"):
        return env == "1"
    return str(st.get_option("server.address") or "") in ("127.0.0.1", "localhost", "::1")


def _uploader_key(base: str) -> str:
    """Uploaders get a fresh key after an import, which empties them (the generation starts at 0: plain key)."""
    gen = int(st.session_state.get("data_upload_gen", 0))
    return base if gen == 0 else f"{base}_{gen}"


def _release(files: list) -> None:
    """Drop uploaded bytes from the session's memory now (not at session end) and empty the uploaders."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None:
            for f in files:
                ctx.uploaded_file_mgr.remove_file(ctx.session_id, f.file_id)
    except Exception:  # noqa: BLE001 - best effort: the bytes go at session end anyway
        pass
    st.session_state["data_upload_gen"] = int(st.session_state.get("data_upload_gen", 0)) + 1


def _charge(n_bytes: int) -> bool:
    """Count an upload against the session quota; False (and an error shown) when it does not fit."""
    if n_bytes > _quota_left():
        st.error(f"This session may upload {_gb(_quota_bytes())} in all; {_gb(_quota_left())} is left and this "
                 f"upload is {_gb(n_bytes)}. Upload less at a time, or use the command line "
                 "(`transfer-studio data import`) for big datasets.")
        return False
    st.session_state["data_upload_used"] = int(st.session_state.get("data_upload_used", 0)) + n_bytes
    return True


def _refund(n_bytes: int) -> None:
    """Give quota back for an upload that was not imported."""
    st.session_state["data_upload_used"] = max(0, int(st.session_state.get("data_upload_used", 0)) - n_bytes)


def _progress(phases: tuple[str, ...]) -> Callable[[int, int], None]:
    """A progress bar for ``on_progress(done, total)``; a new phase starts when ``done`` goes back (unzip, check)."""
    bar = st.progress(0.0, text=phases[0])
    state = {"phase": 0, "last": 0, "t": 0.0}

    def update(done: int, total: int) -> None:
        if done < state["last"] or (done == 0 and state["last"] > 0):
            state["phase"] = min(state["phase"] + 1, len(phases) - 1)
        state["last"] = done
        now = time.monotonic()
        if done < total and now - state["t"] < 0.15:
            return
        state["t"] = now
        bar.progress(min(1.0, done / total) if total else 1.0, text=f"{phases[state['phase']]}: {done:,} / {total:,}")

    return update


def _source_label(source: dict) -> str:
    """Where a dataset came from, escaped ("zip ants.zip"); the app's own spool name (``upload-<hex>.zip``, kept by
    datasets imported before the upload's name was recorded) is never shown."""
    kind, name = str(source.get("kind", "")), str(source.get("name") or "")
    if kind == "zip" and (not name or SPOOL_NAME.fullmatch(name)):
        return "an uploaded zip"
    return esc(f"{kind} {name}".strip())


def _imported(result: store.ImportResult, how: str) -> None:
    ds = result.dataset
    skipped = f"; {count(len(result.skipped), 'file')} skipped (see the problems)" if result.skipped else ""
    classes = count(len(ds.classes), "class", "classes")
    _flash("success", f"{how} **{esc(ds.name)}**: {count(result.imported, 'image')} in {classes}{skipped}.")
    _choose(ds.id)
    _cached_list.clear()


# ------------------------------------------------------------------------------------------------ cached views

@st.cache_resource(show_spinner=False)
def _cleanup_once() -> int:
    """Remove leftovers of interrupted imports and uploads (once per server process)."""
    removed = store.cleanup_incomplete()
    now = time.time()
    for entry in os.scandir(subdir("tmp")):
        with contextlib.suppress(OSError):
            if entry.name.startswith("upload-") and now - entry.stat().st_mtime > 6 * 3600:
                os.unlink(entry.path)
                removed += 1
    return removed


def _store_fingerprint() -> tuple:
    """Cheap: the manifest times of every dataset (one stat each)."""
    out = []
    for entry in os.scandir(datasets_root()):
        try:
            out.append((entry.name, os.stat(os.path.join(entry.path, store.MANIFEST)).st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(out))


@st.cache_data(show_spinner=False, max_entries=8)
def _cached_list(fingerprint: tuple) -> list[store.DatasetSummary]:  # noqa: ARG001 - the cache key
    return store.list_datasets(task="classification")


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_view(dataset_id: str, stamp: int) -> dict:  # noqa: ARG001 - stamp is the cache key
    """Everything the report shows, as plain data (names for display, stored file names for fixes)."""
    ds = store.load_dataset(dataset_id)
    report = store.dataset_report(ds)
    names = {it.file: it.original_name or it.file for it in ds.items}
    labels = {it.file: it.label for it in ds.items}
    problems = [{"severity": p.severity, "kind": p.kind, "message": p.message,
                 "files": [names.get(f, f) for f in p.files], "raw_files": list(p.files),
                 "file_labels": [labels.get(f) for f in p.files],
                 "fix_files": list(p.fix_files), "classes": list(p.classes),
                 "stored": [f for f in p.files if f in names]} for p in report.problems]
    per_class: dict[str, list[str]] = {c: [] for c in ds.classes}
    for it in ds.items:
        per_class.setdefault(it.label, []).append(it.file)
    samples = {}
    for c, files in per_class.items():
        step = max(1, len(files) // THUMBS_PER_CLASS)
        samples[c] = files[::step][:THUMBS_PER_CLASS]
    return {"id": ds.id, "name": ds.name, "classes": list(ds.classes), "counts": report.counts,
            "split_mode": ds.split_mode, "images": len(ds.items), "skipped": len(ds.skipped),
            "blocking": report.blocking, "problems": problems, "weights": store.class_weights(ds),
            "totals": {c: len(v) for c, v in per_class.items()}, "samples": samples, "source": ds.source}


@st.cache_data(show_spinner=False, max_entries=4000)
def _thumbnail(dataset_id: str, file: str, side: int = 96) -> bytes | None:
    """A small square JPEG of one stored image (decoded with the same safe loader as training)."""
    from PIL import ImageOps

    from core.data.images import ImageError, load_rgb

    try:
        im = load_rgb(store.file_path(dataset_id, file))
    except (ImageError, store.DatasetError, OSError):
        return None
    thumb = ImageOps.fit(im, (side, side))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def counts_figure(classes: list[str], counts: dict[str, dict[str, int]]) -> go.Figure:
    """Images per class, one bar colour per split (class names HTML-escaped: plotly reads a little HTML)."""
    import html

    labels = [html.escape(c) for c in classes]
    fig = go.Figure()
    for split in ("train", "val", "test"):
        if split in counts:
            fig.add_trace(go.Bar(x=labels, y=[counts[split].get(c, 0) for c in classes], name=split,
                                 marker_color=SPLIT_COLOURS[split], hovertemplate="%{x}: %{y} " + split +
                                 "<extra></extra>"))
    fig.update_layout(barmode="stack", height=300, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="images",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right", traceorder="normal"))
    fig.update_xaxes(type="category")
    return fig


# ------------------------------------------------------------------------------------------------ actions (callbacks)

def _bad_label(stored: int, notes: int) -> str:
    """The fix button: files in the dataset are dropped, notes about files never imported are only cleared."""
    if not stored:
        return f"Clear the notes about files never imported ({notes})"
    return f"Drop bad files ({stored})" + (f" and clear {count(notes, 'note')}" if notes else "")


def _bad_done(stored: int, notes: int) -> str:
    """What the fix did, for the message after it ('Dropped …')."""
    parts = [f"{count(stored, 'bad or unusable file')}"] if stored else []
    if notes:
        parts.append(f"the notes about {count(notes, 'file')} that were never imported")
    return " and ".join(parts)


def _settle(target: store.EditTarget, changed: bool = True) -> None:
    """After an edit that went into a copy (``store.editing``): choose the copy and say why the original stayed as
    it was; a copy the edit did not change (no photo added) is removed again."""
    if target.kept is None:
        return
    if not changed:
        store.delete_dataset(target.id)
        return
    old = target.kept
    if target.runs:
        why = f"{describe_runs(list(target.runs))} {'was' if len(target.runs) == 1 else 'were'} trained on it"
    else:
        why = "it is the built-in sample"
    _flash("info", f"**{esc(old.name)}** stays as it was, because {esc(why)}. Your change went into a new "
                   f"dataset, **{esc(store.load_dataset(target.id).name)}**, which is now chosen.")
    _choose(target.id)
    _cached_list.clear()


def _drop(dataset_id: str, files: list[str], what: str) -> None:
    try:
        with store.editing(dataset_id) as target:
            store.drop_files(target.id, files)
    except store.DatasetError as err:
        _flash("error", f"Could not drop the files: {esc(err.reason)}")
        return
    _flash("success", f"Dropped {what}. The report below is up to date.")
    _settle(target)
    _cached_list.clear()


def _keep_only_in(problem: dict, label: str) -> list[str]:
    """The stored files of a "same picture under two classes" problem to drop so that it stays only in `label`."""
    pairs = zip(problem["raw_files"], problem["file_labels"], strict=True)
    return [f for f, c in pairs if c is not None and c != label]


def _conflict_fixes(dataset_id: str, problems: list[dict]) -> None:
    """One row per picture filed under two classes, with a button per class: keep it there, drop the other copies
    (the report says to, and without this the page had no way to drop one photo)."""
    conflicts = [p for p in problems if p["kind"] == "conflicting_label"
                 and len({c for c in p["file_labels"] if c is not None}) > 1]
    if not conflicts:
        return
    st.markdown("**The same picture under two classes:** keep it in the class it belongs to (its other copies are "
                "dropped)")
    for n, p in enumerate(conflicts[:MAX_CONFLICT_ROWS]):
        row = st.container(horizontal=True, vertical_alignment="center", key=f"data_conflict_{n}")
        row.caption(esc(", ".join(f"{f} ({c})" for f, c in zip(p["files"], p["file_labels"], strict=True))))
        for j, label in enumerate(sorted({c for c in p["file_labels"] if c is not None})):
            drop = _keep_only_in(p, label)
            row.button(f"Keep in {esc(label)}", key=f"data_keep_{n}_{j}", on_click=_drop,
                       args=(dataset_id, drop, f"{count(len(drop), 'copy', 'copies')} filed outside "
                             f"**{esc(label)}**"))
    if len(conflicts) > MAX_CONFLICT_ROWS:
        st.caption(f"…and {len(conflicts) - MAX_CONFLICT_ROWS} more: fix these first, the next ones come up then.")


def _set_weights(on: bool) -> None:
    set_draft("class_weights", on)
    _flash("success", "Training will weight each class by its rarity (balanced loss)." if on
           else "Class weights are off: every image counts the same.")


def _add_class(dataset_id: str) -> None:
    name = st.session_state.get("data_new_class", "")
    try:
        with store.editing(dataset_id) as target:
            store.add_class(target.id, name)
    except store.DatasetError as err:
        _flash("error", esc(err.reason))
        return
    st.session_state["data_new_class"] = ""
    _flash("success", f"Added the class **{esc(name.strip())}**. Add photos to it below.")
    _settle(target)


def _rename_class(dataset_id: str) -> None:
    old = st.session_state.get("data_rename_from")
    new = st.session_state.get("data_rename_to", "")
    try:
        with store.editing(dataset_id) as target:
            store.rename_class(target.id, old, new)
    except store.DatasetError as err:
        _flash("error", esc(err.reason))
        return
    st.session_state["data_rename_to"] = ""
    _flash("success", f"Renamed **{esc(old)}** to **{esc(new.strip())}**.")
    _settle(target)


def _remove_class(dataset_id: str) -> None:
    name = st.session_state.get("data_remove_class")
    try:
        with store.editing(dataset_id) as target:
            store.remove_class(target.id, name)
    except store.DatasetError as err:
        _flash("error", esc(err.reason))
        return
    st.session_state["data_remove_confirm"] = False
    _flash("success", f"Removed the class **{esc(name)}** and its stored photos.")
    _settle(target)


def _training_on(dataset_id: str) -> list:
    """The runs training on (or queued for) the dataset now, checked against their processes (a run whose process
    died is marked crashed and is not counted)."""
    claimed = [u for u in runs_using(dataset_id) if u.says_active]
    if not claimed:
        return []
    from core import jobs  # loads torch: only when a run says it trains
    from core.settings import runs_root

    return [u for u in claimed if jobs.state(runs_root() / u.run_id).get("state") in ACTIVE_STATES]


def _delete(dataset_id: str) -> None:
    busy = _training_on(dataset_id)  # checked again at the click: a run may have started since the page was drawn
    if busy:
        _flash("error", f"Not deleted: {esc(describe_runs(busy))} "
                        f"{'is' if len(busy) == 1 else 'are'} training on this dataset now. Stop "
                        f"{'it' if len(busy) == 1 else 'them'} on the Train page first.")
        return
    try:
        store.delete_dataset(dataset_id)
    except store.DatasetError as err:
        _flash("error", esc(err.reason))
        return
    if draft("dataset_id") == dataset_id:
        set_draft("dataset_id", None)
    st.session_state.pop("data_select", None)
    _cached_list.clear()
    _flash("success", "The dataset was deleted.")


def _dataset_option(summary: store.DatasetSummary) -> str:
    """A dataset as the box offers it: name, images, classes and whether it needs fixing."""
    return (f"{summary.name} — {summary.images:,} images, {len(summary.classes)} classes"
            + (" (needs fixing)" if summary.blocking else ""))


SHOWN_OPTION = "data_select_shown"  # (dataset id, its label) as the closed box last showed it


def _resend_if_relabelled(selected: str | None, by_id: dict[str, store.DatasetSummary]) -> None:
    """An edit in place (photos added, a class removed, a fix) changes the chosen dataset's label, but the closed
    box keeps the text it showed when the value was set: send the same value again so it shows the new label. Only
    then, never on every rerun (see below)."""
    label = _dataset_option(by_id[selected]) if selected in by_id else None
    before = st.session_state.get(SHOWN_OPTION)
    if label is not None and before is not None and before[0] == selected and before[1] != label:
        st.session_state["data_select"] = selected
    st.session_state[SHOWN_OPTION] = (selected, label)


# ------------------------------------------------------------------------------------------------ page

_cleanup_once()
st.title("2 · Bring your photos")
st.write("One folder per class (e.g. `ants/`, `bees/`), optionally inside `train/` and `val/`. Everything is "
         "checked before training: unreadable files, duplicates, tiny classes, images in both train and val.")

if "data_pending_select" in st.session_state:
    st.session_state["data_select"] = st.session_state.pop("data_pending_select")
for kind, message in st.session_state.pop("data_flash", []):
    getattr(st, kind)(message)

current = draft("dataset_id")
if isinstance(current, str) and current.startswith("sample:"):  # chosen on Home: use the stored copy
    sample = current.split(":", 1)[1]
    try:
        _choose(ensure_sample_dataset(sample, on_progress=_progress(("Preparing the sample dataset",))))
        _cached_list.clear()
        st.rerun()
    except store.DatasetError as err:
        st.warning(esc(err.reason))
        set_draft("dataset_id", None)

summaries = _cached_list(_store_fingerprint())
ids = [s.id for s in summaries]
by_id = {s.id: s for s in summaries}
if isinstance(current, str) and re.fullmatch(r"[0-9a-f]{32}", current) and current not in ids:
    set_draft("dataset_id", None)  # deleted meanwhile (e.g. in another tab)
    current = None
chosen: str | None = None
if ids:
    # Write the box's value only when it must change (first draw on this visit, or its dataset is gone): every
    # write is sent to the browser as "set this value", and one sent by a rerun still in flight would blank a
    # choice the user makes meanwhile (the app would use it while the box showed nothing).
    want = current if current in ids else None
    if "data_select" not in st.session_state or st.session_state["data_select"] not in (*ids, want):
        st.session_state["data_select"] = want
    _resend_if_relabelled(st.session_state["data_select"], by_id)
    chosen = st.selectbox(
        "Dataset to train on", ids, key="data_select", placeholder="Choose a dataset",
        format_func=lambda i: _dataset_option(by_id[i]),
        help="Datasets stay stored in the app (under its data folder) across sessions and restarts.")
    if chosen is not None and chosen != current:
        set_draft("dataset_id", chosen)
else:
    st.info("No datasets yet: add one below, or start with the sample dataset in one click.")

if st.session_state.pop("data_add_panel_close", False):
    st.session_state["data_add_panel"] = False
# a key and tracked state keep the panel open while the user picks a file (it closed at that rerun, hiding the
# name field and the import button); an import closes it
with st.expander("Add a dataset", expanded=not ids, icon=":material/add_photo_alternate:", key="data_add_panel",
                 on_change="rerun"):
    sample_row = st.container(horizontal=True, vertical_alignment="center")
    if sample_row.button("Use the sample dataset (textures)", key="data_use_sample", type="primary" if not ids
                         else "secondary", icon=":material/auto_awesome:"):
        try:
            sample_id = ensure_sample_dataset("textures", on_progress=_progress(("Preparing the sample",)))
        except store.DatasetError as err:
            st.error(esc(err.reason))
        else:
            _flash("success", "The sample dataset is ready.")
            _choose(sample_id)
            _cached_list.clear()
            st.rerun()
    sample_row.caption("Just trying it out? Brick, grass and gravel, 52 photos each, already split into train "
                       "and val.")
    tab_names = ["Upload a folder", "Upload a zip"]
    local = _server_paths_allowed()
    if local:
        tab_names.append("Folder on this computer")
    tabs = st.tabs(tab_names)
    quota_note = (f"Uploads are limited to {_gb(_quota_bytes())} per session ({_gb(_quota_left())} left); "
                  "files are copied into the app's own storage under generated names.")
    with tabs[0]:
        uploads = st.file_uploader("Drop a folder of class folders here (or browse for one)",
                                   accept_multiple_files="directory", key=_uploader_key("data_upload_folder"),
                                   help="e.g. a folder holding ants/ and bees/, or train/ and val/ with class "
                                        "folders inside. Non-image files are reported, not imported.")
        st.caption(quota_note)
        if uploads:
            size = sum(f.size for f in uploads)
            tops = sorted({f.name.replace("\\", "/").split("/")[0] for f in uploads})
            default = tops[0] if len(tops) == 1 and "/" in uploads[0].name.replace("\\", "/") else "Uploaded photos"
            st.write(f"{len(uploads):,} files, {_gb(size)}.")
            c1, c2 = st.columns(2)
            name = c1.text_input("Dataset name", key="data_folder_name", max_chars=100, placeholder=default) or default
            loose = c2.text_input("Class for files that are not in a class folder (optional)",
                                  key="data_upload_class", max_chars=100)
            val = st.slider("Validation share when there is no val/ folder", 0.1, 0.5, 0.2, 0.05,
                            key="data_folder_val")
            if st.button("Import these photos", key="data_import_folder", type="primary",
                         icon=":material/upload:") and _charge(size):
                try:
                    result = store.import_uploads(((f.name, f.getvalue()) for f in uploads), name,
                                                  default_class=loose, split=SplitConfig(val_fraction=val),
                                                  on_progress=_progress(("Checking images",)))
                except (store.DatasetError, OSError) as err:
                    _refund(size)
                    st.error(f"The photos were not imported: {refusal_reason(err)}")
                else:
                    _release(uploads)
                    _imported(result, "Imported")
                    st.rerun()
    with tabs[1]:
        zipped = st.file_uploader("Drop a .zip of class folders here", type=["zip"],
                                  key=_uploader_key("data_upload_zip"))
        st.caption(quota_note + " Zips are unpacked by the app, entry by entry, with size checks.")
        if zipped is not None:
            c1, c2 = st.columns(2)
            stem = re.sub(r"\.zip$", "", zipped.name, flags=re.IGNORECASE) or "Uploaded zip"
            name = c1.text_input("Dataset name", key="data_zip_name", max_chars=100, placeholder=stem) or stem
            val = c2.slider("Validation share when there is no val/ folder", 0.1, 0.5, 0.2, 0.05, key="data_zip_val")
            if st.button("Import this zip", key="data_import_zip", type="primary", icon=":material/upload:") \
                    and _charge(zipped.size):
                spool = subdir("tmp") / f"upload-{secrets.token_hex(8)}.zip"  # our name, never the client's
                try:
                    with open(spool, "xb") as fh:
                        fh.write(zipped.getbuffer())
                    result = store.import_zip(spool, name, split=SplitConfig(val_fraction=val),
                                              on_progress=_progress(("Unpacking", "Checking images")),
                                              display_name=zipped.name)  # shown, never a path
                except (ArchiveError, store.DatasetError, OSError) as err:
                    _refund(zipped.size)
                    st.error(f"The zip was not imported: {refusal_reason(err, zipped.name)}")
                else:
                    _release([zipped])
                    _imported(result, "Imported")
                    st.rerun()
                finally:
                    spool.unlink(missing_ok=True)
    if local:
        with tabs[2]:
            st.write("For big datasets on this machine: the folder is copied into the app's storage (the original "
                     "stays untouched). Only offered because the app runs locally.")
            path = st.text_input("Folder path", key="data_server_path", placeholder="/home/me/photos/ants-and-bees")
            c1, c2 = st.columns(2)
            pname = c1.text_input("Dataset name (default: the folder name)", key="data_path_name", max_chars=100)
            val = c2.slider("Validation share when there is no val/ folder", 0.1, 0.5, 0.2, 0.05, key="data_path_val")
            if st.button("Import this folder", key="data_import_path", type="primary", disabled=not path.strip(),
                         icon=":material/folder_open:"):
                typed = os.path.expanduser(path.strip())
                folder = os.path.abspath(typed)
                if not os.path.isabs(typed):  # relative to wherever the app was started: never what a user means
                    st.error(f"{esc(path.strip())} is not a full path: type the whole path of the folder, from / "
                             "(e.g. /home/me/photos/ants-and-bees).")
                elif not os.path.isdir(folder):
                    st.error(f"There is no folder at {esc(folder)}.")
                else:
                    try:
                        result = store.import_folder(folder, pname or os.path.basename(folder),
                                                     split=SplitConfig(val_fraction=val),
                                                     on_progress=_progress(("Checking images",)))
                    except (store.DatasetError, OSError) as err:
                        st.error(f"The folder was not imported: {refusal_reason(err)}")
                    else:
                        _imported(result, "Imported")
                        st.rerun()

if chosen is None:
    st.stop()

# ------------------------------------------------------------------------------------------------ the report
try:
    view = _cached_view(chosen, store.manifest_stamp(chosen))
except store.DatasetError as err:
    st.error(f"This dataset cannot be read: {esc(err.reason)}")
    st.stop()

st.subheader(esc(view["name"]), anchor=False)
errors = [p for p in view["problems"] if p["severity"] == "error"]
warnings = [p for p in view["problems"] if p["severity"] == "warning"]
m = st.columns(4)
m[0].metric("Images", f"{view['images']:,}")
m[1].metric("Classes", len(view["classes"]))
m[2].metric("Errors", len(errors))
m[3].metric("Warnings", len(warnings))
st.caption(f"Train/validation split: {SPLIT_MODES.get(view['split_mode'], view['split_mode'])}. "
           f"Source: {_source_label(view['source'])}.")
if view["blocking"]:
    st.error("**Training is blocked until these are fixed:**\n\n" +
             "\n".join(f"- {esc(p['message'])}" for p in errors), icon=":material/block:")
elif warnings:
    st.warning(f"Ready to train, with {len(warnings)} warning(s) below worth a look.", icon=":material/warning:")
else:
    st.success("Ready to train: no problems found.", icon=":material/check_circle:")

st.markdown("**Images per class and split**")
left, right = st.columns([3, 2])
with left:
    st.plotly_chart(counts_figure(view["classes"], view["counts"]), key="data_counts_chart",
                    config={"displayModeBar": False})
with right:
    splits = [s for s in ("train", "val", "test") if s in view["counts"]]
    table = pd.DataFrame([{"class": c, **{s: view["counts"][s].get(c, 0) for s in splits},
                           "total": view["totals"].get(c, 0)} for c in view["classes"]])
    st.dataframe(table, hide_index=True, key="data_counts_table", height=min(300, 38 + 35 * len(table)))

if view["problems"]:
    st.markdown("**Problems**")
    rows = [{"severity": SEVERITY_ICONS.get(p["severity"], p["severity"]), "reason": KIND_LABELS.get(p["kind"],
             p["kind"]), "files": ", ".join(p["files"][:6]) + (f" (+{len(p['files']) - 6} more)"
                                                               if len(p["files"]) > 6 else ""),
             "details": p["message"]} for p in view["problems"]]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="data_problems", height=min(400, 38 + 35 * len(rows)),
                 column_config={"severity": st.column_config.TextColumn("Severity", width="small"),
                                "reason": st.column_config.TextColumn("Reason", width="small"),
                                "files": st.column_config.TextColumn("File(s)", width="medium"),
                                "details": st.column_config.TextColumn("Details", width="large")})

    _conflict_fixes(chosen, view["problems"])
    dup_files = sorted({f for p in view["problems"] if p["kind"] in DUPLICATE_KINDS for f in p["fix_files"]})
    bad = [p for p in view["problems"] if p["kind"] in BAD_KINDS]
    bad_files = sorted({f for p in bad for f in (p["fix_files"] or p["raw_files"])})
    stored_bad = {f for p in bad for f in p.get("stored", ())}  # files in the dataset: removed
    never_imported = set(bad_files) - stored_bad  # notes about files that were never imported: cleared
    if dup_files or bad_files:
        st.markdown("**One-click fixes** (they act only on the files named above; everything else stays)")
        fixes = st.container(horizontal=True)
        if dup_files:
            fixes.button(f"Drop duplicates ({len(dup_files)} file{'s' * (len(dup_files) != 1)})",
                      key="data_fix_duplicates", icon=":material/content_copy:", on_click=_drop,
                      args=(chosen, dup_files, f"{len(dup_files)} duplicate "
                            f"{'copy' if len(dup_files) == 1 else 'copies'} (one of each picture is kept)"),
                      help="Removes the extra copies of identical or nearly identical pictures, and the training "
                           "copies of pictures that are also in validation.")
        if bad_files:
            fixes.button(_bad_label(len(stored_bad), len(never_imported)), key="data_fix_bad",
                      icon=":material/delete_sweep:", on_click=_drop,
                      args=(chosen, bad_files, _bad_done(len(stored_bad), len(never_imported))),
                      help="Removes files that could not be used or do not look like photos, and clears the "
                           "notes about files that were never imported.")

weights = view["weights"]
imbalanced = any(p["kind"] == "imbalance" for p in view["problems"])
if draft("class_weights"):
    shown = ", ".join(f"{esc(c)} ×{w:.2f}" for c, w in weights.items())
    st.info(f"Classes are balanced by weights during training: {shown}.", icon=":material/balance:")
    st.button("Stop balancing by class weights", key="data_weights_off", on_click=_set_weights, args=(False,))
elif imbalanced or (weights and max(weights.values()) > 1.1 * min(weights.values())):  # else nothing to balance
    if imbalanced:
        st.caption("Some classes have far fewer images than others. Balancing by class weights makes each class "
                   "count the same in training.")
    st.button("Balance by class weights", key="data_fix_weights", icon=":material/balance:",
              type="primary" if imbalanced else "secondary", on_click=_set_weights, args=(True,))
else:
    st.caption("Every class has about as many training images as the others: nothing to balance.")

st.markdown("**A few images per class**")
for c in view["classes"][:MAX_THUMB_CLASSES]:
    thumbs = [t for t in (_thumbnail(chosen, f) for f in view["samples"].get(c, [])) if t]
    label, pics = st.columns([1, 4], vertical_alignment="center")
    label.markdown(f"{esc(c)}  \n:gray[{view['totals'].get(c, 0):,} images]")
    if thumbs:
        pics.image(thumbs, width=72)
    else:
        pics.caption("no images yet")
if len(view["classes"]) > MAX_THUMB_CLASSES:
    st.caption(f"…and {len(view['classes']) - MAX_THUMB_CLASSES} more classes.")

# a key and tracked state keep the panel open across the reruns its own buttons cause (without them a message
# shown above it moved it, and the browser drew it anew, closed, at the user's next click)
with st.expander("Edit classes, add photos (camera or files)", icon=":material/edit:", key="data_edit_panel",
                 on_change="rerun"):
    c1, c2 = st.columns(2)
    with c1:
        st.text_input("New class", key="data_new_class", max_chars=100, placeholder="e.g. wasps")
        st.button("Add class", key="data_add_class", on_click=_add_class, args=(chosen,))
    with c2:
        st.selectbox("Rename class", view["classes"], key="data_rename_from")
        st.text_input("New name", key="data_rename_to", max_chars=100)
        st.button("Rename", key="data_rename", on_click=_rename_class, args=(chosen,))
    c3, _ = st.columns(2)
    with c3:  # e.g. a class with too few photos that blocks training
        gone = st.selectbox("Remove class", view["classes"], key="data_remove_class",
                            format_func=lambda c: f"{c} ({view['totals'].get(c, 0)} photos)")
        sure = st.checkbox("Yes, remove it with its stored photos (your originals are not affected)",
                           key="data_remove_confirm")
        st.button(f"Remove {gone}" if gone else "Remove", key="data_remove", disabled=not sure,
                  on_click=_remove_class, args=(chosen,))
    st.divider()
    target = st.selectbox("Add photos to class", view["classes"], key="data_photo_class")
    files_col, camera_col = st.columns(2)
    with files_col:
        photos = st.file_uploader("Photos from files", type=list(PHOTO_UPLOAD_TYPES),
                                  accept_multiple_files=True, key=_uploader_key("data_add_files"))
        if photos and target and st.button(f"Add {len(photos)} photo(s)", key="data_add_files_go") and \
                _charge(sum(f.size for f in photos)):
            try:
                with store.editing(chosen) as into:
                    res = store.add_images(into.id, target, [(f.name, f.getvalue()) for f in photos],
                                           on_progress=_progress(("Checking images",)))
            except (store.DatasetError, OSError) as err:
                _refund(sum(f.size for f in photos))
                st.error(f"The photos were not added: {refusal_reason(err)}")
            else:
                _release(photos)
                skipped = f" ({len(res.skipped)} skipped: see the problems)" if res.skipped else ""
                _flash("success", f"Added {res.imported} photo(s) to **{esc(target)}**{skipped}.")
                _settle(into, changed=bool(res.imported))
                st.rerun()
    with camera_col:
        if st.toggle("Use the camera", key="data_camera_on", help="Your browser asks for permission first."):
            shot = st.camera_input("Take a photo", key=_uploader_key("data_camera"))
            if shot is not None and target and st.button(f"Add this photo to {esc(target)}", key="data_camera_add",
                                                         type="primary") and _charge(shot.size):
                try:
                    with store.editing(chosen) as into:
                        res = store.add_images(into.id, target, [(f"camera-{time.strftime('%Y%m%d-%H%M%S')}.jpg",
                                                                  shot.getvalue())])
                except (store.DatasetError, OSError) as err:
                    _refund(shot.size)
                    st.error(f"The photo was not added: {refusal_reason(err)}")
                else:
                    _release([shot])
                    if res.imported:
                        _flash("success", f"Added the photo to **{esc(target)}**.")
                    else:
                        reason = res.skipped[0].reason if res.skipped else "unknown reason"
                        _flash("warning", f"The photo was not added: {esc(reason)}")
                    _settle(into, changed=bool(res.imported))
                    st.rerun()

with st.expander("Delete this dataset", icon=":material/delete:"):
    used = runs_using(chosen)
    if used:
        st.warning(f"{esc(describe_runs(used))} {'was' if len(used) == 1 else 'were'} trained on this dataset. "
                   "Deleting it deletes the photos they were trained on: their results can no longer be computed "
                   "(results computed before stay, also in their reports), and they cannot be resumed or trained "
                   "again. Their trained models stay: they can still be tested and exported.",
                   icon=":material/warning:")
    busy = _training_on(chosen) if any(u.says_active for u in used) else []
    if busy:  # its photos are being read right now: deleting them would break that run midway
        st.error(f"{esc(describe_runs(busy))} {'is' if len(busy) == 1 else 'are'} training on this dataset now: "
                 f"it cannot be deleted until {'it stops' if len(busy) == 1 else 'they stop'} (Stop on the Train "
                 "page, or wait for the end).", icon=":material/block:")
    sure = st.checkbox("Yes, delete it with all its stored photos (the originals you uploaded are not affected)"
                       + (f", although {count(len(used), 'run')} {'was' if len(used) == 1 else 'were'} trained on "
                          "it" if used else ""), key="data_delete_confirm", disabled=bool(busy))
    st.button("Delete dataset", key="data_delete", disabled=not sure or bool(busy), on_click=_delete,
              args=(chosen,))

st.divider()
if view["blocking"]:
    st.caption("Fix the errors above (or add photos) before training.")
nav = st.container(horizontal=True)
nav.page_link(step_page("layers"), label="Next: choose layers", icon=":material/layers:")
if not draft("backbone"):
    nav.page_link(step_page("model"), label="No model chosen yet: choose one first", icon=":material/view_in_ar:")
