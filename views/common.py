"""Small helpers shared by the pages: the session draft (ids and small values only) and cached core calls."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw

from core.config import FreezeConfig
from core.data.images import phone_formats
from core.device import DevicePlan, plan_device

# iPhone photos (HEIC) open anywhere in the app's process, st.image included (it re-encodes what it shows with
# Pillow): registered once per process, as every page imports this module
phone_formats()

STORE_ID = re.compile(r"[0-9a-f]{32}")  # how a dataset of the app's store is named (else a folder or sample:NAME)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=^\"'%@/])")


@functools.lru_cache(maxsize=1)
def app_icon() -> Image.Image:
    """The browser tab's icon, drawn here: a material icon name makes the browser fetch it from Google's servers,
    which fails offline (and this app promises to need no network)."""
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    pen = ImageDraw.Draw(img)
    pen.rounded_rectangle((0, 0, 63, 63), radius=14, fill=(31, 111, 235, 255))
    left, right = [(18, 18), (18, 46)], [(46, 14), (46, 32), (46, 50)]  # a tiny two-layer network
    for a in left:
        for b in right:
            pen.line((a, b), fill=(255, 255, 255, 170), width=3)
    for x, y in left + right:
        pen.ellipse((x - 6, y - 6, x + 6, y + 6), fill=(255, 255, 255, 255))
    return img


def download_stem(name: str, run_id: str) -> str:
    """A download's file name: the run's name in plain letters, then its id's tail (names need not be unique)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-")
    return f"{slug}-{run_id[-6:]}" if slug and slug != run_id else run_id


def count(n: int, word: str, plural: str | None = None) -> str:
    """'1 box', '3 boxes', '0 boxes'."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def session_memo(name: str) -> dict:
    """A per-session store of small computed values (answers, boxes) under `name`: a rerun (a slider moved, a
    toggle) reuses them instead of running the model on every photo again. Images belong in st.cache_data."""
    return st.session_state.setdefault(name, {})


def memo_put(store: dict, key: tuple, value: object, limit: int) -> None:
    """Keep `value` under `key` in a `session_memo` store, dropping the oldest past `limit` entries."""
    store[key] = value
    while len(store) > limit:
        store.pop(next(iter(store)))


def duration(seconds: float) -> str:
    """A length of time for people: "< 1 s", "7.3 s", "40 s", "2 min" (from 90 s), "1 h 10 min"; the Layers page's
    time per epoch and the Train page's estimate say it alike."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def esc(text: object) -> str:
    """User text made inert for st.markdown & co.: Markdown, HTML, LaTeX ($) and :directives: are escaped."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def draft(key: str, default=None):
    """A value of the user's draft (kept in st.session_state under a non-widget key, so it survives page switches)."""
    return st.session_state.get(f"draft_{key}", default)


def set_draft(key: str, value) -> None:
    st.session_state[f"draft_{key}"] = value
    if key in URL_DRAFTS:
        draft_to_url()


URL_DRAFTS = ("task", "backbone", "dataset_id", "run_id", "freeze")  # also kept in the page's address: a reload
#                                                                     keeps them


def draft_to_url() -> None:
    """Write the draft's ids into the page's address (left out when not chosen), so a reload (F5) or a bookmark
    of this tab comes back to the same choices while other tabs keep their own."""
    want = {k: str(v) for k in URL_DRAFTS if (v := draft(k))}
    if "freeze" in want:
        want["freeze"] = _freeze_for_url(want["freeze"])
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)


def _freeze_for_url(raw: str) -> str:
    """The layer choice in the address: only what differs from FreezeConfig's defaults (e.g. {"preset":"all"})."""
    defaults = {k: json.dumps(v) for k, v in FreezeConfig().to_dict().items()}
    chosen = json.loads(raw)
    return json.dumps({k: v for k, v in chosen.items() if k == "preset" or json.dumps(v) != defaults.get(k)},
                      separators=(",", ":"))


