"""Train: settings with one-line explanations, a quick model in seconds, a full fine-tune in its own process,
live curves and progress read from the run folder (so a refresh or restart finds the run again)."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core import jobs, runs, trainset, zoo
from core.config import AUGMENTATIONS, AUTO_FIT, RunConfig, TrainConfig
from core.distributed import gpu_rows, lr_scale, multi_gpu_note, scaling_note
from core.lrfind import find_lr_isolated
from core.pipeline import FITS
from core.plots import batch_loss_figure, epoch_curves, extra_metrics_figure, lr_find_figure
from core.progress import read_run
from core.settings import runs_root
from core.tasks import get_task, run_name, train_defaults
from views.common import (
    KEPT_STORE,
    KEPT_WIDGETS,
    STORE_ID,
    count,
    current_task,
    dataset_label,
    device_plan,
    draft,
    draft_freeze,
    duration,
    esc,
    freeze_words,
    need_backbone,
    set_draft,
    step_page,
    train_images,
)


def _gone(dataset: str) -> bool:
    """Whether `dataset` names a stored dataset that is no longer on this machine (deleted on the Data page)."""
    from core.data.store import dataset_dir

    if not STORE_ID.fullmatch(dataset) or Path(dataset).exists():
        return False
    try:
        dataset_dir(dataset)
    except Exception:  # noqa: BLE001 - the store says it has no such dataset
        return True
    return False


def _photos(dataset: str, run_dir: Path | None = None) -> str:
    """Photos by their name for the page's sentences: the dataset's name, or for one deleted since, the name a run
    kept of it (its dataset.json) and that it is gone; never the store's hash."""
    if not _gone(dataset):
        return f"photos **{dataset_label(dataset)}**"
    name = ""
    if run_dir is not None:
        try:
            name = str((runs.load_dataset(run_dir).get("source") or {}).get("name") or "").strip()
        except (runs.RunError, OSError, ValueError, AttributeError):
            name = ""
    return f"photos **{esc(name[:60])}** (no longer on this machine)" if name else "photos no longer on this machine"


@st.cache_data(show_spinner=False, ttl=30, max_entries=16)
def _data_problem(task: str, dataset: str, seed: int, options: str, version: int) -> str | None:  # noqa: ARG001
    """Why the photos cannot be trained on (what Start would say), or None; checked again when the stored dataset
    changes (`version`: its manifest's stamp) and at least every 30 s."""
    try:
        get_task(task).resolve_data(dataset, seed, **json.loads(options))
    except trainset.DatasetProblem as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - a store error: said plainly, as Start says it
        return f"The dataset cannot be used: {err}"
    return None


def _blocked(dataset: str, seed: int) -> str | None:
    """Why the chosen photos cannot be trained on, or None: said before any button is pressed."""
    if _gone(dataset):
        return "The photos chosen are no longer on this machine: choose photos on the Data page."
    version = 0
    if STORE_ID.fullmatch(dataset):
        from core.data.store import manifest_stamp

        try:
            version = manifest_stamp(dataset)
        except Exception:  # noqa: BLE001 - gone meanwhile: resolving says so
            version = -1
    options = json.dumps(draft(f"{TASK.name}_options") or {}, sort_keys=True, default=str)
    return _data_problem(TASK.name, dataset, int(seed), options, version)

st.title("4 · Train")
backbone = need_backbone()
if backbone is None:
    st.stop()
dataset_id = draft("dataset_id")
if not dataset_id:
    st.info("Choose your photos first.")
    st.page_link(step_page("data"), label="Go to the Data page", icon=":material/photo_library:")
    st.stop()
freeze = draft_freeze()
TASK = get_task(current_task())
plan = device_plan()
_data_words = "photos no longer on this machine" if _gone(dataset_id) else f"data **{dataset_label(dataset_id)}**"
st.write(f"Model **{backbone}**, layers **{freeze_words(freeze.preset)}**, {_data_words}.")
st.caption(plan.note)
BLOCKED = _blocked(dataset_id, st.session_state.get("train_seed", train_defaults(TASK).seed))
if BLOCKED:  # said up front, with the buttons that would fail turned off
    st.error(esc(BLOCKED), icon=":material/block:")
    st.page_link(step_page("data"), label="Choose photos on the Data page" if _gone(dataset_id) else
                 "Fix the photos on the Data page", icon=":material/photo_library:")


