"""Faces · Test: identify every face in a photo (a group photo too, or the camera) — boxed and named or "unknown",
with its score and the time per photo — and verify whether two photos show the same person."""

from __future__ import annotations

import io
import time

import streamlit as st
from PIL import Image

from core import runs
from core.data.names import PHOTO_UPLOAD_TYPES
from core.settings import runs_root
from core.tasks.faces.draw import draw_answers, outline_face
from views.common import count, draft, esc, set_draft, step_page

st.title("5 · Identify and verify")


@st.cache_resource(show_spinner="Loading the face model…", max_entries=3)
def recognizer(run_path: str, stamp: float):  # noqa: ARG001 - stamp: reload when the gallery changes
    from core.tasks.faces.predict import load_recognizer

    return load_recognizer(run_path)


def _faces_runs() -> list:
    return [p for p in runs.list_runs(task="faces") if (p / "gallery.json").is_file()]


found = _faces_runs()
if not found:
    st.info("No face model is ready yet: enrol people in a model first.")
    st.page_link(step_page("train"), label="Go to the Train page", icon=":material/model_training:")
    st.stop()
ids = [p.name for p in found]
current = draft("run_id")


def _not_ready(run_id: str | None) -> bool:
    """Whether `run_id` is a faces run still on its way (queued or training, no model yet): the run the Train
    page follows, which this page must not replace by the model it shows meanwhile."""
    if not run_id or run_id in ids or not runs.is_run_id(run_id) or not (runs_root() / run_id).is_dir():
        return False
    return runs.read_json_config(runs_root() / run_id).get("task") == "faces" and \
        runs.read_status(runs_root() / run_id).get("state") in runs.ACTIVE_STATES


def _picked() -> None:
    set_draft("run_id", st.session_state["faces_test_run"])


waiting = _not_ready(current)
if waiting:
    st.info(f"**{esc(runs.display_name(runs_root() / current))}** is still training: try it here once it is ready. "
            "Meanwhile you can try a model that is ready.", icon=":material/hourglass_top:")
run_id = st.selectbox("Model", ids, index=ids.index(current) if current in ids else 0, key="faces_test_run",
                      format_func=lambda r: f"{runs.display_name(runs_root() / r)} ({r})", on_change=_picked)
if not waiting:  # choosing a model here while one trains would make the Train page lose the run it follows
    set_draft("run_id", run_id)
    set_draft("faces_model", runs.read_json_config(runs_root() / run_id).get("backbone"))  # for the sidebar
RUN = runs_root() / run_id
rec = recognizer(str(RUN), (RUN / "gallery.json").stat().st_mtime)
st.caption(f"{len(rec.people)} people enrolled · threshold {rec.threshold:.3f} (false-accept rate "
           f"{rec.meta.get('target_far')}) · {rec.gallery.kind} gallery · change the threshold on the Runs page.")
threshold_note = (rec.meta.get("calibration") or {}).get("note")
if threshold_note:  # how the threshold was chosen, when the photos alone could not say (few people enrolled)
    st.caption(esc(threshold_note))


identify, verify = st.tabs(["Who is this?", "Same person?"])
with identify:
    files = st.file_uploader("Photos (group photos too)", type=list(PHOTO_UPLOAD_TYPES),
                             accept_multiple_files=True, key="faces_test_files")
    shot = None
    if st.toggle("Use the camera", key="faces_test_camera_on"):
        shot = st.camera_input("Take a photo", key="faces_test_camera")
    sources = [(f.name, f.getvalue()) for f in files or []] + ([("camera.jpg", shot.getvalue())] if shot else [])
    for name, data in sources:
        t0 = time.perf_counter()
        res = rec.predict_file(data, name=name)
        if res.get("error"):
            st.error(f"{esc(name)}: this file could not be opened as a photo ({esc(res['error'])}).")
            continue
        left, right = st.columns([3, 2])
        img = Image.open(io.BytesIO(data))
        left.image(draw_answers(img, res["faces"]), caption=name)
        with right:
            st.markdown(f"**{esc(name)}** — {count(len(res['faces']), 'face')}, "
                        f"{1000 * (time.perf_counter() - t0):.0f} ms")
            if not res["faces"]:
                st.warning("No face found in this photo.")
            for i, a in enumerate(res["faces"]):
                verdict = "unknown" if a["label"] == "unknown" else a["label"]
                st.markdown(f"{i + 1}. **{esc(verdict)}** · score {a['score']:.3f}"
                            + (f" (closest: {esc(a['closest'])})" if a["label"] == "unknown" else ""))
with verify:
    c1, c2 = st.columns(2)
    a = c1.file_uploader("First photo", type=list(PHOTO_UPLOAD_TYPES), key="faces_verify_a")
    b = c2.file_uploader("Second photo", type=list(PHOTO_UPLOAD_TYPES), key="faces_verify_b")
    if a and b:
        from core.data.images import load_rgb

        try:
            first, second = load_rgb(a.getvalue()), load_rgb(b.getvalue())
            out = rec.verify(first, second)
        except Exception as err:  # unreadable image
            st.error(f"Could not compare: {esc(err)}")
        else:
            for col, img, box in zip((c1, c2), (first, second), out.get("boxes") or [None, None], strict=True):
                col.image(img if box is None else outline_face(img, box), width=220)
            if out["score"] is None:
                st.warning(out["reason"])
            else:
                if max(out.get("n_faces") or [1]) > 1:  # a group photo: say which face was compared
                    st.caption("A photo holds several faces: its largest face (boxed) is the one compared.")
                word = "the same person" if out["same"] else "different people"
                st.metric("Similarity", f"{out['score']:.3f}", help=f"Same person from {out['threshold']:.3f}.")
                (st.success if out["same"] else st.info)(f"Probably {word} (threshold {out['threshold']:.3f}).")
