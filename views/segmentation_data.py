"""Data (segmentation): bring images + masks, name the classes and the ignore value, see the validation report
(class pixel share, images per class, overlays, problems by file), resize mismatched masks (nearest-neighbour only)
and paint or fix masks on top of the photos."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import store
from core.settings import datasets_root
from core.tasks import get_task
from core.tasks.segmentation import data as segdata
from views.common import count, draft, esc, refusal_reason, set_draft, step_page
from views.segmentation_results import jpeg, legend

QUOTA_ENV = "TRANSFER_STUDIO_UPLOAD_QUOTA_MB"
SERVER_PATHS_ENV = "TRANSFER_STUDIO_SERVER_PATHS"
TASK = get_task("segmentation")
PROBLEM_TITLES = {"missing_mask": "Images without a mask", "extra_mask": "Masks without an image",
                  "size_mismatch": "Mask size differs from the image",
                  "unknown_values": "Mask values that are no class",
                  "unreadable_image": "Images that cannot be decoded", "unreadable_mask": "Masks that cannot be read"}

st.title("2 · Images and masks")
st.write("Bring photos and, for each, a mask PNG with the same file name: either class ids (pixel value = class, "
         "with an optional classes.txt) or colours (the app finds the colours; you name them). Layout: "
         "`images/` + `masks/`, or `train/` and `val/` each holding both.")
if not draft("freeze"):  # segmentation's recommended freeze until the user chooses on the Layers page
    set_draft("freeze", json.dumps(TASK.default_freeze().to_dict()))


def _quota_left() -> int:
    try:
        quota = int(float(os.environ.get(QUOTA_ENV, "2048")) * 1024**2)
    except ValueError:
        quota = 2048 * 1024**2
    return max(0, quota - int(st.session_state.get("data_upload_used", 0)))


def _charge(n: int) -> bool:
    if n > _quota_left():
        st.error(f"This upload ({n / 1024**2:.0f} MB) is larger than what this session may still upload "
                 f"({_quota_left() / 1024**2:.0f} MB). Use the command line for big datasets.")
        return False
    st.session_state["data_upload_used"] = int(st.session_state.get("data_upload_used", 0)) + n
    return True


def _server_paths_allowed() -> bool:
    env = os.environ.get(SERVER_PATHS_ENV, "")
    if env in ("0", "1"):
        return env == "1"
    return str(st.get_option("server.address") or "") in ("127.0.0.1", "localhost", "::1")


UPLOAD_GEN = "seg_data_upload_gen"  # bumped after an import: the uploaders come back empty (no second import)
PENDING_PICK = "seg_data_pending_pick"  # a dataset just made: the picker shows it on the next run


def _select(dataset_id: str) -> None:
    """Make `dataset_id` the chosen dataset, in the draft and in the picker (whose old value would win otherwise)."""
    set_draft("dataset_id", dataset_id)
    st.session_state[PENDING_PICK] = dataset_id


def _chosen(dataset_id: str, report: segdata.SegReport, name: str) -> None:
    _select(dataset_id)
    st.session_state[UPLOAD_GEN] = int(st.session_state.get(UPLOAD_GEN, 0)) + 1
    _flash(dataset_id, f"Imported “{esc(name)}”: {sum(report.splits.values())} usable image + mask pairs"
           + (f"; {len(report.problems)} problems are listed below." if report.problems else "."))


def _flash(dataset_id: str, message: str) -> None:
    """A confirmation shown above the page for as long as `dataset_id` is the one shown: the reruns that follow an
    import (the emptied uploader sends one) do not hide it."""
    st.session_state["seg_flash"] = {"dataset": dataset_id, "message": message}


def _upload_key(base: str) -> str:
    """The uploader's key: `base` until the first import, then a new one per import (an empty uploader)."""
    gen = int(st.session_state.get(UPLOAD_GEN, 0))
    return base if gen == 0 else f"{base}_{gen}"