def _use_lr(value: float) -> None:
    st.session_state["train_own_lr"] = True
    st.session_state["train_lr"] = float(f"{value:.2g}")


def _lr_finder(freeze, batch: int, seed: int) -> None:
    """A learning-rate range test in a separate process, with its plot and a one-click 'use it'."""
    if st.button("Find a learning rate", key="train_lr_find", icon=":material/search:", disabled=bool(BLOCKED),
                 help="Runs a few dozen short training steps with rising learning rates (about a minute).") \
            and not BLOCKED:
        with st.spinner("Trying learning rates…"):
            try:
                res = find_lr_isolated(backbone, dataset_id, freeze, TrainConfig(batch_size=batch, seed=seed))
            except (RuntimeError, TimeoutError) as err:
                st.error(f"The learning-rate finder failed: {err}")
                return
        st.session_state["lr_find"] = {**res.to_dict(), "for": [backbone, dataset_id, freeze.preset]}
    found = st.session_state.get("lr_find")
    if found and found["for"] == [backbone, dataset_id, freeze.preset] and found["lrs"]:
        st.plotly_chart(lr_find_figure(found["lrs"], found["losses"], found["smoothed"], found["suggestion"]),
                        key="train_lr_chart")
        st.caption(found["note"])
        st.button(f"Use {found['suggestion']:.2g}", key="train_lr_use", on_click=_use_lr,
                  args=(found["suggestion"],))


def _batch_sizes(defaults: TrainConfig) -> list[int]:
    """The batch sizes offered: up to 8× the task's default (detection trains 4 large photos a step, so 128 would
    only run out of memory), at most 128."""
    return sorted({b for b in (4, 8, 16, 32, 64, 128) if b <= 8 * defaults.batch_size} | {defaults.batch_size})


def _crop_shares(defaults: TrainConfig) -> list[float]:
    """The shares *Random crops keep at least* offers (the task's default among them)."""
    return sorted({0.08, 0.25, 0.5, 0.75, 1.0, defaults.crop_min_area})


def _crop_sizes(defaults: TrainConfig) -> list[int]:
    """The training crop sides a crop-size task (segmentation) offers (the task's default among them)."""
    return sorted({192, 224, 256, 288, 320, 352, 384, 448, 512, defaults.train_size or getattr(TASK, "full_crop", 352)})


def _widgets_for(train: TrainConfig) -> dict:
    """The settings widgets' values that show `train` (a run's settings); a value the widgets cannot show (a size
    or share set on the command line) is left out, so that widget keeps its default."""
    defaults = train_defaults(TASK)
    values: dict = {"train_epochs": train.epochs, "train_seed": train.seed, "train_own_lr": train.lr is not None,
                    "train_augment": [a for a in train.augment if a in AUGMENTATIONS]}
    if train.lr is not None:
        values["train_lr"] = float(train.lr)
    if train.batch_size in _batch_sizes(defaults):
        values["train_batch"] = train.batch_size
    options = getattr(TASK, "train_options", ("lr_finder", "class_weights"))
    if TASK.name == "classification":
        if train.crop_min_area in _crop_shares(defaults):
            values["train_crop_area"] = train.crop_min_area
        small = TASK.default_train_size(zoo.get_spec(backbone).input_size)
        if train.train_size in (0, small):
            values["train_small_crops"] = train.train_size == small
        if train.image_fit in FITS or train.image_fit == AUTO_FIT:
            values["train_image_fit"] = train.image_fit
    if "crop_size" in options and train.train_size in _crop_sizes(defaults):
        values["train_crop"] = train.train_size
    if 1 < train.nproc <= len(gpu_rows()):
        values["train_gpus"] = train.nproc
    return values


