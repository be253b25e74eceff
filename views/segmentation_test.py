"""Test (segmentation): drop photos or take one; see the coloured mask over the photo with a legend, an opacity
slider and each class's share of the area; download the mask PNG."""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from core import runs
from core.data.names import PHOTO_UPLOAD_TYPES
from core.inference import export_refusal
from core.settings import runs_root, subdir
from views.common import draft, esc, set_draft, step_page
from views.segmentation_results import jpeg, legend, run_predictor

st.title("5 · Test your segmentation model")


@st.cache_resource(show_spinner=False, max_entries=4)
def _export_predictor(path: str, digest: str):  # noqa: ARG001 - digest is the cache key
    from core.tasks.segmentation.predict import SegPredictor

    return SegPredictor.from_export(path)


def _runs() -> list[Path]:
    return [p for p in runs.list_runs(task="segmentation") if (p / "checkpoints" / "best.safetensors").exists()]


@st.cache_data(show_spinner=False, max_entries=16)
def _predict(model_key: str, _predictor, name: str, digest: str, _data: bytes):  # noqa: ARG001 - the cache key
    """The photo's predicted mask, computed once per model (`model_key`) and photo (`digest`): the opacity slider
    re-draws, it does not predict again. Masks are images, so they live in Streamlit's bounded cache."""
    return _predictor.predict(_data, name)


def _choose():
    """The model chosen and a key naming its weights (run and file time, or the export's digest)."""
    source = st.radio("Model", ["A run trained here", "An exported model (.zip)"], key="seg_test_source",
                      horizontal=True)
    if source.startswith("An exported"):
        upload = st.file_uploader("Exported model (zip with model.safetensors + manifest.json)", type=["zip"],
                                  key="seg_test_export_zip")
        st.caption("Only the safetensors export of a Transfer Studio segmentation model (model.safetensors + "
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
            return _export_predictor(str(path), digest), f"export:{digest}"
        except Exception as err:  # noqa: BLE001 - ExportError and friends: a message
            st.error(f"This file cannot be used: {esc(export_refusal(path, str(err), upload.name))}")
            return None
    done = _runs()
    if not done:
        st.info("No trained segmentation model yet.")
        st.page_link(step_page("train"), label="Go to the Train page", icon=":material/model_training:")
        return None
    names = [p.name for p in done]
    current = draft("run_id")
    labels = {p.name: f"{runs.display_name(p)} · mIoU "
                      f"{(runs.read_status(p).get('best_val_accuracy') or 0):.1%} ({p.name})" for p in done}
    run_id = st.selectbox("Run", names, index=names.index(current) if current in names else 0,
                          format_func=lambda n: labels[n], key="seg_test_run")
    set_draft("run_id", run_id)
    weights = runs_root() / run_id / "checkpoints" / "best.safetensors"
    stamp = weights.stat().st_mtime
    return run_predictor(str(runs_root() / run_id), stamp), f"run:{run_id}:{stamp}"


chosen = _choose()
if chosen is None:
    st.stop()
predictor, model_key = chosen
files = st.file_uploader("Photos to test", type=list(PHOTO_UPLOAD_TYPES),
                         accept_multiple_files=True, key="seg_test_files")
camera = st.camera_input("Or take a photo", key="seg_test_camera") if st.toggle(
    "Use the camera", key="seg_test_camera_on") else None
opacity = st.slider("Mask opacity", 0.0, 1.0, 0.5, 0.05, key="seg_test_opacity")
inputs = [(f.name, f.getvalue()) for f in files or []]
if camera is not None:
    inputs.append(("camera photo", camera.getvalue()))
if not inputs:
    st.info("Drop one or more photos above.")
    st.stop()

from core.data.images import load_rgb  # noqa: E402
from core.tasks.segmentation.predict import colour_overlay  # noqa: E402

colours = [tuple(c) for c in predictor.table.colours]
for name, data in inputs:
    st.divider()
    st.markdown(f"**{esc(name)}**")
    pred = _predict(model_key, predictor, name, hashlib.sha256(data).hexdigest(), data)
    if not pred.ok:
        st.error(f"This file cannot be read: {pred.error}")
        continue
    img = load_rgb(data)
    left, right = st.columns([3, 2])
    left.image(jpeg(colour_overlay(img, pred.mask, colours, opacity)), width="stretch")
    left.caption(f"{pred.seconds * 1000:.0f} ms on {predictor.plan.device}" + (f"; {pred.note}" if pred.note else ""))
    with right:
        legend(predictor.classes, colours, pred.shares, key=f"seg_test_legend_{hashlib.md5(data).hexdigest()[:8]}")
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(name).stem)[:60] or "image"
    right.download_button("Download the mask PNG", predictor.mask_png(pred.mask), file_name=f"{stem}_mask.png",
                          mime="image/png", key=f"seg_test_dl_{hashlib.md5(data).hexdigest()[:8]}")