def dataset_labels(datasets: list[store.DatasetSummary]) -> dict[str, str]:
    """The picker's label of each dataset: its name and size, and when it was imported if another has its name."""
    names = [d.name for d in datasets]
    labels = {d.id: f"{d.name} ({d.images} images" + (f", imported {d.created[:19].replace('T', ' ')})"
                                                     if names.count(d.name) > 1 else ")") for d in datasets}
    shown = list(labels.values())
    return {i: f"{label} · {i[:6]}" if shown.count(label) > 1 else label for i, label in labels.items()}


def _options() -> dict:
    c1, c2 = st.columns(2)
    has_void = c1.checkbox("Some mask pixels mean 'not labelled'", key="seg_data_has_void",
                           help="Tick this when your masks mark unknown or unlabelled areas (borders, clutter) with "
                                "one pixel value of their own. Those pixels are then left out of training and of "
                                "the metrics, instead of being learned as a class.")
    ignore = None
    if has_void:
        ignore = c1.number_input("Mask value of the 'not labelled' pixels", 0, 255, 255, key="seg_data_ignore",
                                 help="The pixel value (0–255) these areas have in the mask files; often 255.")
    else:
        c1.caption("Not ticked: the value 255, or a class named 'void' or 'unlabelled', still counts as 'not "
                   "labelled'; every other value is a class.")
    val = c2.slider("Validation share when there is no val/ folder", 0.1, 0.5, 0.2, 0.05, key="seg_data_val")
    return {"ignore": None if ignore is None else int(ignore), "val_fraction": float(val)}


def _import_section() -> None:
    tabs = ["Upload a folder", "Upload a .zip", "Sample"] + (["Folder on this computer"] if _server_paths_allowed()
                                                              else [])
    parts = st.tabs(tabs)
    with parts[0]:
        uploads = st.file_uploader("Drop a folder holding images/ and masks/ (or train/ and val/)",
                                   accept_multiple_files="directory", key=_upload_key("seg_data_upload"))
        if uploads:
            opts = _options()
            folder_name = segdata.upload_folder_name([f.name for f in uploads]) or "My segmentation set"
            typed = st.text_input("Dataset name", key="seg_data_name", max_chars=100,
                                  placeholder=f"{folder_name} (the folder's name)").strip()
            name = typed or folder_name
            if st.button("Import these images and masks", key="seg_data_import_upload", type="primary") and \
                    _charge(sum(f.size for f in uploads)):
                with st.spinner("Checking every image and mask…"):
                    try:
                        dataset_id, report = segdata.import_uploads(((f.name, f.getvalue()) for f in uploads), name,
                                                                    **opts)
                    except Exception as err:  # noqa: BLE001 - SegDataError, DatasetError: a message, never a traceback
                        st.error(f"Could not import: {refusal_reason(err)}")
                    else:
                        _chosen(dataset_id, report, name)
                        st.rerun()
    with parts[1]:
        zipped = st.file_uploader("Drop a .zip of images/ and masks/", type=["zip"], key=_upload_key("seg_data_zip"))
        if zipped is not None:
            opts = _options() if not uploads else {}
            if st.button("Import this zip", key="seg_data_import_zip", type="primary") and _charge(zipped.size):
                with tempfile.NamedTemporaryFile(suffix=".zip", dir=datasets_root(), delete=False) as fh:
                    fh.write(zipped.getvalue())
                name = os.path.splitext(zipped.name)[0][:80] or "zip"
                try:
                    dataset_id, report = segdata.import_zip(fh.name, name, display_name=zipped.name, **opts)
                except Exception as err:  # noqa: BLE001 - ArchiveError, SegDataError…: a message, never a traceback
                    st.error(f"Could not import: {refusal_reason(err, zipped.name)}")
                else:
                    _chosen(dataset_id, report, name)
                    st.rerun()
                finally:
                    os.unlink(fh.name)
    with parts[2]:
        st.write("Shapes (circle, square, triangle) on photo textures, with exact masks: 48 training and 16 "
                 "validation images.")
        if st.button("Use the sample set", key="seg_data_sample", icon=":material/auto_awesome:"):
            with st.spinner("Preparing the sample (once)…"):
                _select(TASK.ensure_sample())
            st.rerun()
    if len(parts) > 3:
        with parts[3]:
            folder = st.text_input("Folder path", key="seg_data_path", placeholder="/data/camvid")
            if folder:
                opts = _options() if not uploads and zipped is None else {}
                if st.button("Import this folder", key="seg_data_import_path", type="primary"):
                    with st.spinner("Checking every image and mask…"):
                        name = os.path.basename(folder.rstrip("/")) or "folder"
                        try:
                            dataset_id, report = segdata.import_folder(folder, name, **opts)
                        except Exception as err:  # noqa: BLE001
                            st.error(f"Could not import: {refusal_reason(err)}")
                        else:
                            _chosen(dataset_id, report, name)
                            st.rerun()