SEEDED = "train_settings_from_run"  # once per session: the settings were taken from the run the address named


def _settings_from_run() -> None:
    """A reload (F5) starts a new session: the settings would show the defaults while the run shown (named in the
    address) trains with its own. Before any setting is drawn in this session, take them from that run when it
    was trained on the model and photos chosen."""
    if st.session_state.get(SEEDED) or any(k in st.session_state for k in KEPT_WIDGETS) \
            or st.session_state.get(KEPT_STORE):
        return
    st.session_state[SEEDED] = True
    run_id = draft("run_id")
    config = runs.read_json_config(runs_root() / run_id) if run_id and runs.is_run_id(run_id) else {}
    if (config.get("task") or "classification") != TASK.name or config.get("quick") \
            or config.get("backbone") != backbone or config.get("dataset") != dataset_id:
        return
    try:
        train = TrainConfig.from_dict(config.get("train") or {})
    except (TypeError, ValueError):  # a damaged config.json: the defaults stay
        return
    values = _widgets_for(train)
    st.session_state.update(values)
    # kept as the user's own settings are: the browser reports only the widgets it drew, and it draws none inside
    # the closed Settings panel, so without this copy the next page left these values behind (back to defaults)
    st.session_state.setdefault(KEPT_STORE, {}).update(values)
    if "class_weights" in getattr(TASK, "train_options", ("lr_finder", "class_weights")) \
            and draft("class_weights") is None:
        set_draft("class_weights", train.class_weights)


