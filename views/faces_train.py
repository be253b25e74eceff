"""Faces · Train: the two model paths side by side on the same people — the frozen face model (seconds) and a zoo
backbone fine-tuned with ArcFace under the Layers page's freeze choice — run in their own process, with live
progress, curves, Stop/Resume, read from the run folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from core import jobs, runs
from core.config import DEFAULT_BACKBONE, RunConfig
from core.plots import batch_loss_figure, epoch_curves
from core.progress import read_run
from core.settings import runs_root
from core.tasks import get_task
from core.tasks.faces.embed import DLIB_MODEL, FACE_MODELS
from core.tasks.faces.gallery import KINDS
from core.tasks.faces.threshold import TARGET_FARS
from core.trainset import DatasetProblem
from views.common import dataset_label, draft, draft_freeze, esc, set_draft, step_page

TASK = get_task("faces")
st.title("4 · Enrol in a model")
dataset_id = draft("dataset_id")
if not dataset_id:
    st.info("Enrol some people first.")
    st.page_link(step_page("data"), label="Go to the People page", icon=":material/photo_library:")
    st.stop()
backbone = draft("backbone") or DEFAULT_BACKBONE
freeze = draft_freeze()
st.write(f"People: **{dataset_label(dataset_id)}**.")

# the two paths by kind, not by model name: a fine-tune choice stays one when the backbone changes on the Model page
PATHS = {"face": f"Face model, frozen — {FACE_MODELS[DLIB_MODEL]}. Ready in seconds.",
         "finetune": f"Fine-tune {backbone} (ImageNet weights) with ArcFace — layers: {freeze.preset} "
                     "(Layers page). Minutes; shows what a general-purpose source model buys."}
path = st.radio("Model", list(PATHS), format_func=PATHS.get, key="faces_path")
model = DLIB_MODEL if path == "face" else backbone
set_draft("faces_model", model)  # the sidebar names the model chosen here (the frozen face model has no layers)
c1, c2 = st.columns(2)
kind = c1.radio("Gallery", list(KINDS), format_func=lambda k: f"{k}: {KINDS[k]}", key="faces_gallery")
far = c2.select_slider("False-accept rate you accept (strangers named as somebody)", list(TARGET_FARS), value=0.01,
                       key="faces_far", help="The 'unknown' threshold is chosen on held-back enrolment photos so "
                                             "that about this share of strangers would be accepted.")
defaults = TASK.default_train()
epochs = defaults.epochs
if model != DLIB_MODEL:
    epochs = st.number_input("Epochs", 1, 200, value=defaults.epochs, key="faces_epochs")


def _start() -> None:
    train = replace(defaults, epochs=int(epochs))
    try:
        manifest = TASK.resolve_data(dataset_id, train.seed)
    except DatasetProblem as err:
        st.error(str(err))
        return
    except Exception as err:  # a store error: say it plainly
        st.error(f"The people cannot be used: {err}")
        return
    manifest["faces"] = {"gallery": kind, "target_far": float(far)}
    name = ("Face model (frozen)" if model == DLIB_MODEL else f"Fine-tune · {model}") + " · Faces"
    config = RunConfig(model, dataset_id, freeze, train, task="faces", name=name)
    run_dir = runs.create_run(config, manifest)
    jobs.start(run_dir)
    set_draft("run_id", run_dir.name)


if st.button("Start", key="faces_train_start", type="primary", icon=":material/play_arrow:"):
    _start()

run_id = draft("run_id")
if not run_id or not (runs_root() / run_id / "config.json").is_file() or \
        runs.read_json_config(runs_root() / run_id).get("task") != "faces":
    st.caption("Start with the face model: it is ready in seconds. Then fine-tune a backbone to compare.")
    st.stop()
RUN_DIR = runs_root() / run_id


@st.cache_data(show_spinner=False, max_entries=8)
def _threshold_note(gallery_file: str, mtime: float) -> str:  # noqa: ARG001 - mtime: read again when it changes
    """How the run's threshold was chosen (gallery.json's calibration note), read once per version of the file
    rather than at every tick of the live view."""
    from core.storage import read_json

    return ((read_json(Path(gallery_file), {}) or {}).get("calibration") or {}).get("note", "")


@st.fragment(run_every=1.0)
def live() -> None:
    view = read_run(RUN_DIR)
    status, state = view.status, view.state
    st.subheader(runs.display_name(RUN_DIR))
    if state in ("queued", "running", "stopping"):
        st.progress(min(1.0, float(status.get("progress") or 0.0)), text=status.get("message", "Starting…"))
    elif state == "completed":
        st.success(status.get("message", "Finished."))
    elif state in ("failed", "crashed"):
        st.error(status.get("message", "Failed."))
    elif state in ("stopped", "cancelled"):
        st.warning(status.get("message", "Stopped."))
    b1, b2 = st.columns(2)
    if state in ("running", "queued"):
        if b1.button("Stop", key="faces_train_stop", icon=":material/stop:"):
            jobs.stop(RUN_DIR)
        if b2.button("Cancel now", key="faces_train_cancel", icon=":material/cancel:"):
            jobs.cancel(RUN_DIR)
    if state in ("stopped", "crashed", "cancelled", "failed"):
        if b1.button("Resume", key="faces_train_resume", icon=":material/play_arrow:"):
            jobs.start(RUN_DIR)
    if view.history:
        best = status.get("best_val_accuracy")
        last = view.history[-1]
        m1, m2, m3 = st.columns(3)
        m1.metric("Held-back photos named correctly", f"{best:.1%}" if best is not None else "—")
        threshold = (last.get("metrics") or {}).get("threshold")
        m2.metric("'Unknown' threshold", f"{threshold:.3f}" if threshold is not None else "—")
        m3.metric("Device", status.get("device", "?"))
        gallery_file = RUN_DIR / "gallery.json"
        if state == "completed" and gallery_file.is_file():  # how the threshold was chosen, when photos could not
            note = _threshold_note(str(gallery_file), gallery_file.stat().st_mtime)
            if note:
                st.caption(esc(note))
        if len(view.history) > 1:
            left, right = st.columns(2)
            left.plotly_chart(epoch_curves(view.history, "loss", view.phases), key="faces_loss_chart")
            right.plotly_chart(epoch_curves(view.history, "accuracy", view.phases, label="named correctly"),
                               key="faces_acc_chart")
    if len(view.losses) > 2 and any(v == v for v in view.losses):
        st.plotly_chart(batch_loss_figure(view.steps, view.losses, []), key="faces_batch_chart")
    for note in view.notices[-5:]:
        (st.error if note["type"] == "fit_failed" else st.caption)(note.get("message") or note.get("reason", ""))
    if state == "completed":
        st.page_link(step_page("test"), label="Next: identify faces →", icon=":material/science:")


live()
