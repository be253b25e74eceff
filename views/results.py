"""The Results view of one run (used by the Runs page): metrics labelled with their split, confusion matrix,
mistakes, possible label errors, calibration and the "not sure" threshold, and the learning curve."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import runs
from views.common import esc, set_draft


def cli_error(stderr: str) -> str:
    """The last line a `transfer-studio` command wrote to stderr, as a sentence for a page: without the
    "error: " (or argparse's "<prog>: error: ") prefix meant for a terminal."""
    line = (stderr.strip().splitlines() or ["no output"])[-1]
    return re.sub(r"^(\S+: )?error: ", "", line.strip())


def times(n: int) -> str:
    """'1 time', '3 times'."""
    return f"{n} time{'s' * (n != 1)}"


@st.cache_data(show_spinner=False, max_entries=512)
def _thumb(path: str, side: int = 160) -> bytes | None:
    import io

    from core.data.images import ImageError, load_rgb

    try:
        img = load_rgb(path)
    except (ImageError, OSError):
        return None
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _confusion(matrix: list[list[int]], classes: list[str]) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", text=matrix,
                               texttemplate="%{text}", hovertemplate="true %{y} → predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(height=max(300, 40 * len(classes) + 120), margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      title="Confusion matrix")
    return fig


def _reliability(cal: dict) -> go.Figure:
    bins = [b for b in cal.get("bins", []) if b.get("count")]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(dash="dot", color="#94a3b8")))
    fig.add_trace(go.Bar(x=[(b["lo"] + b["hi"]) / 2 for b in bins], y=[b["accuracy"] for b in bins], width=0.09,
                         name="accuracy in bin", marker_color="#2563eb",
                         hovertext=[f"{b['count']} images" for b in bins]))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="confidence",
                      yaxis_title="accuracy", title="Reliability diagram", xaxis_range=[0, 1], yaxis_range=[0, 1])
    return fig


def _tradeoff(curve: list[dict], in_use: float | None, suggested: float | None = None) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[c["threshold"] for c in curve], y=[c["accuracy"] for c in curve],
                             name="accuracy of answers", line_color="#2563eb"))
    fig.add_trace(go.Scatter(x=[c["threshold"] for c in curve], y=[c["coverage"] for c in curve],
                             name="share answered", line_color="#f59e0b"))
    if suggested is not None and suggested != in_use:
        fig.add_vline(x=suggested, line_dash="dot", line_color="#94a3b8", annotation_text=f"suggested {suggested:.0%}")
    if in_use is not None:
        fig.add_vline(x=in_use, line_dash="dash", line_color="#16a34a", annotation_text=f"in use {in_use:.0%}")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="confidence threshold",
                      title="“Not sure” threshold: accuracy vs share answered", yaxis_range=[0, 1.02])
    return fig


def _learning(points: list[dict]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[p["n_train"] for p in points], y=[p["val_accuracy"] for p in points],
                               mode="lines+markers", line_color="#2563eb",
                               error_y=dict(type="data", symmetric=False,
                                            array=[p.get("val_accuracy_max", p["val_accuracy"]) - p["val_accuracy"]
                                                   for p in points],
                                            arrayminus=[p["val_accuracy"] - p.get("val_accuracy_min",
                                                                                  p["val_accuracy"])
                                                        for p in points])))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="training images",
                      yaxis_title="validation accuracy", title="Learning curve (quick model)",
                      yaxis_autorangeoptions=dict(maxallowed=1.02))  # all at 100 %: not an axis up to 2
    return fig


def _gallery(items: list[dict], key: str, caption) -> None:
    cols = st.columns(6)
    for i, item in enumerate(items[:18]):
        data = _thumb(item["path"])
        with cols[i % 6]:
            if data:
                st.image(data, width="stretch")
            st.caption(caption(item))


def _number(value: float | None, spec: str) -> str:
    """A stored metric for a metric card ('–' when it is missing: e.g. measured on no photos)."""
    return "–" if value is None else format(value, spec)


def _has_photos(block: dict | None) -> bool:
    """True when a stored split was measured on at least one photo (older evaluations may hold none)."""
    return bool(block) and bool(block.get("n_images")) and block.get("accuracy") is not None


def _split_word(split: str) -> str:
    return {"val": "validation"}.get(split, split)


def unchecked_classes(block: dict) -> list[str]:
    """The classes without a photo in a stored split (computed from the per-class supports for evaluations saved
    before `unchecked_classes` was recorded)."""
    if "unchecked_classes" in block:
        return list(block["unchecked_classes"])
    return [row["class"] for row in block.get("per_class") or [] if not row.get("support")]