def _settings() -> TrainConfig:
    defaults = train_defaults(TASK)
    # a key and tracked state keep the panel open across the reruns its own widgets cause (a message appearing above
    # it made the browser draw it anew, closed)
    with st.expander("Settings (the defaults work well)", expanded=False, key="train_settings_panel",
                     on_change="rerun"):
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs", 1, 500, value=defaults.epochs, key="train_epochs",
                                 help="How many times the model sees every training photo.")
        batches = _batch_sizes(defaults)
        batch = c2.select_slider("Batch size", batches, value=defaults.batch_size, key="train_batch",
                                 help=f"Photos per step. Smaller uses less memory; up to {batches[-1]} for this "
                                      "task (larger batches of its images would not fit in memory).")
        seed = c3.number_input("Seed", 0, 2**31 - 1, value=defaults.seed, key="train_seed",
                               help="The same seed and settings give the same model (on the CPU).")
        own_lr = st.checkbox("Set the learning rate myself", key="train_own_lr",
                             help=f"Default: {defaults.effective_lr(freeze):g} for this choice of layers.")
        lr = None
        if own_lr:
            st.session_state.setdefault("train_lr", defaults.effective_lr(freeze))
            lr = st.number_input("Learning rate", 1e-6, 5.0, format="%.5f", key="train_lr",
                                 help="How big each learning step is. Too high: the loss explodes.")
        options = getattr(TASK, "train_options", ("lr_finder", "class_weights"))
        if "lr_finder" in options:
            _lr_finder(freeze, int(batch), int(seed))
        augment = st.multiselect("Augmentations", list(AUGMENTATIONS), default=list(defaults.augment),
                                 key="train_augment", help="Random changes that make the model robust.")
        for name in augment:
            st.caption(f"• {name}: {AUGMENTATIONS[name]}")
        train_size, image_fit, crop_min_area = 0, None, None
        if TASK.name == "classification":
            if "crop" in augment:
                shares = _crop_shares(defaults)
                crop_min_area = float(st.select_slider(
                    "Random crops keep at least", shares, value=defaults.crop_min_area, key="train_crop_area",
                    format_func=lambda v: f"{v:.0%} of the photo",
                    help="How far the random crop may zoom in. Smaller shares show the model more varied close-ups; "
                         f"larger ones keep more of each photo. {defaults.crop_min_area:.0%} is the measured "
                         "default."))
            full = zoo.get_spec(backbone).input_size
            small = TASK.default_train_size(full)
            if st.checkbox(f"Faster epochs: train on {small}×{small} crops", key="train_small_crops", value=True,
                           help=f"About half the time per epoch. Validation and predictions keep {full}×{full}; "
                                "models trained on smaller crops usually do as well at the full size."):
                train_size = small
            labels = {**FITS, AUTO_FIT: "Let the app choose from your photos (a quick check when training starts)"}
            fits = list(labels)
            image_fit = st.radio("How photos become squares", fits, index=fits.index(defaults.image_fit),
                                 format_func=labels.get, key="train_image_fit",
                                 help="The model sees square images. Cropping zooms in on the middle and cuts "
                                      "the ends off tall or wide photos (a dress's hem, a shoe's toe); the other "
                                      "two keep the whole photo. In longer runs whole photos won on product-style "
                                      "photos that fill the frame (clothing: +2 points; with the default 5 epochs "
                                      "the two tie), cropping on subjects in the middle (insects: +1.5 points). "
                                      "Letting the app choose compares cropping with borders on your training "
                                      "photos before the first epoch (seconds to a minute) and keeps cropping "
                                      "unless borders are clearly better. Predictions use the same choice.")
        if "crop_size" in options:
            full = getattr(TASK, "full_crop", 352)
            sizes = _crop_sizes(defaults)
            train_size = int(st.select_slider(
                "Training crop (pixels)", sizes, value=defaults.train_size or full, key="train_crop",
                help=f"Side of the random crops the model trains on; validation and predictions use whole images. "
                     f"Smaller crops make each epoch faster; {defaults.train_size or full} is the measured default."))
        weights = None  # the task's default
        if "class_weights" in options:
            chosen = draft("class_weights")  # set on the Data page (classification), else the task's default
            weights = st.checkbox("Balance classes (weight the loss)",
                                  value=defaults.class_weights if chosen is None else bool(chosen),
                                  key="train_class_weights",  # kept as the task's draft: it lasts page visits
                                  on_change=lambda: set_draft("class_weights",
                                                              st.session_state["train_class_weights"]),
                                  help="Rare classes count as much as common ones in the loss. Helps when some "
                                       "classes have far fewer photos (or pixels)." +
                                       (" On by default: it is what the measured default recipe uses."
                                        if defaults.class_weights else ""))
        nproc = _gpus(defaults, int(batch), lr)
    return defaults.with_choices(epochs=int(epochs), batch_size=int(batch), lr=lr, seed=int(seed),
                                 augment=tuple(augment), class_weights=weights, nproc=nproc, train_size=train_size,
                                 image_fit=image_fit, crop_min_area=crop_min_area)


def _gpus(defaults: TrainConfig, batch: int, lr: float | None) -> int:
    """Several GPUs (DDP, one process each) when the machine has them and the task can use them; else one line."""
    rows = gpu_rows()
    if len(rows) < 2 or TASK.name != "classification":
        st.caption(multi_gpu_note(rows) if TASK.name == "classification" or len(rows) < 2 else
                   f"{TASK.title} trains on one GPU.")
        return 1
    st.dataframe(rows, hide_index=True, key="train_gpu_table")
    n = st.slider("GPUs to use", 1, len(rows), value=len(rows), key="train_gpus",
                  help="One training process per GPU (PyTorch DistributedDataParallel).")
    if n > 1:
        base = lr if lr is not None else defaults.effective_lr(freeze)
        st.caption(scaling_note(n, batch, defaults.optimizer, base * lr_scale(n, defaults.optimizer)))
    return int(n)


def _start(quick: bool, train: TrainConfig) -> None:
    try:
        # a task's own model choices made on its pages (e.g. segmentation's architecture) go with the manifest
        manifest = TASK.resolve_data(dataset_id, train.seed, **(draft(f"{TASK.name}_options") or {}))
    except trainset.DatasetProblem as err:
        st.error(str(err))
        return
    except Exception as err:  # a store error: say it plainly
        st.error(f"The dataset cannot be used: {err}")
        return
    config = RunConfig(backbone, dataset_id, freeze, train, quick=quick, task=TASK.name,
                       name=run_name(TASK.name, backbone, manifest, dataset_id, quick))  # told apart at a glance
    run_dir = runs.create_run(config, manifest)
    jobs.start(run_dir)
    set_draft("run_id", run_dir.name)


