"""Faces · Test: identify every face in a photo (a group photo too, or the camera) — boxed and named or "unknown",
with its score and the time per photo — and verify whether two photos show the same person."""

from __future__ import annotations

import io
import time

import streamlit as st
from PIL import Image, ImageDraw

from core import runs
from core.settings import runs_root
from views.common import draft, esc, set_draft, step_page

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
run_id = st.selectbox("Model", ids, index=ids.index(current) if current in ids else 0, key="faces_test_run",
                      format_func=lambda r: f"{runs.display_name(runs_root() / r)} ({r})")
set_draft("run_id", run_id)
RUN = runs_root() / run_id
rec = recognizer(str(RUN), (RUN / "gallery.json").stat().st_mtime)
st.caption(f"{len(rec.people)} people enrolled · threshold {rec.threshold:.3f} (false-accept rate "
           f"{rec.meta.get('target_far')}) · {rec.gallery.kind} gallery · change the threshold on the Runs page.")
threshold_note = (rec.meta.get("calibration") or {}).get("note")
if threshold_note:  # how the threshold was chosen, when the photos alone could not say (few people enrolled)
    st.caption(esc(threshold_note))


def boxed(img: Image.Image, answers: list[dict]) -> Image.Image:
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 250))
    for a in answers:
        x1, y1, x2, y2 = a["box"]
        colour = "#16a34a" if a["label"] != "unknown" else "#dc2626"
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        draw.text((x1 + 3, max(0, y1 - 12)), f"{a['label']} {a['score']:.2f}", fill=colour)
    return out


identify, verify = st.tabs(["Who is this?", "Same person?"])
with identify:
    files = st.file_uploader("Photos (group photos too)", type=["jpg", "jpeg", "png", "webp", "bmp"],
                             accept_multiple_files=True, key="faces_test_files")
    shot = None
    if st.toggle("Use the camera", key="faces_test_camera_on"):
        shot = st.camera_input("Take a photo", key="faces_test_camera")
    sources = [(f.name, f.getvalue()) for f in files or []] + ([("camera.jpg", shot.getvalue())] if shot else [])
    for name, data in sources:
        t0 = time.perf_counter()
        res = rec.predict_file(data, name=name)
        if res.get("error"):
            st.error(f"{esc(name)}: {esc(res['error'])}")
            continue
        left, right = st.columns([3, 2])
        img = Image.open(io.BytesIO(data))
        left.image(boxed(img, res["faces"]), caption=name)
        with right:
            st.markdown(f"**{esc(name)}** — {len(res['faces'])} face(s), "
                        f"{1000 * (time.perf_counter() - t0):.0f} ms")
            if not res["faces"]:
                st.warning("No face found in this photo.")
            for i, a in enumerate(res["faces"]):
                verdict = "unknown" if a["label"] == "unknown" else a["label"]
                st.markdown(f"{i + 1}. **{esc(verdict)}** · score {a['score']:.3f}"
                            + (f" (closest: {esc(a['closest'])})" if a["label"] == "unknown" else ""))
with verify:
    c1, c2 = st.columns(2)
    a = c1.file_uploader("First photo", type=["jpg", "jpeg", "png", "webp", "bmp"], key="faces_verify_a")
    b = c2.file_uploader("Second photo", type=["jpg", "jpeg", "png", "webp", "bmp"], key="faces_verify_b")
    if a and b:
        from core.data.images import load_rgb

        c1.image(a.getvalue(), width=220)
        c2.image(b.getvalue(), width=220)
        try:
            out = rec.verify(load_rgb(a.getvalue()), load_rgb(b.getvalue()))
        except Exception as err:  # unreadable image
            st.error(f"Could not compare: {esc(err)}")
        else:
            if out["score"] is None:
                st.warning(out["reason"])
            else:
                word = "the same person" if out["same"] else "different people"
                st.metric("Similarity", f"{out['score']:.3f}", help=f"Same person from {out['threshold']:.3f}.")
                (st.success if out["same"] else st.info)(f"Probably {word} (threshold {out['threshold']:.3f}).")
