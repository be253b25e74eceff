"""Faces results (Runs page, Results tab): the threshold and its trade-off (open-set ROC with the chosen point),
a new false-accept rate without retraining, evaluation on a labelled folder of people with mistakes, and the
comparison of every faces run evaluated on the same folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import runs
from core.storage import read_json
from core.tasks.faces.evaluate import comparison, evaluate_folder, load_evaluations
from core.tasks.faces.threshold import TARGET_FARS, retarget
from views.common import esc


def roc_figure(roc: list[dict], chosen: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["far"] for r in roc], y=[r["identification"] for r in roc], mode="lines",
                             name="trade-off", hovertemplate="threshold %{text}<extra></extra>",
                             text=[f"{r['threshold']:.3f}" for r in roc]))
    far = chosen.get("reference_far")  # set from reference strangers: their estimate, not the few simulated ones
    fig.add_trace(go.Scatter(x=[chosen.get("achieved_far") if far is None else far], y=[chosen.get("identification")],
                             mode="markers",
                             marker={"size": 12, "color": "#dc2626"}, name="chosen threshold"))
    fig.update_layout(xaxis_title="strangers accepted (FAR)", yaxis_title="known photos named correctly",
                      height=320, margin={"t": 20, "b": 40, "l": 50, "r": 10}, yaxis_range=[0, 1.02])
    return fig


def show(run_dir: Path) -> None:
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "gallery.json")
    if not isinstance(meta, dict):
        st.info("This run has no face gallery yet.")
        return
    st.warning("This model holds biometric data (face embeddings) of the enrolled people; so do its exports and "
               "report.", icon=":material/lock:")
    cal = meta.get("calibration") or {}
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("People", len(meta.get("people", [])))
    c2.metric("Threshold", f"{meta.get('threshold', 0):.3f}")
    c3.metric("Held-back photos named", f"{cal.get('identification', 0):.1%}")
    if cal.get("reference_far") is not None:  # the threshold came from reference strangers: say what they give
        c4.metric("Strangers accepted (estimated)", f"{cal['reference_far']:.1%}",
                  help="Estimated from reference strangers (many other people's faces scored by this face model), "
                       f"which set the threshold; among your own photos {cal.get('achieved_far', 0):.1%} would be.")
    else:
        c4.metric("Simulated strangers accepted", f"{cal.get('achieved_far', 0):.1%}")
    st.caption(f"Chosen on {esc(cal.get('method', 'held-back photos'))} for a false-accept rate of "
               f"{meta.get('target_far')}. {esc(cal.get('note', ''))}")
    if meta.get("roc"):
        st.plotly_chart(roc_figure(meta["roc"], cal), key="faces_roc")
        if cal.get("reference_far") is not None:
            st.caption("The curve is drawn from your own held-back photos; the chosen point uses the reference "
                       "strangers' estimate.")
    flash = st.session_state.pop("faces_results_flash", None)
    if flash:  # set before the rerun that redraws the page with the new threshold
        st.success(flash)
    far = st.select_slider("Choose the threshold for another false-accept rate", list(TARGET_FARS),
                           value=meta.get("target_far", 0.01) if meta.get("target_far") in TARGET_FARS else 0.01,
                           key="faces_results_far")
    if far != meta.get("target_far") and st.button("Use this rate", key="faces_results_retarget"):
        new = retarget(run_dir, float(far))
        strangers = (f"{new['reference_far']:.1%} of strangers accepted (estimated from the reference strangers)"
                     if new.get("reference_far") is not None else
                     f"{new['achieved_far']:.1%} of simulated strangers accepted")
        named = f"{new['identification']:.1%} of held-back photos named"
        st.session_state["faces_results_flash"] = f"New threshold {new['threshold']:.3f}: {named}, {strangers}."
        st.rerun()

    st.subheader("Evaluate on a labelled folder")
    st.caption("One sub-folder per person. People not enrolled in this model are strangers: the right answer for "
               "them is 'unknown'.")
    folder = st.text_input("Folder path", key="faces_eval_folder")
    if st.button("Evaluate", key="faces_eval_go", disabled=not folder.strip()):
        bar = st.progress(0.0)
        try:
            evaluate_folder(run_dir, folder.strip(), lambda s, d, t: bar.progress(d / max(1, t), text=f"{s} {d}/{t}"))
        except Exception as err:  # a missing folder, no people...: say it plainly
            st.error(f"Could not evaluate: {esc(err)}")
        finally:
            bar.empty()  # done: the results below take its place
    evals = load_evaluations(run_dir)
    for path, res in evals.items():
        st.markdown(f"**{esc(path)}** — {res['n_images']} photos, {res['n_unknown_images']} of strangers")
        m = st.columns(4)
        m[0].metric("Enrolled people named", f"{(res['accuracy'] or 0):.1%}")
        m[1].metric("Strangers answered 'unknown'", f"{(res['unknown_rejection'] or 0):.1%}"
                    if res["unknown_rejection"] is not None else "—")
        for col, far in ((m[2], "1e-2"), (m[3], "1e-3")):
            value = res[f"tar_at_far_{far}"]
            col.metric(f"TAR at FAR {far}", f"{value:.1%}" if value is not None else "—",
                       help=f"True accept rate: the share of enrolled people's photos named correctly when the "
                            f"threshold lets through only {float(far):.1%} of strangers (false accept rate). "
                            "— when the folder has too few strangers to measure it.")
        table = comparison(runs.list_runs(run_dir.parent), path)
        if len(table) > 1:
            st.caption("Every model evaluated on this folder:")
            st.dataframe(pd.DataFrame(table), hide_index=True, key=f"faces_compare_{abs(hash(path))}")
        if res["most_confused"]:
            st.dataframe(pd.DataFrame(res["most_confused"]), hide_index=True, key=f"faces_confused_{abs(hash(path))}")
        mistakes = res.get("mistakes", [])[:12]
        if mistakes:
            cols = st.columns(6)
            for i, mk in enumerate(mistakes):
                with cols[i % 6]:
                    if Path(mk["path"]).is_file():
                        st.image(mk["path"], width=110)
                    st.caption(f"{esc(mk['name'])}: true {esc(mk['truth'])}, answered {esc(mk['predicted'])}")
