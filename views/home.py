"""Home: the steps with their status for this session, and a one-click sample-data path for first-time users."""

import json

import streamlit as st

from core.config import DEFAULT_BACKBONE
from core.settings import runs_root, sample_data_root
from core.tasks import freeze_defaults, get_task
from views.common import choose_task, draft, set_draft, step_page

st.title("Transfer Studio")
st.write("Teach a pretrained image model your own classes, without programming. "
         "Follow the steps; each page tells you what it needs.")

task_name = choose_task("home_task")
task = get_task(task_name)
has_sample = task_name == "classification" or hasattr(task, "ensure_sample")
if st.button("Try it with sample data", key="home_try_sample", type="primary", icon=":material/auto_awesome:",
             disabled=not has_sample,
             help="Chooses MobileNetV2 and a built-in sample set for the chosen task (for image classification: "
                  "textures — brick, grass, gravel — with the recommended training: head first, then the rest)."):
    with st.spinner("Preparing the sample photos (once)…"):
        if hasattr(task, "ensure_sample"):  # a task's own sample set (detection shapes, segmentation masks...)
            sample_id = task.ensure_sample()
        else:
            from core.data.samples import ensure_sample_dataset

            sample_id = ensure_sample_dataset("textures")
    set_draft("task", task_name)
    set_draft("backbone", DEFAULT_BACKBONE)
    set_draft("dataset_id", sample_id)
    set_draft("freeze", json.dumps(freeze_defaults(task).to_dict()))
    st.switch_page(step_page("layers"))
if not has_sample:
    st.caption(f"There is no built-in sample for {task.title}: photos of people need their consent, and no "
               "package ships a licence-clean set. Bring one folder of photos per person on the Data step.")

samples_ready = (sample_data_root() / "textures").is_dir()
if not samples_ready:
    st.warning("The sample data is not there yet: run the setup command from the README once.")

DATA_STEP = {  # what the Data step asks of each task's user
    "classification": "Bring folders of photos, one per class.",
    "detection": "Bring photos with boxes (COCO, VOC or YOLO files), or draw the boxes here.",
    "segmentation": "Bring photos with their masks (one colour or number per class).",
    "faces": "Bring one folder of photos per person to enrol.",
}
STEP_WORDS = {  # the steps in each task's own words, where the generic ones do not fit
    "detection": {"layers": "Choose which layers of the detector train.", "test": "Find the objects in new photos."},
    "segmentation": {"layers": "Pick the architecture and which layers train.", "test": "Colour new photos by class."},
    "faces": {"model": "The frozen face model needs none; pick a backbone only to fine-tune one.",
              "layers": "Only for a fine-tune: which layers of the backbone train.",
              "train": "Enrol the people: the face model in seconds, or a fine-tune, live.",
              "test": "Name the people in new photos, or answer 'unknown'; compare two photos."},
}
WORDS = {"model": "Pick a pretrained backbone.", "layers": "Choose which layers to freeze.",
         "train": "Watch it learn, live.", "test": "Try it on new pictures.", **STEP_WORDS.get(task_name, {})}
STEPS = [
    ("1 · Model", WORDS["model"], step_page("model"), bool(draft("backbone"))),
    ("2 · Data", DATA_STEP.get(task_name, task.description), step_page("data"), bool(draft("dataset_id"))),
    # done once the choice differs from the task's default (which the sample and a task switch set) or a run used it
    ("3 · Layers", WORDS["layers"], step_page("layers"),
     draft("freeze") not in (None, json.dumps(freeze_defaults(task).to_dict())) or bool(draft("run_id"))),
    ("4 · Train", WORDS["train"], step_page("train"), bool(draft("run_id"))),
    ("5 · Test", WORDS["test"], step_page("test"), False),
    ("6 · Runs & export", "Results, comparison, export and a report.", step_page("runs"), False),
]


def train_step_label(run_id: str | None) -> str | None:
    """The Train step's link as the current run stands: done only when it finished; else where it is and what to
    do next (a run stopped or cancelled part-way said "done ✓"). None when there is no run to show."""
    from core import jobs, runs

    run_dir = runs_root() / str(run_id or "")
    if not run_id or not runs.is_run_id(run_id) or not (run_dir / "config.json").is_file():
        return None
    status = jobs.state(run_dir)  # a worker that died shows as crashed
    state = status.get("state", "created")
    if state in ("queued", "running") and runs.stop_requested(run_dir):  # the worker's updates still say running
        state = "stopping"
    config = runs.read_json_config(run_dir)
    quick = bool(config.get("quick"))
    epochs = status.get("epochs") or (config.get("train") or {}).get("epochs")
    done = int(status.get("epochs_done") or 0)
    of = f" of {epochs}" if epochs and not quick else ""
    if state in ("completed", "created"):  # created: set up and about to start, as Start makes it
        return "done ✓ — see the run"
    if state == "queued":
        return "waiting to train — see the run"
    if state == "running":
        return f"training epoch {done + 1}{of} — watch it" if of else "training — watch it"
    if state == "stopping":
        return "stopping — see the run"
    if state in ("failed", "crashed"):
        return ("failed" if state == "failed" else "stopped unexpectedly") + " — see why"
    resumable = not quick and (run_dir / "checkpoints" / "last.pt").exists()
    next_step = "resume or start again" if resumable else "start again"
    if quick:
        return f"{state} — {next_step}"
    if done:
        return f"{state} after epoch {done}{of} — {next_step}"
    return f"{state} in epoch 1{of} — {next_step}" if resumable else f"{state} before its first epoch — {next_step}"


DONE_LABELS = {"4 · Train": train_step_label(draft("run_id")) or "open →"}  # a run is looked at, not changed
for title, what, page, done in STEPS:
    cols = st.columns([1, 4, 2])
    cols[0].markdown(f"**{title}**")
    cols[1].write(what)
    if page is None:
        cols[2].caption("coming soon")
    else:
        cols[2].page_link(page, label=DONE_LABELS.get(title, "done ✓ — change") if done else "open →")
