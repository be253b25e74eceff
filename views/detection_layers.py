"""Layers for object detection: the backbone's layer groups (as for classification) and one 'head' group — the
feature pyramid and the detection heads, which always train."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.config import PRESET_HELP, FreezeConfig
from core.plots import layer_groups_figure
from views.common import draft, draft_freeze, need_backbone, set_draft, step_page

st.title("3 · Choose what to train")
backbone = need_backbone()
if backbone is None:
    st.stop()


@st.cache_data(show_spinner=False)
def _rows(name: str, freeze_json: str) -> list[dict]:
    from core.tasks.detection.model import group_rows

    return group_rows(name, FreezeConfig.from_dict(json.loads(freeze_json)))


st.write(f"Detector on **{backbone}**. The backbone's early groups see edges and textures, later ones whole objects; "
         "freezing keeps a group as it was learned on ImageNet. The **head** — feature pyramid, region proposals and "
         "box classifier — is new and always trains.")
st.info("Recommended for detection: **Head + last 4 groups** (the stem and the first three groups stay frozen). "
        "It trains fast on a CPU and reached mAP@0.5 0.90 on a 160-photo set in about a minute.")
saved = draft_freeze()
kinds = ["head", "last-N", "all", "custom"]
saved_kind = "last-N" if saved.last_n is not None else (saved.preset if saved.preset in kinds else "head")
preset = st.radio("What should train?", kinds, index=kinds.index(saved_kind), key="det_freeze_preset",
                  horizontal=True, format_func=lambda k: {"head": "Head only", "last-N": "Head + last N groups",
                                                          "all": "Everything", "custom": "Choose per group"}[k])
st.caption(PRESET_HELP[preset])
all_rows = _rows(backbone, json.dumps(FreezeConfig("all").to_dict()))
body = [r["group"] for r in all_rows if r["group"] != "head"]
# The preset's own options sit in one container that is always there, so switching presets does not
# shift the elements below (a shifted page briefly shows the old and the new metrics together).
options = st.container()
if preset == "last-N":
    n = options.slider("N (groups before the head)", 1, len(body), value=min(saved.last_n or 4, len(body)),
                       key="det_freeze_last_n")
    freeze = FreezeConfig(f"last-{n}")
elif preset == "custom":
    chosen = options.multiselect("Groups to train (the head always trains)", body,
                                 default=[g for g in saved.groups if g in body], key="det_freeze_groups")
    freeze = FreezeConfig("custom", groups=tuple(chosen))
else:
    freeze = FreezeConfig(preset)
set_draft("freeze", json.dumps(freeze.to_dict()))
rows = _rows(backbone, json.dumps(freeze.to_dict()))
key = [k for k in rows[0] if k.startswith("trains")][-1]
total = sum(r["params"] for r in rows)
trainable = sum(r["params"] for r in rows if r[key])
c1, c2, c3 = st.columns(3)
c1.metric("Layer groups", len(rows))
c2.metric("Trainable parameters", f"{trainable:,}")
c3.metric("Frozen parameters", f"{total - trainable:,}")
left, right = st.columns([3, 2])
left.plotly_chart(layer_groups_figure(rows, key), key="det_layers_chart")
right.dataframe(pd.DataFrame(rows), hide_index=True, key="det_layers_table")
st.caption("BatchNorm layers of the backbone are frozen and folded into their convolutions: detection batches are a "
           "few photos, too few for reliable statistics. Time per epoch and images/s show live on the Train page.")
if draft("dataset_id") is None:
    st.page_link(step_page("data"), label="Next: bring your photos →", icon=":material/photo_library:")
else:
    st.page_link(step_page("train"), label="Next: train →", icon=":material/model_training:")
