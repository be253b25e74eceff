"""Test: drop photos (or take one) and see the model's top answers, the time per photo and where it looked."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import runs
from core.data.names import PHOTO_UPLOAD_TYPES
from core.gradcam import CamResult
from core.inference import PredictError, Prediction, Predictor, stored_threshold
from core.settings import runs_root, subdir
from views.common import current_task, draft, esc, memo_put, session_memo, set_draft, step_page

st.title("5 · Test your model")


def _warm_up(predictor: Predictor) -> None:
    """Make the model's fast copy and Grad-CAM's first pass (target layer, backward) on a blank image, so the first
    photo dropped does not wait for them: 1–3 s of one-time work done while the user picks a photo. Answers and
    heat-maps are the same."""
    from core.gradcam import find_target_layer, grad_cam
    from core.pipeline import eval_batch

    try:
        predictor.warm_up()
        blank = np.zeros((1, predictor.prep.scale_size, predictor.prep.scale_size, 3), dtype=np.uint8)
        x = eval_batch(blank, predictor.prep, channels_last=False).to(predictor.plan.torch_device())
        with predictor.lock:
            grad_cam(predictor.model, x, 0, find_target_layer(predictor.model, x))
    except Exception:  # noqa: BLE001 - only a head start: the photo's own call reports any problem
        pass


def _loaded(predictor: Predictor) -> Predictor:
    """The predictor, warming up in a background thread (once per loaded model: called in the cached loaders)."""
    threading.Thread(target=_warm_up, args=(predictor,), name="test-warm-up", daemon=True).start()
    return predictor


@st.cache_resource(show_spinner=False, max_entries=4)
def _run_predictor(run_dir: str, stamp: float) -> Predictor:  # noqa: ARG001 - stamp: reload when weights change
    return _loaded(Predictor.from_run(run_dir))


@st.cache_resource(show_spinner=False, max_entries=4)
def _export_predictor(path: str, digest: str, _shown: str) -> Predictor:  # noqa: ARG001 - digest is the cache key
    """The uploaded export stored at `path`; refusals name it `_shown` (the upload's own name, never a path)."""
    return _loaded(Predictor.from_export(path, shown_name=_shown))


def _finished_runs() -> list[Path]:
    """This task's runs with saved weights (a detection or segmentation model cannot answer "which class?")."""
    return [p for p in runs.list_runs(task=current_task()) if (p / "checkpoints" / "best.safetensors").exists()]


def _choose_model() -> Predictor | None:
    source = st.radio("Model", ["A run trained here", "An exported model (.zip)"], key="test_source",
                      horizontal=True)
    if source.startswith("An exported"):
        upload = st.file_uploader("Exported model: the .zip downloaded from Runs & export with the format "
                                  "“safetensors”", type=["zip"], key="test_export_zip")
        st.caption("Only the safetensors export of Transfer Studio (model.safetensors + manifest.json) can be tested "
                   "here. ONNX and TorchScript exports are for running the model outside this app. Other files are "
                   "refused without being opened as code.")
        if upload is None:
            return None
        data = upload.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = subdir("imports") / f"{digest[:16]}.zip"
        if not path.exists():
            path.write_bytes(data)
        try:
            return _export_predictor(str(path), digest, upload.name)
        except Exception as err:  # ExportError and friends: a message, never a traceback
            st.error(f"This file cannot be used: {esc(str(err))}")
            return None
    done = _finished_runs()
    if not done:
        st.info("No trained model yet.")
        st.page_link(step_page("train"), label="Go to the Train page", icon=":material/model_training:")
        return None
    names = [p.name for p in done]
    current = draft("run_id")
    labels = {p.name: f"{runs.display_name(p)} · "
                      f"{(runs.read_status(p).get('best_val_accuracy') or 0):.1%} ({p.name})" for p in done}
    run_id = st.selectbox("Run", names, index=names.index(current) if current in names else 0,
                          format_func=lambda n: labels[n], key="test_run")
    set_draft("run_id", run_id)
    weights = runs_root() / run_id / "checkpoints" / "best.safetensors"
    predictor = _run_predictor(str(runs_root() / run_id), weights.stat().st_mtime)
    # the "not sure" threshold is the run's (chosen on its Results tab at any time): read on every run, not cached
    # with the model, so a choice made after the model was loaded applies at once (for every session: it is the run's)
    predictor.threshold = stored_threshold(runs_root() / run_id)
    return predictor


CACHE_SIZE = 300  # answers kept per browser session (small: each photo's class probabilities)


def unreadable_message(reason: str) -> str:
    """Why a dropped file got no answer, with what to do about a photo format the app cannot open."""
    fmt = re.fullmatch(r"format (.+?) (?:not allowed|cannot be opened here.*)", reason)
    if fmt:
        return (f"This file cannot be read: it is a {fmt.group(1)} file, a format this app cannot open. Save it as "
                "JPEG or PNG (most photo apps can: Export or Save as) and drop it again.")
    return f"This file cannot be read: {esc(reason)}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_key(predictor: Predictor) -> str:
    """Names the loaded model and its weights: answers kept for another model or older weights are not reused."""
    path = predictor.path or Path(predictor.backbone)
    weights = path / "checkpoints" / "best.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    return f"{predictor.origin}:{path}:{stamp}"


def _answers(predictor: Predictor, model_key: str, inputs: list[tuple[str, bytes]]) -> list[Prediction]:
    """Every class's probability for each photo (the page shows the top few), computed once per photo and
    model: only photos not seen before are classified."""
    store = session_memo("test_answers")
    keys = [(model_key, predictor.threshold, _digest(data)) for _, data in inputs]
    todo = [i for i, key in enumerate(keys) if key not in store]
    if todo:
        fresh = predictor.predict([inputs[i][1] for i in todo], top_k=len(predictor.classes),
                                  names=[inputs[i][0] for i in todo])
        for i, answer in zip(todo, fresh, strict=True):
            memo_put(store, keys[i], answer, CACHE_SIZE)
    return [replace(store[key], name=name) for key, (name, _) in zip(keys, inputs, strict=True)]


@st.cache_data(show_spinner=False, max_entries=64)
def _heatmap(_predictor: Predictor, model_key: str, digest: str, _data: bytes) -> CamResult | str:  # noqa: ARG001
    """The Grad-CAM of one photo (computed once per photo and model: `model_key` and the photo's `digest` key the
    cache; heat-maps are images, so they live in Streamlit's bounded cache, not in the session), or why there is
    none."""
    from core.gradcam import explain

    try:
        return explain(_predictor, _data)
    except Exception as err:  # noqa: BLE001 - Grad-CAM is an extra: explain, never break the page
        return str(err)


def _bars(top_k: tuple[tuple[str, float], ...]) -> go.Figure:
    labels = [c for c, _ in top_k][::-1]
    fig = go.Figure(go.Bar(x=[p for _, p in top_k][::-1], y=labels, orientation="h", marker_color="#2563eb",
                           text=[f"{p:.1%}" for _, p in top_k][::-1], textposition="auto"))
    # room on the right for the "100%" tick, which plotly drops when it would overflow (the axis seemed to end at 80%)
    fig.update_layout(height=60 + 32 * len(labels), margin=dict(l=10, r=30, t=10, b=10),
                      xaxis=dict(range=[0, 1], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1]))
    return fig