def _freeze_from_url(value: str) -> str | None:
    """A layer choice read from the address, checked (a known preset with values of the right kinds), as the
    draft's JSON; None when it is not one. A per-group choice keeps its group names as text: the Layers page offers
    only the chosen model's groups, so a name another model has is dropped there."""
    try:
        data = json.loads(value)
        kinds = {"preset": str, "train_bn": bool, "head_epochs": int, "lr_floor": (int, float), "keep_frozen": int,
                 "groups": list}
        if not isinstance(data, dict) or set(data) - set(kinds):
            return None
        groups = data.get("groups", [])
        if not isinstance(groups, list) or len(groups) > 200 or not all(
                isinstance(g, str) and 0 < len(g) <= 200 for g in groups):
            return None
        if not all(isinstance(v, kinds[k]) and not (kinds[k] is int and isinstance(v, bool)) for k, v in data.items()):
            return None
        freeze = FreezeConfig.from_dict(data)
    except (ValueError, TypeError):
        return None
    return json.dumps(freeze.to_dict()) if 0 <= freeze.head_epochs <= 100 and freeze.keep_frozen <= 50 else None


def restore_draft_from_url() -> None:
    """Once per session: the ids in the page's address, each checked (a known task, model, dataset of that task,
    run), become the draft; anything else there is ignored."""
    if st.session_state.get("draft_restored"):
        return
    st.session_state["draft_restored"] = True
    params = st.query_params.to_dict()
    for key in URL_DRAFTS:
        value = params.get(key)
        if key == "freeze":
            value = _freeze_from_url(value) if value else None
            if value and "draft_freeze" not in st.session_state:
                st.session_state["draft_freeze"] = value
        elif value and f"draft_{key}" not in st.session_state and _valid_draft(key, value, params.get("task")):
            st.session_state[f"draft_{key}"] = value


def _valid_draft(key: str, value: str, task: str | None) -> bool:
    from core.tasks import list_tasks

    task = task or "classification"
    if key == "task":
        return any(t.name == value and t.available for t in list_tasks())
    if key == "backbone":
        from core import zoo

        return any(s.name == value for s in zoo.list_backbones())
    if key == "dataset_id":
        from core.data.store import load_dataset

        try:
            return load_dataset(value).task == task
        except Exception:  # noqa: BLE001 - not a stored dataset (removed meanwhile, or made up): not restored
            return False
    from core import runs
    from core.settings import runs_root

    if not runs.is_run_id(value) or not (runs_root() / value).is_dir():
        return False
    try:
        return runs.load_config(runs_root() / value).task == task
    except Exception:  # noqa: BLE001 - a damaged run folder: not restored
        return False


VIEWS = Path(__file__).resolve().parent


def current_task() -> str:
    """The task the user chose (Home or Model page); classification until then."""
    return draft("task") or "classification"


def page_file(step: str, task: str) -> str:
    """`views/<task>_<step>.py` when the task has its own view of that step, else the shared `views/<step>.py`."""
    own = VIEWS / f"{task}_{step}.py"
    return f"views/{own.name}" if task != "classification" and own.is_file() else f"views/{step}.py"


def step_page(step: str) -> str:
    """The page file of a step for the current task (for st.page_link / st.switch_page)."""
    return page_file(step, current_task())


# The Train pages' settings (widget keys): Streamlit forgets a widget's value as soon as a page without it runs, so
# a visit to another page reset them to the defaults (a user's 2 epochs became 5 without a word)
KEPT_WIDGETS = ("train_epochs", "train_batch", "train_seed", "train_own_lr", "train_lr", "train_augment",
                "train_crop_area", "train_small_crops", "train_image_fit", "train_crop", "train_gpus",
                "train_settings_panel", "faces_path", "faces_gallery", "faces_far", "faces_epochs")


KEPT_STORE = "kept_widget_values"  # a plain session value: Streamlit never cleans it up


def keep_widget_values() -> None:
    """Called on every page (app.py): each kept widget's value is copied into a plain session value and written back
    to the widget's key, so it lasts the session. The copy matters: a fragment that reruns on a timer (the Train
    page's live view) drops widget keys of another page when it fires after the user has left (Streamlit issue
    10805), and the value comes back from the copy."""
    kept = st.session_state.setdefault(KEPT_STORE, {})
    for key in KEPT_WIDGETS:
        if key in st.session_state:
            kept[key] = st.session_state[key]
        if key in kept:
            st.session_state[key] = kept[key]


def forget_widget_values() -> None:
    """Back to the defaults (another task has other defaults)."""
    for key in KEPT_WIDGETS:
        st.session_state.pop(key, None)
    st.session_state.pop(KEPT_STORE, None)