def _stamp(dataset_id: str) -> tuple:
    side = segdata.side_file(dataset_id)
    return store.manifest_stamp(dataset_id), side.stat().st_mtime_ns if side.exists() else 0


@st.cache_data(show_spinner=False, max_entries=16)
def _report(dataset_id: str, stamp: tuple) -> dict:  # noqa: ARG001 - stamp is the cache key
    rep = segdata.stored_report(dataset_id)
    return {**rep.to_dict(), "sizes": rep.sizes}


@st.cache_data(show_spinner=False, max_entries=256)
def _overlay(dataset_id: str, item_file: str, stamp: tuple, opacity: float, side: int = 240) -> bytes | None:  # noqa: ARG001
    from core.data.images import load_rgb
    from core.tasks.segmentation.predict import colour_overlay

    _, table, _, _ = segdata.stored_pairs(dataset_id)
    codes = segdata.read_stored_codes(dataset_id, item_file)
    try:
        img = load_rgb(store.file_path(dataset_id, item_file))
    except Exception:  # noqa: BLE001 - shown as missing
        return None
    if codes is not None and codes.shape == (img.height, img.width):
        train = segdata.to_train_ids(codes, table)
        img = colour_overlay(img, train, list(table.colours), opacity, ignore=train == segdata.IGNORE)
    img.thumbnail((side, side))
    return jpeg(img)


def _bar(values: dict, title: str, colours: list, fmt: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(values.values()), y=list(values), orientation="h",
                           marker_color=[f"rgb({c[0]},{c[1]},{c[2]})" for c in colours],
                           texttemplate=fmt, textposition="auto"))
    fig.update_layout(height=max(240, 26 * len(values) + 80), margin=dict(l=10, r=10, t=40, b=10), title=title,
                      yaxis_autorange="reversed")
    return fig


def _hex(c) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c[:3])


def _class_table(dataset_id: str, table: segdata.ClassTable) -> None:
    st.subheader("Classes")
    df = pd.DataFrame({"value": list(table.codes), "name": list(table.names),
                       "colour": [_hex(c) for c in table.colours]})
    edited = st.data_editor(df, hide_index=True, key=f"seg_data_classes_{dataset_id}", disabled=["value"],
                            column_config={"name": st.column_config.TextColumn("name", max_chars=100, required=True),
                                           "colour": st.column_config.TextColumn("colour (#rrggbb)", max_chars=7)})
    values = ["none"] + [str(v) for v in range(256) if v not in table.codes]
    current = "none" if table.ignore is None else str(table.ignore)
    if current not in values:
        values.append(current)
    ignore = st.selectbox("Mask value that means 'not labelled' (void)", values, index=values.index(current),
                          key="seg_data_ignore_pick", format_func=lambda v: "none: every value is a class"
                          if v == "none" else v,
                          help="Pixels with this mask value are left out of training and of the metrics, instead of "
                               "being learned as a class.")
    c1, c2 = st.columns(2)
    if c1.button("Save classes", key="seg_data_save_classes"):
        try:
            colours = [tuple(int(h.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)) for h in edited["colour"]]
            segdata.update_table(dataset_id, [str(n) for n in edited["name"]], None if ignore == "none"
                                 else int(ignore), colours)
        except (ValueError, segdata.SegDataError) as err:
            st.error(f"Not saved: {err}")
        else:
            _flash(dataset_id, "Classes saved.")
            st.rerun()
    new = c2.text_input("Add a class (e.g. to paint it)", key="seg_data_new_class", max_chars=100)
    if new and c2.button("Add", key="seg_data_add_class"):
        segdata.add_class(dataset_id, new)
        st.rerun()


