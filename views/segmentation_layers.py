"""Layers (segmentation): the decoder architecture (U-Net, FPN, DeepLabV3+) and what trains: the encoder's stages
(the pretrained backbone, by output stride) can be frozen; the decoder is new and always trains.

The shared Layers page shows the classifier's groups and measures the classifier; a segmentation model's groups
and costs are those of encoder + decoder, so this page shows them instead."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.config import PRESET_HELP, FreezeConfig
from core.freeze import plan_phases
from core.plots import layer_groups_figure
from core.tasks import get_task
from views.common import draft, need_backbone, set_draft, step_page

TASK = get_task("segmentation")
st.title("3 · Architecture and what to train")
backbone = need_backbone()
if backbone is None:
    st.stop()

options = dict(draft("segmentation_options") or {})
archs = list(TASK.architectures)
arch = st.radio("Architecture", archs, index=archs.index(options.get("arch", TASK.default_arch)),
                format_func=lambda a: TASK.architectures[a], horizontal=True, key="seg_layers_arch")
st.caption(TASK.architecture_notes[arch])
options["arch"] = arch
set_draft("segmentation_options", options)  # read by the Train page when it starts the run


@st.cache_data(show_spinner=False, max_entries=16)
def _groups(backbone: str, arch: str) -> list[dict]:
    from core.tasks.segmentation.model import build, seg_layer_groups

    model = build(backbone, 2, pretrained=False, arch=arch)
    return [{"index": g.index, "group": g.name, "params": g.n_params} for g in seg_layer_groups(model)]


groups = _groups(backbone, arch)
st.write(f"Encoder: **{backbone}** (ImageNet weights), decoder: **{TASK.architectures[arch]}** (new). Early encoder "
         "stages see edges and textures at full detail, later ones whole objects at 1/32 of the size.")
raw = draft("freeze")
saved = FreezeConfig.from_dict(json.loads(raw)) if raw else TASK.default_freeze()
kinds = ["all", "head", "last-N", "gradual", "custom"]
saved_kind = "last-N" if saved.last_n is not None else saved.preset
titles = {"all": "Everything (recommended)", "head": "Decoder only (encoder frozen)",
          "last-N": "Decoder + last N encoder stages", "gradual": "Decoder first, then everything",
          "custom": "Choose per stage"}
preset = st.radio("What should train?", kinds, index=kinds.index(saved_kind), format_func=titles.get,
                  horizontal=True, key="seg_freeze_preset")
st.caption(PRESET_HELP[preset].replace("head", "decoder").replace("Head", "Decoder"))
body = [g["group"] for g in groups if g["group"] != "decoder"]
kwargs: dict = {"preset": preset}
# The preset's own options sit in one container that is always there, so switching presets does not
# shift the elements below (a shifted page briefly shows the old and the new metrics together).
options = st.container()
if preset == "last-N":
    n = options.slider("N (encoder stages before the decoder)", 1, len(body), value=saved.last_n or 2,
                       key="seg_freeze_last_n")
    kwargs["preset"] = f"last-{n}"
elif preset == "custom":
    kwargs["groups"] = tuple(options.multiselect(
        "Encoder stages to train (the decoder always trains)", body,
        default=[g for g in saved.groups if g in body], key="seg_freeze_groups"))
elif preset == "gradual":
    kwargs["head_epochs"] = options.number_input("Epochs with the decoder only", 1, 20, value=saved.head_epochs,
                                                 key="seg_freeze_head_epochs")
bn_slot = st.empty()  # one place, filled or not: the elements below keep their positions (no stale copies)
if preset != "all":  # with every stage training nothing is frozen: the choice would mean nothing
    kwargs["train_bn"] = bn_slot.checkbox("Also update BatchNorm statistics in frozen stages", value=saved.train_bn,
                                     key="seg_freeze_train_bn",
                                     help="Off (recommended): frozen stages keep their ImageNet statistics.")
freeze = FreezeConfig(**kwargs)
set_draft("freeze", json.dumps(freeze.to_dict()))

from core.freeze import LayerGroup  # noqa: E402 - only for the schedule of this page's rows

phases = plan_phases([LayerGroup(g["index"], g["group"], (), g["params"]) for g in groups], freeze,
                     TASK.default_train().epochs)
rows = []
for g in groups:
    row = dict(g)
    for k, ph in enumerate(phases):
        suffix = "" if len(phases) == 1 else f" (phase {k + 1} from epoch {ph.start_epoch + 1})"
        row["trains" + suffix] = ph.trainable[g["index"]]
    rows.append(row)
final_key = [k for k in rows[0] if k.startswith("trains")][-1]
total = sum(r["params"] for r in rows)
trainable = sum(r["params"] for r in rows if r[final_key])
c1, c2, c3 = st.columns(3)
c1.metric("Layer groups", len(rows))
c2.metric("Trainable parameters", f"{trainable:,}")
c3.metric("Frozen parameters", f"{total - trainable:,}")
left, right = st.columns([3, 2])
left.plotly_chart(layer_groups_figure(rows, final_key), key="seg_layers_chart")
right.dataframe(pd.DataFrame(rows), hide_index=True, key="seg_layers_table")
st.caption("For a sense of time: on a laptop-class processor with 2 cores, U-Net on MobileNetV2 trains at about "
           "6 photos per second on 256² crops, so a street-scene set of ~370 photos takes about 18 minutes for the "
           "default epochs (longer on processors without fast 16-bit maths). FPN is ~1.4× faster, DeepLabV3+ "
           "slower.")
st.page_link(step_page("train"), label="Next: train →", icon=":material/model_training:")
