"""Data for object detection: import images with COCO / VOC / YOLO annotations (found automatically) or images
alone, draw / move / delete boxes and name their classes, and read the validation report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data import store
from core.data.names import PHOTO_UPLOAD_TYPES
from core.tasks.detection import dataset as dstore
from core.tasks.detection import figures
from core.tasks.detection.data import AnnotationError, summary
from views.common import count, draft, esc, refusal_reason, set_draft, step_page

FLASH = "det_flash"  # the id of the dataset just imported

st.title("2 · Data: photos with boxes")
st.write("Bring photos with their boxes (a folder or zip with COCO .json, Pascal VOC .xml or YOLO .txt — the format "
         "is found automatically), or photos alone and draw the boxes here. Photos without boxes count as "
         "negatives: they teach the model where there is nothing to find.")


def _choose(dataset_id: str) -> None:
    set_draft("dataset_id", dataset_id)
    st.session_state.pop("det_image", None)


def _imported(dataset_id: str) -> None:
    """Shows a dataset just made: the picker selects it, the panel it came from closes and its fields are emptied
    for the next import, as on the Data page."""
    _choose(dataset_id)
    st.session_state["det_pending_select"] = dataset_id  # the picker still held the old set: it won over the new one
    st.session_state["det_add_panel_close"] = True
    st.session_state[FLASH] = dataset_id  # confirmed above the report while this set is the one shown
    st.rerun()


def _import_error(err: Exception, name: str | None = None) -> None:
    st.error(f"Could not import: {refusal_reason(err, name)}")


if "det_pending_select" in st.session_state:  # set before the picker is drawn (a widget's value can't change after)
    st.session_state["det_pick"] = st.session_state.pop("det_pending_select")
    for field in ("det_new_name", "det_folder", "det_folder_ann", "det_first_classes"):
        st.session_state[field] = ""  # written, not dropped: a dropped key got the browser's old text back
sets = dstore.list_sets()
current = draft("dataset_id")
ids = [s.id for s in sets]
names = {s.id: f"{s.name} — {s.images} photos" for s in sets}
if ids:
    index = ids.index(current) if current in ids else 0
    picked = st.selectbox("Your detection datasets", ids, index=index, key="det_pick",
                          format_func=lambda i: names.get(i, i))
    if picked != current:
        _choose(picked)
        current = picked

if st.session_state.pop("det_add_panel_close", False):
    st.session_state["det_add_panel"] = False
# a key and tracked state keep the panel open while the user picks files (the reruns that causes drew it anew, closed)
with st.expander("Bring new photos", expanded=not ids, key="det_add_panel", on_change="rerun"):
    typed = st.text_input("Name of the new dataset", key="det_new_name", max_chars=100,
                          placeholder="the zip's or folder's name, else “My boxes”").strip()
    drop_tab, zip_tab, images_tab, folder_tab, sample_tab = st.tabs(
        ["Drop a folder", "Zip with annotations", "Photos only (draw boxes)", "Folder on this computer", "Sample"])
    with drop_tab:
        dropped = st.file_uploader("A folder of photos with their COCO .json, Pascal VOC .xml or YOLO .txt files",
                                   accept_multiple_files="directory", key="det_dir")
        if dropped and st.button("Import the folder", key="det_dir_import"):
            with st.spinner("Checking every photo and box…"):
                try:  # no name typed: the dropped folder's
                    new_id, _ = dstore.import_uploads([(f.name, f.getvalue()) for f in dropped], typed or None)
                except Exception as err:  # noqa: BLE001 - annotation or store errors: say them plainly
                    _import_error(err)
                else:
                    _imported(new_id)
    with zip_tab:
        up = st.file_uploader("A .zip of images with COCO / VOC / YOLO annotations", type=["zip"], key="det_zip")
        if up is not None and st.button("Import the zip", key="det_zip_import"):
            with tempfile.TemporaryDirectory() as tmp, st.spinner("Checking every photo and box…"):
                path = Path(tmp) / "upload.zip"
                path.write_bytes(up.getvalue())
                try:
                    new_id, _ = dstore.import_zip(path, typed or Path(up.name).stem or "My boxes",
                                                  display_name=up.name)
                except Exception as err:  # noqa: BLE001 - archive, annotation or store errors: say them plainly
                    _import_error(err, up.name)
                else:
                    _imported(new_id)
    with images_tab:
        photos = st.file_uploader("Photos (you draw the boxes next)", type=list(PHOTO_UPLOAD_TYPES),
                                  accept_multiple_files=True, key="det_photos")
        first = st.text_input("Class names (comma-separated)", key="det_first_classes", placeholder="e.g. cup, spoon")
        if photos and st.button("Import the photos", key="det_photos_import"):
            classes = [c.strip() for c in first.split(",") if c.strip()]
            with st.spinner("Checking every photo…"):
                try:
                    new_id, _ = dstore.import_images([(p.name, p.getvalue()) for p in photos], typed or "My boxes",
                                                     classes)
                except Exception as err:  # noqa: BLE001
                    _import_error(err)
                else:
                    _imported(new_id)
    with folder_tab:
        folder = st.text_input("Folder path (images in it or in images/)", key="det_folder")
        ann = st.text_input("Annotation file or folder (optional: found automatically)", key="det_folder_ann")
        if folder and st.button("Import the folder", key="det_folder_import"):
            with st.spinner("Checking every photo and box…"):
                try:
                    new_id, _ = dstore.import_folder(folder, typed or Path(folder).name or "My boxes", ann or None)
                except (AnnotationError, store.DatasetError, OSError) as err:
                    _import_error(err)
                else:
                    _imported(new_id)
    with sample_tab:
        st.write("Discs and squares on textures, boxes included: trains in a few minutes on a CPU.")
        if st.button("Use the sample", key="det_sample"):
            from core.tasks import get_task

            with st.spinner("Preparing the sample (once)…"):
                try:
                    sample_id = get_task("detection").ensure_sample()
                except store.DatasetError as err:
                    _import_error(err)
                else:
                    _imported(sample_id)

if not current or current not in ids:
    st.info("Import photos above to continue.")
    st.stop()

try:
    ds = dstore.load_set(current)
except store.DatasetError as err:
    st.error(f"This dataset cannot be read: {esc(err.reason)}")
    st.stop()

report = summary(ds)
if st.session_state.get(FLASH) == current:
    name = next((s.name for s in sets if s.id == current), "")
    st.success(f"Imported “{esc(name)}”: {count(report['n_images'], 'photo')} with "
               f"{count(report['n_boxes'], 'box', 'boxes')}"
               + (f"; {count(len(ds.problems), 'problem')} listed below." if ds.problems else "."))
else:
    st.session_state.pop(FLASH, None)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Photos", report["n_images"])
c2.metric("Boxes", report["n_boxes"])
c3.metric("Photos without boxes", report["n_negatives"])
c4.metric("Classes", len(ds.classes))
split = report["images_per_split"]
how = "as given by the data" if ds.split.get("mode") == "given" else f"seeded, seed {ds.split.get('seed', 0)}"
st.caption(f"Split: {split.get('train', 0)} training, {split.get('val', 0)} validation photos ({how}). "
           f"Annotation format: {esc(ds.format)}.")
for line in report["blocking"]:
    st.warning(line)
UNSURE = ("no_annotation_file", "boxes_lost")  # photos that count as empty without the user saying so
empty_now = {a.name for a in ds.images if not a.boxes}
unsure = list(dict.fromkeys(p.file for p in ds.problems if p.kind in UNSURE and p.file in empty_now))
if unsure:
    shown = ", ".join(esc(n) for n in unsure[:5]) + (f" and {len(unsure) - 5} more" if len(unsure) > 5 else "")
    many = len(unsure) > 1
    st.warning(f"{count(len(unsure), 'photo')} had no annotation file or lost every box, so "
               f"{'they count as photos' if many else 'it counts as a photo'} with nothing to find: {shown}. If "
               f"{'they show' if many else 'it shows'} objects, draw {'their' if many else 'its'} boxes in 'Draw "
               f"boxes' (turn on 'Only photos without boxes'); else {'they teach' if many else 'it teaches'} the "
               "model that there is nothing there. The problems below say why.", icon=":material/warning:")
FEW_VAL = 5  # below this, one photo more or less found moves mAP by 20 points or more
if 0 < split.get("val", 0) < FEW_VAL and split.get("train", 0):
    st.warning(f"Only {count(split['val'], 'validation photo')}: the mAP measured on so few will jump from run to "
               "run. Add photos, or give validation a larger share ('Classes and split').", icon=":material/warning:")

section = st.segmented_control("Show", ["Report", "Draw boxes", "Classes and split"], default="Report",
                               key="det_section", label_visibility="collapsed") or "Report"

if section == "Report":
    if report["n_boxes"]:
        left, right = st.columns(2)
        left.plotly_chart(figures.boxes_per_class(report["boxes_per_class"]), key="det_fig_class")
        right.plotly_chart(figures.boxes_per_image(report["boxes_per_image"]), key="det_fig_per_image")
        left, right = st.columns(2)
        left.plotly_chart(figures.box_sizes(report["box_sizes"]), key="det_fig_sizes")
        right.plotly_chart(figures.relative_areas(report["box_sizes"]), key="det_fig_areas")
    problems = [p for p in ds.problems if p.kind not in ("not_annotated",)]
    if problems:
        st.subheader(f"Problems found ({len(problems)})")
        table = pd.DataFrame([{"kind": p.kind.replace("_", " "), "file": p.file, "what happened": p.message}
                              for p in problems])
        st.dataframe(table, hide_index=True, key="det_problems", height=min(400, 38 + 35 * len(table)),
                     column_config={"kind": st.column_config.TextColumn("Kind", width="small"),
                                    "file": st.column_config.TextColumn("File", width="medium"),
                                    "what happened": st.column_config.TextColumn("What happened", width="large")})
        with st.expander("Every message in full"):  # a table cell cuts a long message at its width
            st.markdown("\n".join(f"- **{esc(p.file or '—')}**: {esc(p.message)}" for p in problems[:300])
                        + (f"\n\n…and {len(problems) - 300} more." if len(problems) > 300 else ""))
    else:
        st.success("No problems found in the photos and boxes.")
    left_out = [p for p in ds.problems if p.kind == "not_annotated"]
    if left_out:
        st.caption(f"{len(left_out)} photos in the folder were not in the annotation file and were left out.")

if section == "Draw boxes":
    if not ds.classes:
        st.info("Name at least one class first ('Classes and split').")
    else:
        from PIL import Image

        from core.data.images import load_rgb

        only_empty = st.toggle("Only photos without boxes", key="det_only_empty")
        pool = [a for a in ds.images if not (only_empty and a.boxes)]
        if not pool:
            st.success("Every photo has boxes.")
        else:
            labels = {a.path: f"{a.name} — {count(len(a.boxes), 'box', 'boxes')} ({a.split})" for a in pool}
            paths = [a.path for a in pool]
            kept = st.session_state.get("det_image")
            # the labels count the boxes: a key that changes with them draws the closed box anew (the browser
            # kept showing the count from before a save)
            stamp = sum(len(a.boxes) for a in pool)
            chosen = st.selectbox("Photo", paths, index=paths.index(kept) if kept in paths else 0,
                                  key=f"det_image_pick_{stamp}", format_func=lambda p: labels.get(p, p))
            st.session_state["det_image"] = chosen
            ann = next(a for a in pool if a.path == chosen)
            st.caption("Drag on the photo to draw a box; click a box to move or resize it; pick 'Del' as the mode "
                       "and click a box to delete it; choose the class on the right. Press **Complete** to save.")
            try:
                image: Image.Image = load_rgb(ann.path)
            except Exception as err:  # noqa: BLE001
                st.error(f"This photo cannot be shown: {esc(err)}")
            else:
                from streamlit_image_annotation import detection as box_editor

                known = list(ds.classes)
                bboxes = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in ann.boxes]
                ids_ = [known.index(lbl) for lbl in ann.labels]
                result = box_editor(image_path=image, label_list=known, bboxes=bboxes, labels=ids_, height=640,
                                    width=900, line_width=3, key=f"det_editor_{Path(ann.path).name}")
                if result is not None:
                    new_boxes = [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                                 for r in result]
                    new_labels = [known[r["label_id"]] if 0 <= r["label_id"] < len(known) else r["label"]
                                  for r in result]
                    if [[round(v, 1) for v in b] for b in new_boxes] != [[round(v, 1) for v in b] for b in ann.boxes] \
                            or new_labels != ann.labels:
                        dstore.set_boxes(current, ann.path, new_boxes, new_labels)
                        st.toast(f"Saved {count(len(new_boxes), 'box', 'boxes')} for {esc(ann.name)}.")
                        st.rerun()
                if ann.boxes:
                    st.caption("Saved boxes: " + "; ".join(
                        f"{esc(lbl)} [{', '.join(f'{v:.0f}' for v in b)}]" for b, lbl in zip(ann.boxes, ann.labels,
                                                                                          strict=True)))
                if ann.boxes and st.button("Remove all boxes of this photo (a negative)", key="det_clear_boxes"):
                    dstore.set_boxes(current, ann.path, [], [])
                    st.rerun()
    more = st.file_uploader("Add photos", type=list(PHOTO_UPLOAD_TYPES), accept_multiple_files=True,
                            key="det_add_photos")
    shot = st.camera_input("Or take a photo", key="det_camera") if st.toggle(
        "Use the camera", key="det_camera_on") else None  # the browser asks for the camera only when wanted
    if (more or shot) and st.button("Add them", key="det_add"):
        files = [(p.name, p.getvalue()) for p in more or []] + ([("camera.jpg", shot.getvalue())] if shot else [])
        try:
            dstore.add_images(current, files)
        except store.DatasetError as err:
            _import_error(err)
        else:
            st.rerun()

if section == "Classes and split":
    if ds.classes:
        st.write("Classes: " + ", ".join(f"**{esc(c)}** ({count(report['boxes_per_class'].get(c, 0), 'box', 'boxes')})"
                                         for c in ds.classes))
    new_class = st.text_input("New class name", key="det_new_class", max_chars=100)
    if st.button("Add the class", key="det_add_class", disabled=not new_class.strip()):
        try:
            dstore.add_class(current, new_class)
        except store.DatasetError as err:
            st.error(esc(err.reason))
        else:
            st.rerun()
    if ds.classes:
        c1, c2 = st.columns(2)
        old = c1.selectbox("Rename class", ds.classes, key="det_rename_old")
        new = c2.text_input("to", key="det_rename_new", max_chars=100)
        if st.button("Rename", key="det_rename", disabled=not new.strip()):
            try:
                dstore.rename_class(current, old, new)
            except store.DatasetError as err:
                st.error(esc(err.reason))
            else:
                st.rerun()
    st.divider()
    c1, c2 = st.columns(2)
    seed = c1.number_input("Shuffle number of the split", 0, 2**31 - 1, value=int(ds.split.get("seed", 0)),
                           key="det_split_seed", help="Another number draws another validation set from the same "
                                                      "photos; the same number always gives the same one.")
    frac = c2.slider("Validation share", 0.1, 0.5, float(ds.split.get("val_fraction", 0.2) or 0.2), 0.05,
                     key="det_split_frac")
    if st.button("Redraw the train/validation split", key="det_resplit"):
        dstore.resplit(current, int(seed), float(frac))
        st.rerun()

st.divider()
if report["blocking"]:
    st.caption("Fix the points above, then train.")
elif st.button("Use this dataset →", key="det_use", type="primary"):
    _choose(current)
    st.switch_page(step_page("layers"))
