"""Layers: the chosen backbone's layer groups, freeze presets, trainable counts and a measured cost estimate."""

import json

import pandas as pd
import streamlit as st

from core import zoo
from core.config import PRESET_HELP, FreezeConfig
from core.measure import estimate_training_isolated
from core.plots import layer_groups_figure
from core.tasks import freeze_defaults, get_task
from views.common import (
    cached_group_rows,
    class_count,
    current_task,
    draft,
    draft_freeze,
    duration,
    need_backbone,
    set_draft,
    step_page,
    train_images,
)


def groups_table(rows: list[dict]) -> pd.DataFrame:
    """The layer groups as the page's table shows them: plain column names, no row number (the chart above gives
    the order)."""
    table = pd.DataFrame(rows).drop(columns=["index"], errors="ignore")
    return table.rename(columns={"group": "Layer group", "params": "Parameters"})


def preset_help(preset: str, freeze: FreezeConfig) -> str:
    """What the preset does; for "gradual" with groups kept frozen it says so (the generic line said "everything"
    while the number box below it kept the first groups frozen)."""
    if preset == "gradual" and freeze.keep_frozen:
        return ("Train the head first, then unfreeze the rest with lower learning rates for earlier groups; the first "
                f"{freeze.keep_frozen} {'group stays' if freeze.keep_frozen == 1 else 'groups stay'} frozen.")
    return PRESET_HELP[preset]


st.title("3 · Choose what to train")
backbone = need_backbone()
if backbone is None:
    st.stop()

st.write(f"Model: **{backbone}**. A pretrained model is a stack of layer groups: early groups see edges and "
         "textures, later ones whole objects. Freezing keeps a group as it was learned on ImageNet.")
_task = current_task()
_t = get_task(_task)
if _task != "classification":
    st.info(f"{_t.title}: the groups below are the pretrained backbone's; the task's own layers "
            f"({getattr(_t, 'head_label', 'its head')}) always train. \"head\" in the table stands for them.")

saved = draft_freeze()
kinds = ["head", "last-N", "all", "gradual", "custom"]
saved_kind = "last-N" if saved.last_n is not None else saved.preset
_labels = {"head": "Head only", "last-N": "Head + last N groups", "all": "Everything",
           "gradual": "Head first, then the rest (lower LR early)", "custom": "Choose per group"}
_recommended = freeze_defaults(_t).preset
preset = st.radio("What should train?", kinds, index=kinds.index(saved_kind), key="freeze_preset",
                  format_func=lambda k: _labels[k] + (" · recommended" if k == _recommended else ""),
                  horizontal=True)
help_slot = st.empty()  # filled once the choice below is known (the groups kept frozen)

n_classes = class_count(draft("dataset_id"))  # the new head's size: 2 until photos are chosen
all_rows = cached_group_rows(backbone, json.dumps(FreezeConfig("all").to_dict()), n_classes)
group_names = [r["group"] for r in all_rows]
body_names = [n for n in group_names if n != "head"]

kwargs: dict = {"train_bn": False}
# One container for the preset's own options, always present: switching presets must not shift the
# elements below (a shifted page briefly shows the old and the new metrics together while it reruns).
options = st.container()
if preset == "last-N":
    n = options.slider("N (groups before the head)", 1, max(1, len(body_names)), value=saved.last_n or 2,
                      key="freeze_last_n")
    kwargs["preset"] = f"last-{n}"
elif preset == "custom":
    chosen = options.multiselect("Groups to train (the head always trains)", body_names,
                                 default=[g for g in saved.groups if g in body_names], key="freeze_groups")
    kwargs.update(preset="custom", groups=tuple(chosen))
else:
    kwargs["preset"] = preset