def _problems(dataset_id: str, report: dict) -> None:
    problems = report["problems"]
    if not problems:
        st.success("No problems: every image has a readable mask of the same size with known values.")
        return
    by_kind: dict[str, list] = {}
    for p in problems:
        by_kind.setdefault(p["kind"], []).append(p)
    for kind, rows in by_kind.items():
        with st.expander(f"{PROBLEM_TITLES.get(kind, kind)}: {len(rows)}", expanded=kind != "unknown_values"):
            for p in rows[:50]:
                st.caption(esc(p["message"]))
            if len(rows) > 50:
                st.caption(f"… and {len(rows) - 50} more.")
            if kind == "size_mismatch" and st.button("Resize these masks to their images (nearest-neighbour)",
                                                     key="seg_data_resize"):
                done = segdata.resize_masks(dataset_id, [p["file"] for p in rows])
                _flash(dataset_id, f"Resized {count(len(done), 'mask')}; class ids were kept exactly (no blending).")
                st.rerun()
    st.caption("Pairs with a problem (other than unknown values, which are ignored) are left out of training.")


PAINT_FLASH = "seg_paint_flash"  # {"message", "context"}: a save's confirmation, kept while nothing else changed
PAINT_PENDING = "seg_paint_pending"  # "dataset:file" -> unsaved strokes: {"json": the drawing, "png": its RGBA image}
PAINT_GEN = "seg_paint_gen"  # "dataset:file" -> generation of its canvas (a new one, empty, after a save or discard)
PAINT_SEED = "seg_paint_seed"  # {"key": canvas key, "json": the strokes it was mounted with}
RECT_KEYS = ("seg_paint_x0", "seg_paint_y0", "seg_paint_x1", "seg_paint_y1")


def _png_rgba(data: bytes) -> np.ndarray | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGBA"))
    except Exception:  # noqa: BLE001 - a damaged drawing is reported by the caller
        return None


def _strokes_to_codes(painted: np.ndarray, codes: np.ndarray, table: segdata.ClassTable, erase_code: int
                      ) -> np.ndarray:
    """Each opaque pixel of the drawing (canvas size) takes the class of the nearest class colour (white: eraser)."""
    from PIL import Image

    h, w = codes.shape
    layer = np.asarray(Image.fromarray(painted.astype(np.uint8), "RGBA").resize(
        (w, h), Image.Resampling.NEAREST)).astype(np.int32)
    hit = layer[..., 3] >= 128
    palette = np.array(list(table.colours) + [(255, 255, 255)], dtype=np.int32)
    dist = ((layer[..., None, :3] - palette[None, None]) ** 2).sum(-1)
    nearest = dist.argmin(-1)
    targets = np.array(list(table.codes) + [erase_code], dtype=np.int32)
    out = codes.copy()
    out[hit] = targets[nearest[hit]]
    return out


def _canvas_key(slot: str) -> str:
    return f"seg_paint_canvas_{slot.replace(':', '_')}_{st.session_state.setdefault(PAINT_GEN, {}).get(slot, 0)}"


def _flash_after_rerun(message: str, context: tuple) -> None:
    """Confirm a save after its st.rerun(): shown below the tool for as long as `context` (what the user sees:
    tool, photo, canvas or rectangle) is unchanged, so the reruns the canvas itself causes do not hide it."""
    st.session_state[PAINT_FLASH] = {"message": message, "context": context}
    st.rerun()


def _show_flash(context: tuple) -> None:
    flash = st.session_state.get(PAINT_FLASH)
    if flash and flash["context"] == context:
        st.success(flash["message"], icon=":material/check_circle:")
    else:
        st.session_state.pop(PAINT_FLASH, None)


def _fresh_canvas(slot: str, message: str | None = None) -> None:
    """After a save (or a discard): drop the photo's strokes and give it a new, empty canvas over the saved mask (a new
    key: the old canvas' strokes never come back), then rerun."""
    st.session_state.setdefault(PAINT_PENDING, {}).pop(slot, None)
    gens = st.session_state.setdefault(PAINT_GEN, {})
    gens[slot] = gens.get(slot, 0) + 1
    if message:
        _flash_after_rerun(message, ("brush", _canvas_key(slot)))
    st.rerun()