predictor = _choose_model()
if predictor is None:
    st.stop()
st.caption(f"{len(predictor.classes)} classes: " + ", ".join(esc(c) for c in predictor.classes[:20])
           + (" …" if len(predictor.classes) > 20 else ""))
if predictor.threshold is not None:
    st.caption(f"Answers below {predictor.threshold:.0%} confidence are shown as “not sure”.")

files = st.file_uploader("Photos to test", type=list(PHOTO_UPLOAD_TYPES), accept_multiple_files=True, key="test_files")
camera = st.camera_input("Or take a photo", key="test_camera") if st.toggle("Use the camera",
                                                                             key="test_camera_on") else None
show_cam = st.toggle("Show where the model looked (Grad-CAM)", value=True, key="test_gradcam")
top_k = st.slider("How many answers to show", 1, max(1, min(10, len(predictor.classes))),
                  min(3, len(predictor.classes)), key="test_top_k")

inputs = [(f.name, f.getvalue()) for f in files or []]
if camera is not None:
    inputs.append(("camera photo", camera.getvalue()))
if not inputs:
    st.info("Drop one or more photos above.")
    st.stop()

model_key = _model_key(predictor)
try:
    answers = _answers(predictor, model_key, inputs)
except PredictError as err:
    st.error(str(err))
    st.stop()

for i, ((name, data), answer) in enumerate(zip(inputs, answers, strict=True)):
    st.divider()
    left, mid, right = st.columns([1, 2, 1])
    left.markdown(f"**{esc(name)}**")
    if not answer.ok:
        left.error(unreadable_message(answer.error))
        continue
    left.image(data, width="stretch")
    verdict = "not sure" if answer.unsure else esc(answer.label)
    mid.markdown(f"### {verdict}")
    # the same photo may be dropped twice: the position keeps the keys apart
    mid.plotly_chart(_bars(answer.top_k[:top_k]), key=f"test_bars_{i}_{_digest(data)[:8]}")
    mid.caption(f"{answer.seconds * 1000:.0f} ms for this photo on {predictor.plan.device}")
    if show_cam:
        cam = _heatmap(predictor, model_key, _digest(data), data)
        if isinstance(cam, str):  # Grad-CAM is an extra: explain, never break the page
            right.caption(f"No heat-map for this model: {esc(cam)}")
        elif cam.has_evidence:
            right.image(cam.overlay, caption=f"Where it looked for “{esc(cam.target_label)}” (the square the model "
                        "sees)", width="stretch")
        else:
            right.caption("Nothing in this photo speaks for the predicted class.")