TASK_DRAFTS = ("dataset_id", "run_id", "freeze", "class_weights")  # what belongs to a task (kept per task)


def choose_task(key: str) -> str:
    """A task picker (available tasks only). The chosen data, run and layer choice belong to a task: switching keeps
    them for the task left and brings back the new task's own (checked: still there, still of that task)."""
    from core.tasks import list_tasks

    rows = list_tasks()
    available = [t.name for t in rows if t.available]
    titles = {t.name: t.title for t in rows}
    current = current_task() if current_task() in available else "classification"

    def changed() -> None:
        new = st.session_state[key]
        if new and new != current_task():
            from core.tasks import freeze_defaults, get_task

            # the data, run and layer choice belong to a task: kept for it, and the new task's own come back
            stash = st.session_state.setdefault("task_drafts", {})
            stash[current_task()] = {k: draft(k) for k in TASK_DRAFTS}
            saved = stash.get(new, {})
            set_draft("task", new)
            for k in ("dataset_id", "run_id"):
                value = saved.get(k)
                set_draft(k, value if value and _valid_draft(k, value, new) else None)
            if saved.get("class_weights") is not None:
                set_draft("class_weights", saved["class_weights"])
            else:
                st.session_state.pop("draft_class_weights", None)  # chosen for the old task's data
            forget_widget_values()
            # else the task's own default of what trains (e.g. segmentation: everything)
            set_draft("freeze", saved.get("freeze") or json.dumps(freeze_defaults(get_task(new)).to_dict()))

    if st.session_state.get(key) not in (None, current):  # chosen elsewhere meanwhile (the other page's picker)
        st.session_state[key] = current
    default = None if key in st.session_state else current  # (a default beside a state value draws a warning)
    choice = st.segmented_control("What should the model learn?", available, default=default, key=key,
                                  format_func=lambda n: titles.get(n, n), on_change=changed)
    chosen = choice or current
    st.caption(next(t.description for t in rows if t.name == chosen))
    coming = [t.title for t in rows if not t.available]
    if coming:
        st.caption("Coming later: " + ", ".join(coming) + ".")
    return chosen


def draft_freeze() -> FreezeConfig:
    """The freeze choice of this session's draft, else the current task's default."""
    raw = draft("freeze")
    if raw:
        return FreezeConfig.from_dict(json.loads(raw))
    from core.tasks import freeze_defaults, get_task

    return freeze_defaults(get_task(current_task()))


@st.cache_resource(show_spinner=False)
def device_plan() -> DevicePlan:
    return plan_device()


@st.cache_data(show_spinner=False)
def cached_group_rows(name: str, freeze_json: str, num_classes: int) -> list[dict]:
    from core.catalog import group_rows

    return group_rows(name, FreezeConfig.from_dict(json.loads(freeze_json)), num_classes=num_classes)


def sidebar_status(slot) -> None:
    """The device note and the current draft, written into `slot` (an st.sidebar.empty()), replacing what the
    slot showed before."""
    plan = device_plan()
    with slot.container():
        st.caption((":material/memory: " if plan.device == "cuda" else ":material/computer: ") + plan.note)
        from core.tasks import list_tasks

        titles = {t.name: t.title for t in list_tasks()}
        st.caption(f"Task: **{titles.get(current_task(), current_task())}**")
        backbone = draft("backbone")
        face_model = (draft("faces_model") or _default_face_model()) if current_task() == "faces" else None
        if face_model:
            from core.tasks.faces.embed import is_face_model

            frozen_faces = is_face_model(face_model)  # the Faces Train page's frozen face model was chosen
        else:
            frozen_faces = False
        if frozen_faces:
            st.caption(f"Model: **{face_model}** (face model, frozen)")
        else:
            st.caption(f"Model: **{backbone}**" if backbone else "Model: not chosen yet")
        dataset_id = draft("dataset_id")
        st.caption(f"Data: **{dataset_label(dataset_id)}**" if dataset_id else "Data: not chosen yet")
        if not frozen_faces:  # a frozen face model has no layers to choose
            st.caption(f"Layers: **{freeze_words(draft_freeze().preset)}**")
        run_id = draft("run_id")
        if run_id:
            other = _other_task_of(run_id)  # a run of another task is named with it, never passed off as this one's
            st.caption(f"Run: **{run_label(run_id)}**" + (f" ({other})" if other else ""))


