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
from core.tasks import get_task, run_name
from core.tasks.faces.embed import DLIB_MODEL, FACE_MODELS, is_face_model
from core.tasks.faces.gallery import KINDS
from core.tasks.faces.threshold import TARGET_FARS, all_unknown_hint
from core.trainset import DatasetProblem
from views.common import dataset_label, draft, draft_freeze, esc, set_draft, step_page


def far_words(far: float) -> str:
    """A false-accept rate for people: '1 %' (1 stranger in 100 named as somebody), '0.1 %'."""
    return f"{far * 100:g} %"

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


def _faces_run(run_id: str | None) -> bool:
    """Whether `run_id` names a faces run on this machine."""
    return bool(run_id) and runs.is_run_id(run_id) and (runs_root() / run_id / "config.json").is_file() and \
        runs.read_json_config(runs_root() / run_id).get("task") == "faces"


def _run_to_show() -> str | None:
    """The run the page shows: the one chosen, else (a new session) a faces run still training, else the latest
    one on these people."""
    run_id = draft("run_id")
    if _faces_run(run_id):
        return run_id
    mine = runs.list_runs(task="faces")
    active = [p for p in mine if runs.read_status(p).get("state") in runs.ACTIVE_STATES]
    here = [p for p in mine if runs.read_json_config(p).get("dataset") == dataset_id]
    if active or here:
        set_draft("run_id", (active or here)[0].name)
        return (active or here)[0].name
    return None


def _choices_of(run_dir: Path) -> None:
    """The page's settings start as those of the run shown (after a reload they were the defaults, beside a run
    trained otherwise): set only where the user has not chosen this session."""
    config = runs.read_json_config(run_dir)
    try:
        options = runs.load_dataset(run_dir).get("faces") or {}
    except (runs.RunError, OSError, ValueError):
        options = {}
    choices = {"faces_path": "face" if is_face_model(str(config.get("backbone", DLIB_MODEL))) else "finetune",
               "faces_gallery": options.get("gallery"), "faces_far": options.get("target_far"),
               "faces_epochs": (config.get("train") or {}).get("epochs")}
    valid = {"faces_path": ("face", "finetune"), "faces_gallery": tuple(KINDS), "faces_far": TARGET_FARS}
    for key, value in choices.items():
        ok = value in valid[key] if key in valid else isinstance(value, int) and 1 <= value <= 200
        if ok and key not in st.session_state:
            st.session_state[key] = value


shown = _run_to_show()
if shown:
    _choices_of(runs_root() / shown)

# the two paths by kind, not by model name: a fine-tune choice stays one when the backbone changes on the Model page
PATHS = {"face": f"Face model, frozen — {FACE_MODELS[DLIB_MODEL]}. Ready in seconds.",
         "finetune": f"Fine-tune {backbone} (ImageNet weights) with ArcFace — layers: {freeze.preset} "
                     "(Layers page). Minutes; shows what a general-purpose source model buys."}
path = st.radio("Model", list(PATHS), format_func=PATHS.get, key="faces_path")
model = DLIB_MODEL if path == "face" else backbone
set_draft("faces_model", model)  # the sidebar names the model chosen here (the frozen face model has no layers)
if path == "finetune" and not draft("backbone"):
    set_draft("backbone", backbone)  # the default backbone is the one fine-tuned: the sidebar said "not chosen yet"
c1, c2 = st.columns(2)
kind = c1.radio("Gallery", list(KINDS), format_func=lambda k: f"{k}: {KINDS[k]}", key="faces_gallery")
far = c2.select_slider("False-accept rate you accept (strangers named as somebody)", list(TARGET_FARS),
                       value=0.01, format_func=far_words,
                       key="faces_far", help="The 'unknown' threshold is chosen on held-back enrolment photos so "
                                             "that about this share of strangers would be accepted.")
defaults = TASK.default_train()
epochs = defaults.epochs
if model != DLIB_MODEL:
    epochs = st.number_input("Epochs", 1, 200, value=defaults.epochs, key="faces_epochs")


train = replace(defaults, epochs=int(epochs))
choices = {"gallery": kind, "target_far": float(far)}  # kept in the run's manifest, beside the people


def _start() -> None:
    try:
        manifest = TASK.resolve_data(dataset_id, train.seed)
    except DatasetProblem as err:
        st.error(str(err))
        return
    except Exception as err:  # a store error: say it plainly
        st.error(f"The people cannot be used: {err}")
        return
    manifest["faces"] = choices
    config = RunConfig(model, dataset_id, freeze, train, task="faces",
                       name=run_name("faces", model, manifest, dataset_id))  # runs on other people told apart
    run_dir = runs.create_run(config, manifest)
    jobs.start(run_dir)
    set_draft("run_id", run_dir.name)


twin = jobs.active_twin(RunConfig(model, dataset_id, freeze, train, task="faces"), {"faces": choices})
twin_note = None if twin is None else (
    f"'{runs.display_name(twin)}' is already enrolling these people with these very choices. Change a choice to "
    "queue another run, or stop that one first.")