_settings_from_run()
train = _settings()


def _time_note(train: TrainConfig) -> str | None:
    """How long the run will take, when the Layers page measured this choice on this machine (a cached estimate:
    nothing is measured here), else None."""
    if TASK.name != "classification":
        return None
    from core.measure import cached_estimate

    est = cached_estimate(backbone, freeze, train.batch_size, train_images(dataset_id), train_size=train.train_size,
                          plan=plan)
    if est is None:
        return None
    per_epoch = est.seconds_per_step * -(-est.n_images // train.batch_size)  # unrounded, as the Layers page shows it
    return (f"About {duration(per_epoch * train.epochs)} for {count(train.epochs, 'epoch')} on this "
            f"machine: {duration(per_epoch)} per epoch with these layers training, as measured on the "
            "Layers page (a head-only first epoch is quicker; starting the training process, reading the photos "
            "the first time and checking the validation photos add some seconds).")


if (_eta := _time_note(train)) is not None:
    st.caption(_eta)


def _twin_note(quick: bool) -> str | None:
    """Why Start would only repeat a run that is queued or training with these very choices, or None."""
    extras = {"model": {"arch": (draft(f"{TASK.name}_options") or {}).get("arch", TASK.default_arch)}} \
        if TASK.name == "segmentation" else None  # the architecture lives in the run's manifest
    twin = jobs.active_twin(RunConfig(backbone, dataset_id, freeze, train, quick=quick, task=TASK.name), extras)
    if twin is None:
        return None
    shown = " (shown below)" if draft("run_id") == twin.name else " (pick it under *Other runs* to watch it)"
    return (f"'{runs.display_name(twin)}' is already training with these very choices{shown}. Change a choice to "
            "queue another run, or stop that one first.")


_fix_first = "The photos cannot be trained on yet: see above." if BLOCKED else None
_twins = {quick: _twin_note(quick) for quick in ((True, False) if TASK.has_quick else (False,))}
c1, c2 = st.columns(2) if TASK.has_quick else (None, st.container())  # one button: no empty column beside it
if TASK.has_quick and c1.button("Quick model (seconds)", key="train_quick", icon=":material/bolt:",
                                disabled=bool(BLOCKED or _twins[True]), help=_fix_first or _twins[True] or
                                "Trains only a new head on features of the frozen model: a baseline in seconds.") \
        and not (BLOCKED or _twins[True]):
    _start(True, train)
if c2.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:",
             disabled=bool(BLOCKED or _twins[False]), help=_fix_first or _twins[False]) \
        and not (BLOCKED or _twins[False]):  # a second click sent before the page redrew the button disabled
    _start(False, train)
if _twins[False] and not BLOCKED:
    st.caption(_twins[False])

run_id = draft("run_id")
if not run_id:  # a new session or another task: this task's running job, else its latest run on these photos
    mine = runs.list_runs(task=TASK.name)
    active = [p for p in mine if runs.read_status(p).get("state") in runs.ACTIVE_STATES]
    here = [p for p in mine if runs.read_json_config(p).get("dataset") == dataset_id]
    if active or here:
        run_id = (active or here)[0].name
        set_draft("run_id", run_id)
if not run_id:
    if TASK.has_quick:  # the other tasks have no quick model to start with
        st.caption("Start with the quick model to see how far the pretrained features alone get you.")
    st.stop()

RUN_DIR = runs_root() / run_id