def threshold_status(thr: dict, stale: bool = False) -> str:
    """What the "not sure" threshold does now, in one or two sentences (markdown)."""
    in_use, suggested = thr.get("threshold"), thr.get("suggested")
    hint = (f" Suggested: **{suggested:.0%}**; click “Use this threshold” to apply it."
            if suggested and in_use is None else "")
    if stale and in_use is not None:
        return (f"**Not applied:** the {in_use:.0%} you chose was for older weights of this run, so the model "
                "always answers. Recompute the results and choose again.")
    if in_use is not None:
        return (f"**In use:** answers below {in_use:.0%} confidence are shown as “not sure” on the Test page and in "
                "new exports (chosen by you).")
    if thr.get("chosen_by") == "user":
        return "**Not in use:** you chose to always answer." + hint
    return "**Not in use:** the model always answers on the Test page and in exports." + hint


def _show_threshold(run_dir: Path, thr: dict, stale: bool, chart, set_threshold) -> dict:
    """The "not sure" threshold: its status, a slider, and buttons to apply it or to always answer; returns the
    threshold as it stands after them."""
    start = thr.get("threshold") if thr.get("threshold") is not None else thr.get("suggested")
    value = st.slider("“Not sure” below this confidence", 0.0, 1.0, float(start or 0.0), 0.01, key="res_threshold",
                      help="Nothing changes until you click “Use this threshold”.")
    left, right = st.columns(2)
    if left.button("Use this threshold", key="res_threshold_set"):
        thr = set_threshold(run_dir, value if value > 0 else None)
        stale = False
        st.success(f"Saved: the Test page and new exports answer “not sure” below {value:.0%}." if value > 0
                   else "Saved: the model always answers.")
    if thr.get("threshold") is not None and right.button("Always answer", key="res_threshold_clear"):
        thr = set_threshold(run_dir, None)
        st.success("Saved: the model always answers.")
    st.markdown(threshold_status(thr, stale))
    chart.plotly_chart(_tradeoff(thr["curve"], None if stale else thr.get("threshold"), thr.get("suggested")),
                       key="res_tradeoff")
    return thr


def _photos_words(run_dir: Path) -> str:
    """The photos a run was trained on, as the user knows them (e.g. "dataset 'ants'")."""
    from core.evaluate import dataset_words

    try:
        return dataset_words(runs.load_dataset(run_dir))
    except runs.RunError:
        return "its dataset"


