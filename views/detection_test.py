"""Test a detector: drop photos or take one; boxes with class and score, a threshold slider, time per photo."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from core import runs
from core.data.names import PHOTO_UPLOAD_TYPES
from core.inference import export_refusal
from core.settings import subdir
from core.tasks.detection.draw import detections_image
from core.tasks.detection.predict import Detector
from views.common import count, draft, esc, memo_put, session_memo, set_draft, step_page

st.title("5 · Test your detector")


@st.cache_resource(show_spinner=False, max_entries=4)
def _run_detector(run_dir: str, stamp: float) -> Detector:  # noqa: ARG001 - stamp: reload when weights change
    from core.tasks.detection.predict import from_run

    return from_run(run_dir)


@st.cache_resource(show_spinner=False, max_entries=4)
def _export_detector(path: str, digest: str) -> Detector:  # noqa: ARG001 - digest is the cache key
    from core.tasks.detection.export import load_export

    return load_export(path)


def _detection_runs() -> list[Path]:
    return [p for p in runs.list_runs(task="detection") if (p / "checkpoints" / "best.safetensors").exists()]


def _detect(model_key: str, detector: Detector, name: str, data: bytes):
    """The photo's boxes scoring at least 0.05, computed once per model and photo: moving the threshold re-draws,
    it does not detect again."""
    store, key = session_memo("dtest_results"), (model_key, hashlib.sha256(data).hexdigest(), name)
    if key not in store:
        memo_put(store, key, detector.detect(data, name=name, threshold=0.05), 64)
    return store[key]


def _choose() -> tuple[Detector, str] | None:
    """The detector chosen and a key naming its weights (run and file time, or the export's digest)."""
    source = st.radio("Model", ["A run trained here", "An exported model (.zip)"], key="dtest_source",
                      horizontal=True)
    if source.startswith("An exported"):
        upload = st.file_uploader("Exported detector (zip with model.safetensors + manifest.json)", type=["zip"],
                                  key="dtest_export_zip")
        st.caption("Only the safetensors export of a Transfer Studio detection model (model.safetensors + "
                   "manifest.json) can be tested here. ONNX exports are for running the model outside this app. "
                   "Other files are refused without being opened as code.")
        if upload is None:
            return None
        data = upload.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = subdir("imports") / f"{digest[:16]}.zip"
        if not path.exists():
            path.write_bytes(data)
        try:
            return _export_detector(str(path), digest), f"export:{digest}"
        except Exception as err:  # noqa: BLE001 - ExportError and friends: a message, never a traceback
            st.error(f"This file cannot be used: {esc(export_refusal(path, str(err), upload.name))}")
            return None
    done = _detection_runs()
    if not done:
        st.info("No trained detector yet.")
        st.page_link(step_page("train"), label="Go to the Train page", icon=":material/model_training:")
        return None
    names = [p.name for p in done]
    current = draft("run_id")
    labels = {p.name: f"{runs.display_name(p)} ({p.name})" for p in done}
    chosen = st.selectbox("Run", names, index=names.index(current) if current in names else 0, key="dtest_run",
                          format_func=lambda n: labels.get(n, n))
    set_draft("run_id", chosen)
    run_dir = done[names.index(chosen)]
    stamp = (run_dir / "checkpoints" / "best.safetensors").stat().st_mtime
    with st.spinner("Loading the detector…"):
        return _run_detector(str(run_dir), stamp), f"run:{run_dir}:{stamp}"


chosen = _choose()
if chosen is None:
    st.stop()
detector, model_key = chosen
st.caption(f"Classes: {esc(', '.join(detector.classes))}")
threshold = st.slider("Show boxes scoring at least", 0.05, 0.95, 0.5, 0.05, key="dtest_threshold",
                      help="Lower finds more objects but also more false boxes.")
files = st.file_uploader("Photos", type=list(PHOTO_UPLOAD_TYPES), accept_multiple_files=True,
                         key="dtest_files")
shot = st.camera_input("Or take a photo", key="dtest_camera") if st.toggle("Use the camera",
                                                                         key="dtest_camera_on") else None
inputs = [(f.name, f.getvalue()) for f in files or []] + ([("camera photo", shot.getvalue())] if shot else [])
for n, (name, data) in enumerate(inputs):
    result = _detect(model_key, detector, name, data)
    st.subheader(esc(name))
    if not result.ok:
        st.error(f"{esc(name)} cannot be read: {esc(result.error)}")
        continue
    shown = [d.to_dict() for d in result.detections if d.score >= threshold]
    left, right = st.columns([3, 2])
    from core.data.images import load_rgb

    left.image(detections_image(load_rgb(data), shown), width="stretch")
    if shown:
        right.dataframe(pd.DataFrame([{"class": d["label"], "score": round(d["score"], 3),
                                       "box (x1, y1, x2, y2)": ", ".join(f"{v:.0f}" for v in d["box"])}
                                      for d in shown]), hide_index=True, key=f"dtest_table_{n}")
    elif result.detections:
        best = max(d.score for d in result.detections)
        right.info(f"No box scored {threshold:.2f} or more; the best one scored {best:.2f}. Lower 'Show boxes "
                   "scoring at least' to see the weaker boxes; a model that is never sure needs more training.")
    else:
        right.info("The model found nothing in this photo, not even a weak box.")
    right.caption(f"{count(len(shown), 'box', 'boxes')} · {1000 * result.seconds:.0f} ms for this photo "
                  f"({result.width}×{result.height} px)")