def _default_face_model() -> str:
    """The model the Faces Train page starts with (the frozen face model), named before that page is visited."""
    from core.tasks import get_task

    return str(get_task("faces").default_model)


def _other_task_of(run_id: str) -> str | None:
    """The title of the run's task when it is not the current task, else None (also for a run that is gone)."""
    from core import runs
    from core.settings import runs_root
    from core.tasks import TITLES

    run_dir = runs_root() / run_id
    if not runs.is_run_id(run_id) or not (run_dir / "config.json").is_file():
        return None
    task = runs.run_task(run_dir)
    return TITLES.get(task, task) if task != current_task() else None


def run_label(run_id: str) -> str:
    """A run's name for display (as the user last gave it), escaped; the id when the run is gone."""
    from core import runs
    from core.settings import runs_root

    run_dir = runs_root() / run_id
    return esc(runs.display_name(run_dir) if runs.is_run_id(run_id) and run_dir.is_dir() else run_id)


@st.cache_data(show_spinner=False, ttl=30)
def dataset_label(dataset_id: str) -> str:
    """The dataset's name for display, escaped for markdown."""
    from core.data.store import load_dataset

    try:
        name = load_dataset(dataset_id).name
    except Exception:  # a removed dataset (its id is a hash, meaningless to a user) or a folder path
        if STORE_ID.fullmatch(dataset_id):
            return "(deleted photos)"
        return esc(Path(dataset_id).name or dataset_id)
    return esc(name[:60])


def need_backbone() -> str | None:
    """The chosen backbone, or a friendly pointer to the Model page (returns None)."""
    name = draft("backbone")
    if not name:
        st.info("Choose a model first.")
        st.page_link(step_page("model"), label="Go to the Model page", icon=":material/view_in_ar:")
        return None
    return name


@st.cache_data(show_spinner=False, ttl=30)
def class_count(dataset_id: str | None, default: int = 2) -> int:
    """How many classes the chosen photos have (the size of the new head); `default` without them."""
    if not dataset_id:
        return default
    from core import trainset
    from core.data.store import load_dataset

    try:
        return len(load_dataset(dataset_id).classes)
    except Exception:  # noqa: BLE001 - a folder or the sample: read it as a run would
        pass
    try:
        return len(trainset.resolve(dataset_id)["classes"])
    except Exception:  # noqa: BLE001 - unreadable photos: the page still shows the layers
        return default


@st.cache_data(show_spinner=False, ttl=30)
def train_images(dataset_id: str | None, default: int = 1000) -> int:
    """How many training images the chosen dataset has (for estimates); `default` without one."""
    if not dataset_id:
        return default
    from core.data.store import load_dataset

    try:
        return max(10, sum(1 for it in load_dataset(dataset_id).items if it.split == "train"))
    except Exception:  # not a stored dataset: keep the default
        return default


def results_not_computed(err: object, earlier_shown: bool) -> None:
    """Say that computing a run's results failed, and that the results still shown (if any) are the earlier ones."""
    kept = " Nothing was replaced: the results below are the ones computed before." if earlier_shown else ""
    st.error(f"Could not compute results: {esc(err)}{kept}")


def refusal_reason(err: Exception, name: str | None = None) -> str:
    """Plain-English reason of a refused import (escaped), naming the user's file (``name``, shown only) once.
    Store and archive errors carry a ``reason``; OS errors get a short text; others say themselves."""
    reason = getattr(err, "reason", None)
    if not reason:
        reason = (f"the file system refused ({err.strerror or type(err).__name__})" if isinstance(err, OSError)
                  else str(err) or type(err).__name__)
    text = esc(reason)
    return text if not name or esc(name) in text else f"{esc(name)}: {text}"


def freeze_words(preset: str) -> str:
    """A freeze preset in the Layers page's words ('gradual' → 'Head first, then the rest')."""
    words = {"head": "Head only", "all": "Everything", "gradual": "Head first, then the rest",
             "custom": "Chosen per group"}
    if preset.startswith("last-"):
        return f"Head + last {preset.removeprefix('last-')} groups"
    return words.get(preset, preset)