def _rectangle(img, slot: str) -> tuple[int, int, int, int]:
    """The rectangle inputs: a centred quarter of a new photo by default, never the whole image."""
    w, h = img.width, img.height
    if st.session_state.get("seg_paint_rect_for") != slot or any(k not in st.session_state for k in RECT_KEYS):
        for k, v in zip(RECT_KEYS, (w // 4, h // 4, w - w // 4, h - h // 4), strict=True):
            st.session_state[k] = v
        st.session_state["seg_paint_rect_for"] = slot
    r = st.columns(4)
    x0 = r[0].number_input("left", 0, w - 1, key="seg_paint_x0", help="First column filled (0 = left edge).")
    y0 = r[1].number_input("top", 0, h - 1, key="seg_paint_y0", help="First row filled (0 = top edge).")
    x1 = r[2].number_input("right", 1, w, key="seg_paint_x1", help=f"Filled up to this column, not included ({w} = "
                                                                   "right edge).")
    y1 = r[3].number_input("bottom", 1, h, key="seg_paint_y1", help=f"Filled up to this row, not included ({h} = "
                                                                    "bottom edge).")
    return int(x0), int(y0), int(x1), int(y1)


def _paint(dataset_id: str, table: segdata.ClassTable) -> None:
    """Brush and eraser per class on top of the photo (streamlit-drawable-canvas), or a rectangle fill.

    The canvas keeps one key per photo (and per save), so changing the class (only the stroke colour changes) keeps
    the strokes; they are also kept in session_state and given back as the canvas' initial drawing when it is shown
    again (after the rectangle tool or another photo), so several classes are painted and saved at once."""
    from core.data.images import load_rgb

    ds = store.load_dataset(dataset_id)
    if not ds.items:
        return
    pending = st.session_state.setdefault(PAINT_PENDING, {})
    names = {it.file: it.original_name or it.file for it in ds.items}
    file = st.selectbox("Image", list(names), format_func=lambda f: names[f][:80], key="seg_paint_image")
    slot = f"{dataset_id}:{file}"
    prefix = f"{dataset_id}:"
    elsewhere = [names[k[len(prefix):]] for k in pending if k != slot and k.startswith(prefix)
                 and k[len(prefix):] in names]
    if elsewhere:
        st.caption(f"Unsaved brush strokes are kept on {len(elsewhere)} other photo(s) until you save or discard "
                   f"them: {esc(', '.join(n[:40] for n in elsewhere[:5]))}.")
    img = load_rgb(store.file_path(dataset_id, file))
    codes = segdata.read_stored_codes(dataset_id, file)
    if codes is None or codes.shape != (img.height, img.width):
        base = table.ignore if table.ignore is not None else table.codes[0]
        codes = np.full((img.height, img.width), base, dtype=np.int32)
        st.caption("This image has no usable mask yet: you start from an empty one.")
    eraser = "eraser (back to void)" if table.ignore is not None else f"eraser (back to {table.names[0]})"
    tools = list(table.names) + [eraser]
    c1, c2 = st.columns([3, 1])
    tool = c1.radio("Paint with", tools, horizontal=True, key="seg_paint_tool")
    width = c2.slider("Brush", 2, 60, 16, key="seg_paint_brush")
    erase_code = table.ignore if table.ignore is not None else table.codes[0]
    colours = list(table.colours)
    scale = min(1.0, 640 / img.width)
    shown_w, shown_h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    from core.tasks.segmentation.predict import colour_overlay

    train = segdata.to_train_ids(codes, table)
    background = colour_overlay(img, train, colours, 0.45, ignore=train == segdata.IGNORE).resize((shown_w, shown_h))
    brush = (255, 255, 255) if tool == eraser else colours[tools.index(tool)]
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception:  # noqa: BLE001 - outside `streamlit run` the component cannot register: rectangles only
        st_canvas = None
    modes = (["Brush"] if st_canvas is not None else []) + ["Fill a rectangle"]
    mode = st.radio("Tool", modes, horizontal=True, key="seg_paint_mode")
    if mode != "Brush":
        if slot in pending:
            st.info("This photo has unsaved brush strokes: they are kept (not filled, not lost). Go back to 'Brush' "
                    "to save or discard them.", icon=":material/brush:")
        preview = st.empty()
        x0, y0, x1, y1 = _rectangle(img, slot)
        from PIL import ImageDraw

        shown = background.copy()
        if x1 > x0 and y1 > y0:
            ImageDraw.Draw(shown).rectangle((x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1),
                                            outline=(255, 255, 0), width=2)
        preview.image(jpeg(shown), width=shown_w, caption="Yellow frame: the rectangle that will be filled.")
        if x1 <= x0 or y1 <= y0:
            st.warning("'right' must be larger than 'left' and 'bottom' larger than 'top': nothing would be filled.")
        else:
            share = (x1 - x0) * (y1 - y0) / (img.width * img.height)
            st.caption(f"Fills columns {x0}–{x1 - 1} and rows {y0}–{y1 - 1}: {x1 - x0} × {y1 - y0} pixels "
                       f"({share:.0%} of the image) become **{esc(tool)}**; the rest of the mask is kept.")
        context = ("fill", slot, tool, (x0, y0, x1, y1))
        if st.button("Fill the rectangle", key="seg_paint_fill", disabled=x1 <= x0 or y1 <= y0):
            codes = codes.copy()
            codes[y0:y1, x0:x1] = erase_code if tool == eraser else table.codes[tools.index(tool)]
            segdata.save_mask(dataset_id, file, codes)
            _flash_after_rerun(f"Mask saved: {x1 - x0} × {y1 - y0} pixels of {esc(names[file][:80])} filled with "
                               f"{esc(tool)}.", context)
        _show_flash(context)
        return
    canvas_key = _canvas_key(slot)
    if canvas_key not in st.session_state:  # the canvas is (re)mounted now: with the strokes kept for this photo
        st.session_state[PAINT_SEED] = {"key": canvas_key, "json": (pending.get(slot) or {}).get("json")}
    seed = st.session_state.get(PAINT_SEED) or {}
    initial = seed.get("json") if seed.get("key") == canvas_key else None  # unchanged while mounted: no reload
    try:
        res = st_canvas(stroke_width=int(width), stroke_color=_hex(brush), background_image=background,
                        width=shown_w, height=shown_h, drawing_mode="freedraw", return_image_data=True,
                        initial_drawing=initial, key=canvas_key)
    except Exception as err:  # noqa: BLE001 - the component failed: say so; rectangles still work
        st.warning(f"The brush is not available here ({err}); use 'Fill a rectangle'.")
        return
    drawing = res.json_data if res is not None else None
    if drawing and drawing.get("objects"):
        png = res.image_bytes
        if png:
            pending[slot] = {"json": drawing, "png": png}
    else:
        pending.pop(slot, None)  # nothing drawn, or every stroke undone
    st.caption("Draw on the photo, then save. Each stroke takes the class of its colour: change the class above "
               "and keep drawing, the strokes stay until you save (the eraser paints white).")
    entry = pending.get(slot)
    if entry is None:
        _show_flash(("brush", canvas_key))
        return
    st.caption(f"Unsaved strokes ({len(entry['json'].get('objects', []))}) on this photo.")
    b1, b2 = st.columns(2)
    if b2.button("Discard the unsaved strokes", key="seg_paint_discard", icon=":material/undo:"):
        _fresh_canvas(slot)
    if b1.button("Save the painted mask", key="seg_paint_save", type="primary"):
        painted = _png_rgba(entry["png"])
        if painted is None:
            st.error("The drawing could not be read; draw again or discard the strokes.")
            return
        segdata.save_mask(dataset_id, file, _strokes_to_codes(painted, codes, table, erase_code))
        _fresh_canvas(slot, f"Mask saved for {esc(names[file][:80])}: the canvas starts again from the saved mask.")


flash_slot = st.empty()  # filled once the dataset shown is known
_import_section()

datasets = store.list_datasets(task="segmentation")
if not datasets:
    st.info("No segmentation dataset yet: import one above, or use the sample.")
    st.stop()
ids = [d.id for d in datasets]
current = draft("dataset_id")
labels = dataset_labels(datasets)
if st.session_state.get(PENDING_PICK) in ids:  # set before the picker is drawn (a widget's value can't change after)
    st.session_state["seg_data_pick"] = st.session_state.pop(PENDING_PICK)
chosen = st.selectbox("Dataset", ids, index=ids.index(current) if current in ids else 0, key="seg_data_pick",
                      format_func=lambda i: labels[i])
set_draft("dataset_id", chosen)
flash = st.session_state.get("seg_flash")
if isinstance(flash, dict) and flash.get("dataset") == chosen:
    flash_slot.success(flash["message"])
else:
    st.session_state.pop("seg_flash", None)
try:
    _, TABLE, SIDE, _ = segdata.stored_pairs(chosen)
except Exception as err:  # noqa: BLE001 - a damaged side file
    st.error(f"This dataset cannot be used: {esc(err)}")
    st.stop()
with st.spinner("Reading the masks…"):
    REPORT = _report(chosen, _stamp(chosen))

splits = REPORT["splits"]
c1, c2, c3, c4 = st.columns(4)
c1.metric("Usable pairs", REPORT["n_usable"])
c2.metric("Training", splits.get("train", 0))
c3.metric("Validation", splits.get("val", 0))
c4.metric("Problems", len(REPORT["problems"]))
st.caption(("Split: the train/ and val/ folders." if SIDE.get("split_mode") == "folders" else
            f"Split: seeded ({SIDE.get('val_fraction', 0.2):.0%} validation, seed {SIDE.get('seed', 0)}), saved with "
            "the dataset.") + (f" Ignored value: {TABLE.ignore}." if TABLE.ignore is not None else ""))
for note in SIDE.get("notes", [])[:5]:
    st.caption(esc(note))

_class_table(chosen, TABLE)
left, right = st.columns(2)
colours = list(TABLE.colours)
left.plotly_chart(_bar(REPORT["class_share"], "Share of labelled pixels per class", colours, "%{x:.1%}"),
                  key="seg_data_share")
right.plotly_chart(_bar(REPORT["class_images"], "Images in which each class appears", colours, "%{x}"),
                   key="seg_data_images")
stray = [c for c, s in REPORT["class_share"].items() if s < 0.001 and REPORT["class_images"].get(c, 0) == 1
         and sum(REPORT["class_images"].values()) > 2]
if TABLE.kind == "ids" and SIDE.get("source_kind") == "colour" and stray:
    st.warning(f"{esc(', '.join(stray))}: in one image only, on a few pixels. A colour no class was meant to have "
               "(a slip of the brush, or smoothed edges)? Then paint over it ('Paint or fix a mask') or fix the mask "
               "file and import again; else name the class.", icon=":material/colorize:")
rare = [c for c, s in REPORT["class_share"].items() if s < 0.01 and c not in stray]
if rare:
    st.caption(f"Rare classes (under 1 % of the pixels): {esc(', '.join(rare))}. The loss (Dice + cross-entropy) "
               "gives them weight; 'Balance classes' on the Train page adds more.")

st.subheader("Problems")
_problems(chosen, REPORT)

st.subheader("Images with their masks")
opacity = st.slider("Mask opacity", 0.0, 1.0, 0.5, 0.05, key="seg_data_opacity")
ds = store.load_dataset(chosen)
stamp = _stamp(chosen)
cols = st.columns(4)
for k, item in enumerate(ds.items[:12]):
    thumb = _overlay(chosen, item.file, stamp, opacity)
    if thumb:
        cols[k % 4].image(thumb, caption=item.original_name[:40])
legend(list(TABLE.names), colours, key="seg_data_legend")

with st.expander("Paint or fix a mask", expanded=False, key="seg_paint_panel", on_change="rerun"):
    _paint(chosen, TABLE)

st.page_link(step_page("layers"), label="Next: choose the architecture and what trains →", icon=":material/layers:")