def show_results(run_dir: Path, ev: dict, set_threshold) -> None:
    """Render an evaluation (from core.evaluate) of the run in `run_dir`."""
    split = ev.get("primary_split", "val")
    block = (ev.get("splits") or {}).get(split)
    word = _split_word(split)  # "validation", not the folder name "val"
    classes = ev.get("classes") or []
    if ev.get("stale"):
        st.warning("These results are for older weights of this run: recompute them.")
    if not _has_photos(block):
        st.info(f"These saved results hold no numbers: none of the {esc(word)} photos of this run "
                f"({esc(_photos_words(run_dir))}) could be read when they were computed; they may have been deleted. "
                "Recompute them once the photos are back. The model can still be tested and exported.",
                icon=":material/info:")
        return
    st.caption(f"All numbers below are on the **{esc(word)}** photos ({block['n_images']} photos the model "
               "never trained on).")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(f"Accuracy ({word})", _number(block.get("accuracy"), ".1%"))
    unchecked = unchecked_classes(block)
    c2.metric(f"Balanced accuracy ({word})", _number(block.get("balanced_accuracy"), ".1%"),
              help="The average of the per-class accuracies: honest when classes have different sizes."
              + (f" Over the {len(classes) - len(unchecked)} classes with {word} photos."
                 if unchecked else ""))
    c3.metric(f"Macro F1 ({word})", _number(block.get("macro_f1"), ".3f"))
    c4.metric(f"Calibration error ({word})", _number((block.get("calibration") or {}).get("ece"), ".3f"),
              help="Expected calibration error: how far the model's confidence is from its real accuracy.")
    if unchecked:
        from core.evaluate import unchecked_sentence

        st.warning(f"{esc(unchecked_sentence(unchecked, _split_word(split)))} Balanced accuracy and the per-class "
                   f"numbers are over the {len(classes) - len(unchecked)} classes that have {_split_word(split)} "
                   "photos: give it some to know how well it is recognised.", icon=":material/warning:")
    left, right = st.columns([3, 2])
    left.plotly_chart(_confusion(block["confusion_matrix"], classes), key="res_confusion")
    per_class = pd.DataFrame(block["per_class"])
    right.dataframe(per_class, hide_index=True, key="res_per_class")
    pairs = block.get("most_confused") or []
    if pairs:
        right.markdown("**Most confused**")
        for p in pairs[:5]:
            right.caption(f"{esc(p['true'])} taken for {esc(p['predicted'])}: {times(p['count'])}")

    st.subheader(f"Mistakes ({len(block.get('misclassified', []))})")
    _gallery(block.get("misclassified", []), "res_mistakes",
             lambda m: f"{esc(m['label'])} → {esc(m['predicted'])} ({m['confidence']:.0%})")

    issues = block.get("label_issues") or []
    lc = ev.get("learning_curve") or {}
    issues_train = lc.get("train_label_issues") or []
    if issues or issues_train:
        # a key and tracked state keep the panel open through the reruns its table and button cause
        with st.expander(f"Possible label errors ({len(issues) + len(issues_train)})", key="res_issues_panel",
                         on_change="rerun"):
            st.write("Photos a model is confidently sure belong to another class. Check them: a wrong label "
                     "teaches the model the wrong thing.")
            st.caption(f"**{_split_word(split).capitalize()}** photos are judged by this run's model; **training** "
                       "photos by the quick model, each one by a model fitted without it (a model cannot judge the "
                       "photos it learnt).")
            rows = [{"drop": False, "relabel": False, "file": i["name"], "photos": where, "label": i["label"],
                     "looks like": i["suggested"], "why": i["reason"]}
                    for where, found in ((_split_word(split), issues), ("training", issues_train)) for i in found]
            edited = st.data_editor(pd.DataFrame(rows), hide_index=True, key="res_issues",
                                    disabled=["file", "photos", "label", "looks like", "why"],
                                    column_config={"relabel": st.column_config.CheckboxColumn(
                                        "relabel", help="Move the photo to the class it looks like.")})
            marked = edited.to_dict("records")
            to_drop = [(r["file"], r["photos"]) for r in marked if r["drop"]]
            to_move = [(r["file"], r["photos"], r["looks like"]) for r in marked if r["relabel"] and not r["drop"]]
            source = runs.load_dataset(run_dir).get("source") or {}
            if source.get("kind") == "store" and (to_drop or to_move):
                if st.button(f"Apply: drop {len(to_drop)}, relabel {len(to_move)}", key="res_apply_fixes"):
                    from core.data.store import drop_files, editing, load_dataset, relabel_files

                    # the same file name can be in two splits: the row's split says which photo it is
                    by_name = {(it.original_name, _split_word(it.split) if it.split != "train" else "training"):
                               it.file for it in load_dataset(source["id"]).items}
                    # this run was trained on the dataset: the fixes go into a new version, the run keeps its photos
                    with editing(source["id"]) as target:
                        for name, where, label in to_move:
                            if (name, where) in by_name:
                                relabel_files(target.id, [by_name[name, where]], label)
                        drop_files(target.id, [by_name[key] for key in to_drop if key in by_name])
                    set_draft("dataset_id", target.id)
                    where = (f"a new version of the dataset, **{esc(load_dataset(target.id).name)}**, now chosen "
                             "(this run keeps the photos it was trained on)" if target.kept else "the dataset")
                    st.success(f"Saved in {where}. Train again (Train page) to learn from the fixed labels.")
            elif to_drop or to_move:
                st.caption("This run read a folder directly: fix those files in the folder, then train again.")

    st.subheader("Can I trust its confidence?")
    cal = block.get("calibration") or {}
    thr = ev.get("unknown_threshold") or {}
    left, right = st.columns(2)
    left.plotly_chart(_reliability(cal), key="res_reliability")
    if thr.get("curve"):
        chart = right.container()
        reason = right.empty()  # filled after the buttons: a choice made this run changes it
        thr = _show_threshold(run_dir, thr, bool(ev.get("stale")), chart, set_threshold)
        reason.caption(esc(thr.get("reason", "")))

    if lc.get("available"):
        st.subheader("Should I collect more photos?")
        left, right = st.columns([3, 2])
        left.plotly_chart(_learning(lc["points"]), key="res_learning")
        right.info(lc.get("reading", ""))