if st.button("Start", key="faces_train_start", type="primary", icon=":material/play_arrow:",
             disabled=twin is not None, help=twin_note) and twin is None:  # a second click sent before the redraw
    _start()
if twin_note:
    st.caption(twin_note)


def _people_of(run_dir: Path) -> str:
    """The people a run enrolled, by name (escaped): their set's name, or the name the run kept of a set deleted
    since."""
    label = dataset_label(str(runs.read_json_config(run_dir).get("dataset") or ""))
    if label != "(deleted photos)":
        return label
    try:
        kept = str((runs.load_dataset(run_dir).get("source") or {}).get("name") or "")
    except (runs.RunError, OSError, ValueError, AttributeError):
        kept = ""
    return f"{esc(kept[:60])}, deleted since" if kept else label


def other_choices_note(run_dir: Path) -> str | None:
    """Why the run shown is not what Start would make now (other people or another model), or None."""
    config = runs.read_json_config(run_dir)
    theirs = []
    if config.get("dataset") and config["dataset"] != dataset_id:
        theirs.append(f"other people (**{_people_of(run_dir)}**)")
    if config.get("backbone") and config["backbone"] != model:
        theirs.append(f"another model (**{esc(config['backbone'])}**)")
    if not theirs:
        return None
    return (f"The run below was made with {' and '.join(theirs)}, not with the choices above. Press Start to enrol "
            "them as chosen above.")


@st.cache_data(show_spinner=False, max_entries=8)
def _gallery_summary(gallery_file: str, mtime: float) -> tuple[float | None, str]:  # noqa: ARG001 - read again when it changes
    """The saved model's threshold and how it was chosen (gallery.json), read once per version of the file rather
    than at every tick of the live view. The threshold is the one identification uses: the best epoch's, or the
    one chosen again on the Runs page, not the last epoch's."""
    from core.storage import read_json

    meta = read_json(Path(gallery_file), {}) or {}
    threshold = meta.get("threshold")
    return (float(threshold) if isinstance(threshold, int | float) else None,
            (meta.get("calibration") or {}).get("note", ""))


@st.fragment(run_every=1.0)
def live(run_dir: Path) -> None:
    view = read_run(run_dir)
    status, state = view.status, view.state
    st.subheader(runs.display_name(run_dir))
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
            jobs.stop(run_dir)
        if b2.button("Cancel now", key="faces_train_cancel", icon=":material/cancel:"):
            jobs.cancel(run_dir)
    if state in ("stopped", "crashed", "cancelled", "failed"):
        if b1.button("Resume", key="faces_train_resume", icon=":material/play_arrow:"):
            jobs.start(run_dir)
    if view.history:
        best = status.get("best_val_accuracy")
        last = view.history[-1]
        m1, m2, m3 = st.columns(3)
        m1.metric("Held-back photos named correctly", f"{best:.1%}" if best is not None else "—")
        threshold, note = (last.get("metrics") or {}).get("threshold"), ""
        gallery_file = run_dir / "gallery.json"
        if gallery_file.is_file():  # the saved model's: the best epoch's, or chosen again on the Runs page
            saved, note = _gallery_summary(str(gallery_file), gallery_file.stat().st_mtime)
            threshold = saved if saved is not None else threshold
        m2.metric("'Unknown' threshold", f"{threshold:.3f}" if threshold is not None else "—")
        m3.metric("Device", status.get("device", "?"))
        if hint := all_unknown_hint(best, (last.get("metrics") or {}).get("rank1"), state):
            st.info(hint, icon=":material/tips_and_updates:")
        if state == "completed" and note:  # how the threshold was chosen, when the photos alone could not say
            st.caption(esc(note))
        if len(view.history) > 1:
            left, right = st.columns(2)
            left.plotly_chart(epoch_curves(view.history, "loss", view.phases), key="faces_loss_chart")
            right.plotly_chart(epoch_curves(view.history, "accuracy", view.phases, label="named correctly",
                                           train_label="closest person right (rank-1)"),
                               key="faces_acc_chart")
    if len(view.losses) > 2 and any(v == v for v in view.losses):
        st.plotly_chart(batch_loss_figure(view.steps, view.losses, []), key="faces_batch_chart")
    for note in view.notices[-5:]:
        (st.error if note["type"] == "fit_failed" else st.caption)(note.get("message") or note.get("reason", ""))
    if state == "completed":
        st.page_link(step_page("test"), label="Next: identify faces →", icon=":material/science:")


# no st.stop() before a run exists: the sidebar is drawn again after the page, with the model chosen above
run_id = draft("run_id")
if not _faces_run(run_id):
    st.caption("Start with the face model: it is ready in seconds. Then fine-tune a backbone to compare.")
else:
    if differs := other_choices_note(runs_root() / run_id):
        st.info(differs, icon=":material/swap_horiz:")
    live(runs_root() / run_id)