def _other_choice_note(run_config: dict) -> str | None:
    """Why the run shown is not what the choices above would train (other photos or model), or None."""
    theirs = []
    if run_config.get("dataset") and run_config["dataset"] != dataset_id:
        theirs.append(_photos(run_config["dataset"], RUN_DIR))
    if run_config.get("backbone") and run_config["backbone"] != backbone:
        theirs.append(f"model **{run_config['backbone']}**")
    if not theirs:
        return None
    return (f"The run below was trained on other choices ({' and '.join(theirs)}) than the ones above. Press a "
            "button above to train on your choices, or pick another run under *Other runs*.")


_differs = _other_choice_note(runs.read_json_config(RUN_DIR))
if _differs:
    st.info(_differs, icon=":material/swap_horiz:")


STOP_PATIENCE = 20.0  # seconds a stop may take before Cancel is offered again (preparing images, a long validation)
JOB_ERROR = "train_job_error"  # a Stop, Cancel or Resume the job refused, said on the next draw


def _job(action) -> None:
    """A control's click, done before the live view draws (so the view shows its effect at once, not the state
    from before the click)."""
    try:
        action(RUN_DIR)
    except (runs.RunError, OSError) as err:
        st.session_state[JOB_ERROR] = str(err)


def _status(view, resumable: bool) -> None:
    """The run's state in one line or box."""
    status, state = view.status, view.state
    if state == "queued":
        pos = view.queue_position
        waiting = "Waiting" in status.get("message", "")
        st.info(f"Waiting for the running job to finish (position {pos} in the queue)." if waiting and pos
                else status.get("message") or "Starting…")
    elif state in ("running", "stopping"):
        progress = float(status.get("progress") or 0.0)
        st.progress(min(1.0, progress), text=view.progress_line())
    elif state == "completed":
        st.success(status.get("message", "Finished."))
        total = jobs.seconds_since_start(RUN_DIR, float(status.get("ended") or 0)) if status.get("ended") else None
        if view.config.get("quick") and total is not None:
            st.caption(f"{total:.1f} s from the click to the answer, starting the training process included.")
        st.page_link(step_page("test"), label="Next: test it on new photos", icon=":material/science:")
    elif state == "stopped":
        st.warning(view.stopped_line())
    elif state in ("failed", "crashed"):
        st.error(status.get("message", "Training failed."))
    elif state == "cancelled":
        st.warning("Cancelled. The last saved checkpoint is kept." if resumable else
                   "Cancelled before its first checkpoint: it would start from the beginning." if view.started else
                   "Cancelled before it started: nothing was trained.")
    elif state == "created":
        st.info(status.get("message") or "Ready to train.")


def _controls(view, resumable: bool) -> None:
    """Stop and Cancel while it trains; a stop asked for shows as stopping (Cancel again only when it takes long);
    Resume once it has ended early. Each column always holds one element, so a button never lingers on screen
    after the state changed (the browser keeps a fragment's old elements when a run of it is cut short)."""
    state = view.state
    slots = [col.empty() for col in st.columns(3)]
    if state in ("running", "queued"):
        slots[0].button("Stop", key="train_stop", icon=":material/stop:", on_click=_job, args=(jobs.stop,),
                        help="Finishes the current batch (and validates the epoch if that batch ended it), saves, "
                             "and stops. You can resume later.")
        slots[1].button("Cancel now", key="train_cancel", icon=":material/cancel:", on_click=_job,
                        args=(jobs.cancel,), help="Ends the training process now. The last saved checkpoint is kept.")
    elif state == "stopping":
        slots[0].button("Stopping…", key="train_stopping", icon=":material/hourglass_top:", disabled=True,
                        help="The run saves where it is and stops; you can resume it then.")
        if view.stop_waited() > STOP_PATIENCE:
            slots[1].button("Cancel now", key="train_cancel", icon=":material/cancel:", on_click=_job,
                            args=(jobs.cancel,),
                            help="The stop is taking long: this ends the training process now instead. The last "
                                 "saved checkpoint is kept.")
    elif state in ("stopped", "crashed", "cancelled", "failed") and not view.config.get("quick"):
        slots[0].button("Resume" if resumable else "Start it", key="train_resume", icon=":material/play_arrow:",
                        on_click=_job, args=(jobs.start,),
                        help="Continues from the last complete checkpoint to the planned end." if resumable else
                        "Trains this run with its settings from the beginning.")