if preset == "gradual":
    kwargs["head_epochs"] = options.number_input("Epochs with the head only", 1, 20, value=saved.head_epochs,
                                                 key="freeze_head_epochs")
    kwargs["lr_floor"] = options.select_slider("Learning rate of the first group, relative to the head",
                                               [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0], value=saved.lr_floor,
                                               key="freeze_lr_floor")
    kwargs["keep_frozen"] = options.number_input(
        "Groups that stay frozen (counted from the input)", 0, max(0, len(body_names) - 1),
        value=min(saved.keep_frozen if saved.preset == "gradual" else freeze_defaults(_t).keep_frozen,
                  max(0, len(body_names) - 1)), key="freeze_keep_frozen",
        help="The first groups see edges and colours, change little when they train, and cost most of the "
             "time of a training step: keeping them frozen makes each epoch faster.")
bn_slot = st.empty()  # one place, filled or not: the elements below keep their positions (no stale copies)
if preset != "all":  # with every layer training nothing is frozen: the choice would mean nothing
    kwargs["train_bn"] = bn_slot.checkbox("Also update BatchNorm statistics in frozen groups", value=saved.train_bn,
                                     key="freeze_train_bn",
                                     help="Off (recommended): frozen groups keep their ImageNet statistics.")
freeze = FreezeConfig(**kwargs)
set_draft("freeze", json.dumps(freeze.to_dict()))
help_slot.caption(preset_help(preset, freeze))

rows = cached_group_rows(backbone, json.dumps(freeze.to_dict()), n_classes)
trains_keys = [k for k in rows[0] if k.startswith("trains")]
final_key = trains_keys[-1]
total = sum(r["params"] for r in rows)
first = sum(r["params"] for r in rows if r[trains_keys[0]])
final = sum(r["params"] for r in rows if r[final_key])
c1, c2, c3 = st.columns(3)
c1.metric("Layer groups", len(rows))
c2.metric("Trainable parameters", f"{final:,}", help="In the last phase." if len(trains_keys) > 1 else None)
c3.metric("Frozen parameters", f"{total - final:,}")
if len(trains_keys) > 1:
    rest = "all" if final == total else f"all but the first {freeze.keep_frozen} groups:"
    st.caption(f"Phase 1 trains {first:,} parameters (the head); phase 2 trains {rest} {final:,}.")

left, right = st.columns([3, 2])
left.plotly_chart(layer_groups_figure(rows, final_key), key="layers_chart")
right.dataframe(groups_table(rows), hide_index=True, key="layers_table",
                column_config={"Parameters": st.column_config.NumberColumn(format="localized")})

st.subheader("How long and how much memory?")
st.write("Measured now with a few real training steps on this machine (not a guess).")
c1, c2 = st.columns(2)
n_images = c1.number_input("Number of training images", 10, 1_000_000, value=train_images(draft("dataset_id")),
                           step=100, key="estimate_images")
batch = c2.select_slider("Batch size", [4, 8, 16, 32, 64, 128], value=32, key="estimate_batch")
if st.button("Measure", key="estimate_run"):
    with st.spinner("Running a few training steps…"):
        # on the crops the Train page trains on by default ("Faster epochs"): the run a user starts
        crop = _t.default_train_size(zoo.get_spec(backbone).input_size) if hasattr(_t, "default_train_size") else 0
        try:
            est = estimate_training_isolated(backbone, freeze, int(batch), int(n_images), train_size=crop)
        except (RuntimeError, TimeoutError) as err:
            st.error(f"Could not measure: {err}")
        else:
            st.session_state["estimate"] = {**est.to_dict(), "freeze_config": freeze.to_dict()}
est = st.session_state.get("estimate")
if est and est["model"] == backbone and est["freeze_config"] == freeze.to_dict() and est["batch_size"] == batch:
    c1, c2, c3 = st.columns(3)
    # in the words the Train page uses for the same figure ("2 min", not "100 s")
    c1.metric("Time per epoch", duration(est["seconds_per_step"] * -(-int(n_images) // int(batch))))
    c2.metric("Images / second", f"{est['images_per_second']:.0f}")
    c3.metric("Peak memory", f"{est['peak_memory_mb'] / 1024:.2f} GB")
    st.caption(est["note"])

if draft("dataset_id") is None:
    st.page_link(step_page("data"), label="Next: bring your photos →", icon=":material/photo_library:")
else:
    st.page_link(step_page("train"), label="Next: train →", icon=":material/model_training:")
