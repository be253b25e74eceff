"""Faces · Data: enrol people (a folder per person, a zip, or camera shots), see every aligned face crop per person,
the photos without a face by name, choose the face in group photos, and delete a person everywhere."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence

import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from core.data import store
from core.data.names import PHOTO_UPLOAD_TYPES
from core.settings import subdir
from core.tasks.faces.data import dropped_folder_name
from core.tasks.faces.draw import label_size
from views.common import count, draft, esc, refusal_reason, set_draft, step_page

st.title("2 · People")
st.write("Enrol the people the model should recognise: **one folder per person** (the folder name is the person's "
         "name), a zip of such folders, or a few camera shots per person. Every photo goes through face detection "
         "and alignment; photos without a face are listed by name.")
st.caption(":material/lock: Faces are biometric data. Everything stays on this computer; you can delete a person "
           "everywhere at the bottom of this page.")


def _gen_key(base: str) -> str:
    gen = int(st.session_state.get("faces_upload_gen", 0))
    return base if gen == 0 else f"{base}_{gen}"


CHOOSE = "faces_dataset_next"  # the set to show at the next draw (the "People set" box is drawn already)


def _imported(result: store.ImportResult) -> None:
    store.set_task(result.dataset.id, "faces")
    set_draft("dataset_id", result.dataset.id)
    st.session_state[CHOOSE] = result.dataset.id  # else the box kept "Enrol a new set" and hid the people enrolled
    st.session_state["faces_upload_gen"] = int(st.session_state.get("faces_upload_gen", 0)) + 1
    st.session_state["faces_flash"] = f"Enrolled {count(result.imported, 'photo')} of " \
                                      f"{count(len(result.dataset.classes), 'person', 'people')}" \
                                      f"{_skipped(result.skipped)}."


def _skipped(skipped: Sequence[store.Skipped]) -> str:
    """'; not added: a.jpg (not a photo), …' naming the files an import left out, or ''."""
    if not skipped:
        return ""
    named = ", ".join(f"{esc(s.original_name)} ({esc(s.reason)})" for s in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"; not added: {named}{more}"


def _progress(label: str):
    bar = st.progress(0.0, text=label)

    def show(done: int, total: int) -> None:
        bar.progress(done / max(1, total), text=f"{label} {done}/{total}")
    return show


datasets = store.list_datasets(task="faces")
ids = [d.id for d in datasets]
labels = {d.id: f"{d.name} — {len(d.classes)} people, {d.images} photos" for d in datasets}
current = draft("dataset_id")
if flash := st.session_state.pop("faces_flash", None):
    st.success(flash)
if (nxt := st.session_state.pop(CHOOSE, None)) in ids:
    st.session_state["faces_dataset"] = nxt
if ids:
    choice = st.selectbox("People set", ["__new__", *ids], index=(ids.index(current) + 1) if current in ids else 1,
                          format_func=lambda i: "➕ Enrol a new set of people" if i == "__new__" else labels[i],
                          key="faces_dataset")
    chosen = None if choice == "__new__" else choice
else:
    chosen = None
if chosen and chosen != current:
    set_draft("dataset_id", chosen)

if chosen is None:
    st.subheader("Enrol people")
    tabs = st.tabs(["Folder of people", "Zip", "Folder on this computer", "Camera"])
    with tabs[0]:
        uploads = st.file_uploader("Drop a folder that holds one folder per person", accept_multiple_files="directory",
                                   key=_gen_key("faces_upload_folder"))
        dropped = dropped_folder_name([f.name for f in uploads or []])
        name = st.text_input("Name of this set", key="faces_name", max_chars=100,
                             placeholder=dropped if uploads else "My team").strip() or dropped
        if uploads and st.button("Enrol these people", key="faces_import_folder", type="primary"):
            try:
                result = store.import_uploads(((f.name, f.getvalue()) for f in uploads), name,
                                              on_progress=_progress("Checking photos"))
            except (store.DatasetError, OSError) as err:
                st.error(f"The photos were not imported: {refusal_reason(err)}")
            else:
                _imported(result)
                st.rerun()
    with tabs[1]:
        zipped = st.file_uploader("Drop a .zip of person folders", type=["zip"], key=_gen_key("faces_upload_zip"))
        if zipped is not None and st.button("Enrol from this zip", key="faces_import_zip", type="primary"):
            spool = subdir("tmp") / f"upload-{secrets.token_hex(8)}.zip"
            try:
                spool.write_bytes(zipped.getvalue())
                result = store.import_zip(spool, zipped.name.removesuffix(".zip") or "People",
                                          on_progress=_progress("Unpacking and checking"),
                                          display_name=zipped.name)  # shown, never a path
            except Exception as err:  # ArchiveError, DatasetError, OSError: one clear line
                st.error(f"The zip was not imported: {refusal_reason(err, zipped.name)}")
            else:
                _imported(result)
                st.rerun()
            finally:
                spool.unlink(missing_ok=True)
    with tabs[2]:
        # not "faces_path": that is the Train page's model choice, which is kept across pages (it showed here)
        path = st.text_input("Folder path (one sub-folder per person)", key="faces_folder_path",
                             placeholder="/home/me/photos/team")
        if st.button("Enrol this folder", key="faces_import_path", type="primary", disabled=not path.strip()):
            folder = os.path.abspath(os.path.expanduser(path.strip()))
            if not os.path.isdir(folder):
                st.error(f"There is no folder at {esc(folder)}.")
            else:
                try:
                    result = store.import_folder(folder, os.path.basename(folder) or "People",
                                                 on_progress=_progress("Checking photos"))
                except (store.DatasetError, OSError) as err:
                    st.error(f"The folder was not imported: {refusal_reason(err)}")
                else:
                    _imported(result)
                    st.rerun()
    with tabs[3]:
        st.write("Start with one person in front of the camera; add more people and shots below afterwards.")
        first = st.text_input("Name of the person", key="faces_cam_first", max_chars=100).strip()
        if st.toggle("Use the camera", key="faces_cam_first_on", help="Your browser asks for permission first."):
            shot = st.camera_input("Take a photo (one face, looking at the camera)", key=_gen_key("faces_cam_new"))
            if shot is not None and first and st.button("Enrol this person", key="faces_cam_new_go", type="primary"):
                try:
                    result = store.import_files([(f"camera-{time.strftime('%Y%m%d-%H%M%S')}.jpg", shot.getvalue(),
                                                  first)], "Camera people")
                except (store.DatasetError, OSError) as err:
                    st.error(f"The photo was not enrolled: {refusal_reason(err)}")
                else:
                    _imported(result)
                    st.rerun()
    st.stop()

# --- one set of people -----------------------------------------------------------------------------------------
from core.tasks.faces.enrol import FaceCache, choose_face, detect_dataset, shown_name  # noqa: E402

ds = store.load_dataset(chosen)
slot = st.empty()


def _detecting(done: int, total: int) -> None:
    if done < total:
        slot.progress(done / max(1, total), text=f"Finding and aligning the faces (once per photo): {done}/{total}")


photos = detect_dataset(chosen, on_progress=_detecting)
slot.empty()
cache = FaceCache(store.dataset_dir(chosen) / "faces")
people = sorted({p.label for p in photos} | set(ds.classes))
ok = [p for p in photos if p.ok]
c1, c2, c3 = st.columns(3)
c1.metric("People", len(people))
c2.metric("Photos with a face", len(ok))
c3.metric("Photos without a face", sum(p.status == "no_face" for p in photos))

no_face = [p for p in photos if p.status != "ok"]
if no_face:
    with st.expander(f"{count(len(no_face), 'photo')} without a usable face (not enrolled)", expanded=True):
        for p in no_face:
            st.write(f"• {esc(shown_name(p))}: {esc(p.note)}")
several = [p for p in photos if p.n_faces > 1]
if several:
    with st.expander(f"{count(len(several), 'photo')} with several faces: the largest is used unless you choose"):
        for p in several[:30]:
            rec = cache.record(p.key) or {}
            try:
                img = Image.open(p.path).convert("RGB")
            except OSError:
                continue
            draw = ImageDraw.Draw(img)
            font = ImageFont.load_default(size=label_size(img.size))  # the face numbers, readable at 320 px wide
            for n, f in enumerate(rec.get("faces", [])):
                x1, y1, x2, y2 = f["box"]
                draw.rectangle((x1, y1, x2, y2), outline="#f59e0b" if n != p.chosen else "#16a34a", width=3)
                draw.text((x1 + 4, y1 + 2), str(n + 1), fill="#ffffff", font=font, stroke_width=2,
                          stroke_fill="#000000")
            left, right = st.columns([2, 1])
            left.image(img, caption=shown_name(p), width=320)
            # keyed by the photo, not its place in the list: a choice stays with its photo when the list changes
            pick = right.selectbox("Which face is this person?", list(range(p.n_faces)), index=p.chosen,
                                   format_func=lambda n: f"face {n + 1}", key=f"faces_pick_{p.key}")
            if pick != p.chosen and right.button("Use this face", key=f"faces_pick_go_{p.key}"):
                choose_face(cache, p, int(pick))
                st.rerun()

st.subheader("Enrolled faces")
for person in people:
    mine = [p for p in ok if p.label == person]
    st.markdown(f"**{esc(person)}** — {count(len(mine), 'photo')} with a face")
    crops = [cache.crop_path(p.key) for p in mine[:12] if cache.crop_path(p.key).is_file()]
    if crops:
        st.image([str(c) for c in crops], width=72)
    else:
        st.caption("No usable face yet: add photos below.")

st.subheader("Add photos to a person")
names = people + ["➕ a new person"]
target = st.selectbox("Person", names, key="faces_add_person")
if target == "➕ a new person":
    target = st.text_input("Name of the new person", key="faces_new_person", max_chars=100).strip()
files_col, camera_col = st.columns(2)
with files_col:
    files = st.file_uploader("Photos", type=list(PHOTO_UPLOAD_TYPES), accept_multiple_files=True,
                             key=_gen_key("faces_add_files"))
    if files and target and st.button(f"Add {len(files)} photo(s)", key="faces_add_files_go"):
        try:
            res = store.add_images(chosen, target, [(f.name, f.getvalue()) for f in files])
        except (store.DatasetError, OSError) as err:
            st.error(f"The photos were not added: {refusal_reason(err)}")
        else:
            st.session_state["faces_upload_gen"] = int(st.session_state.get("faces_upload_gen", 0)) + 1
            st.session_state["faces_flash"] = f"Added {count(res.imported, 'photo')} to {esc(target)}" \
                                              f"{_skipped(res.skipped)}."
            st.rerun()
with camera_col:
    if st.toggle("Use the camera", key="faces_camera_on", help="Your browser asks for permission first."):
        shot = st.camera_input("Take a photo (one face, looking at the camera)", key=_gen_key("faces_camera"))
        if shot is not None and target and st.button(f"Add this shot to {esc(target)}", key="faces_camera_add",
                                                     type="primary"):
            try:
                store.add_images(chosen, target, [(f"camera-{time.strftime('%Y%m%d-%H%M%S')}.jpg", shot.getvalue())])
            except (store.DatasetError, OSError) as err:
                st.error(f"The photo was not added: {refusal_reason(err)}")
            else:
                st.session_state["faces_upload_gen"] = int(st.session_state.get("faces_upload_gen", 0)) + 1
                st.session_state["faces_flash"] = f"Added a camera shot to {esc(target)}."
                st.rerun()

st.page_link(step_page("train"), label="Next: enrol them in a model →", icon=":material/model_training:")

st.divider()
st.subheader("Delete a person everywhere")
st.write("Removes their photos, face crops and embeddings from this set and from every model (gallery) that "
         "enrolled them, and tells you which fine-tuned models were trained on their photos.")
victim = st.selectbox("Person to delete", people, key="faces_delete_person")
sure = st.checkbox(f"Yes, delete {esc(victim)} and all their photos", key="faces_delete_confirm")
if st.button("Delete this person", key="faces_delete", type="primary", disabled=not sure, icon=":material/delete:"):
    from core.tasks.faces.privacy import delete_person

    report = delete_person(chosen, victim)
    st.session_state["faces_flash"] = report.summary()
    st.rerun()