def quick_scores(entry: dict) -> list[dict]:
    """A quick model's scores on the training and the validation photos (its one history entry), as table rows."""
    def pct(v: object) -> str:
        return f"{float(v):.1%}" if isinstance(v, int | float) else "—"

    def num(v: object) -> str:
        return f"{float(v):.3f}" if isinstance(v, int | float) else "—"

    return [{"photos": split, "accuracy": pct(entry.get(f"{key}_accuracy")), "loss": num(entry.get(f"{key}_loss"))}
            for split, key in (("training", "train"), ("validation", "val"))]


@st.fragment(run_every=1.0)
def live() -> None:
    """Re-read the run folder every second; nothing here holds training state."""
    if not (RUN_DIR / "config.json").exists():
        st.warning("This run no longer exists.")
        return
    view = read_run(RUN_DIR)
    status = view.status
    resumable = (RUN_DIR / "checkpoints" / "last.pt").exists()  # something to resume from
    st.subheader(runs.display_name(RUN_DIR))
    with st.container():  # one element whatever the state: what follows keeps its place on the page
        _status(view, resumable)
        refused = st.session_state.pop(JOB_ERROR, None)
        if refused:
            st.error(esc(refused))
    _controls(view, resumable)

    if view.history:
        best = status.get("best_val_accuracy")
        label = status.get("metric_label") or (view.started or {}).get("metric_label") or "validation accuracy"
        last = view.history[-1]
        m1, m2, m3 = st.columns(3)
        metric = status.get("metric") or (view.started or {}).get("metric") or "val_accuracy"
        shown_best = "—" if best is None else f"{best:.1%}" if metric == "val_accuracy" else f"{best:.3f}"
        m1.metric(f"Best {label}", shown_best)  # mAP and IoU as the Results tab writes them (0.734, not 73.4 %)
        if view.config.get("quick"):  # one pass over cached features, not epochs
            m2.metric("Kind", "Quick model", help="A new head on features of the frozen model.")
        else:
            m2.metric("Epochs done", f"{last['epoch']} / {view.config.get('train', {}).get('epochs', '?')}")
        m3.metric("Device", f"{status.get('device', '?')} ({status.get('precision', '?')})")
        if view.config.get("quick"):  # one fit, one point: two charts of a lone dot on "epoch 1" said nothing
            st.dataframe(quick_scores(last), hide_index=True, key="train_quick_table")
        else:
            left, right = st.columns(2)
            left.plotly_chart(epoch_curves(view.history, "loss", view.phases), key="train_loss_chart")
            right.plotly_chart(epoch_curves(view.history, "accuracy", view.phases,
                                            label="" if metric == "val_accuracy" else label),
                               key="train_acc_chart")
        if any(h.get("metrics") for h in view.history):
            st.plotly_chart(extra_metrics_figure(view.history), key="train_metrics_chart")
    if view.losses:
        st.plotly_chart(batch_loss_figure(view.steps, view.losses,
                                          [{"step": p["step"], "label": p["label"]} for p in view.phases]),
                        key="train_batch_chart")
    for note in view.notices[-5:]:
        text = note.get("message") or note.get("reason", "")
        (st.error if note["type"] == "fit_failed" else st.caption)(text)


live()

with st.expander("Other runs"):
    recent = runs.list_runs(task=TASK.name)[:20]
    options = [p.name for p in recent]
    # no state in the label: this part of the page is drawn once, so a state here would go stale (a finished
    # run still said "queued")
    labels = {p.name: f"{runs.display_name(p)} ({p.name})" for p in recent}
    if options:
        picked = st.selectbox("Show run", options, index=options.index(run_id) if run_id in options else 0,
                              format_func=lambda n: labels.get(n, n), key="train_pick_run")
        if picked != run_id and st.button("Show", key="train_show_run"):
            set_draft("run_id", picked)
            st.rerun()
