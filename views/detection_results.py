"""Results of a detection run (shown in the Runs page's Results tab): mAP overall and per class, the
precision-recall curve, and a gallery of predictions next to the ground truth, worst photo first, with a confidence
threshold slider that re-draws what the gallery shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from core.settings import PROJECT_ROOT
from core.tasks.detection import figures
from core.tasks.detection.draw import comparison_image
from core.tasks.detection.evaluate import load_evaluation
from core.tasks.detection.metrics import match_image
from views.common import esc, results_not_computed
from views.results import cli_error

PAGE = 12


def _evaluate(run_dir: Path) -> str:
    """Run `transfer-studio evaluate` in its own process (as the other buttons do); '' or the error line."""
    out = subprocess.run([sys.executable, "-m", "core.cli", "evaluate", "--run", str(run_dir), "--quiet", "--json"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    return "" if out.returncode == 0 else cli_error(out.stderr)


@st.cache_data(show_spinner=False, max_entries=64)
def _picture(path: str, gt: dict, pred: dict, matched: dict, classes: tuple[str, ...], threshold: float):
    return comparison_image(path, gt, pred, matched, list(classes), threshold)


def best_score(images: list[dict]) -> float | None:
    """The highest score of any predicted box on the validation photos, None when there is none."""
    scores = [float(v) for img in images for v in (img.get("pred") or {}).get("scores") or []]
    return max(scores) if scores else None


def show(run_dir: Path) -> None:
    """The Results tab for one detection run."""
    run_dir = Path(run_dir)
    ev = load_evaluation(run_dir)
    label = "Compute results" if ev is None else ("Recompute (the weights changed)" if ev.get("stale") else
                                                  "Recompute")
    if st.button(label, key="det_results_evaluate", type="primary" if ev is None or ev.get("stale") else "secondary"):
        with st.spinner("Running the detector on the validation photos…"):
            err = _evaluate(run_dir)
        ev = load_evaluation(run_dir)
        if err:
            results_not_computed(err, ev is not None)
        else:
            st.rerun()  # the button's label follows the new results
    if ev is None:
        st.caption("Results are computed on the run's validation photos.")
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("mAP@0.5 (validation)", f"{ev['map50']:.3f}")
    c2.metric("mAP@0.5:0.95 (validation)", f"{ev['map']:.3f}")
    c3.metric("Validation photos", ev["n_images"])
    c4.metric("Time per photo", f"{1000 * (ev.get('seconds_per_image') or 0):.0f} ms")
    st.caption("mAP@0.5 counts a box as found when it overlaps the true box by at least half (IoU ≥ 0.5); "
               "mAP@0.5:0.95 averages stricter overlaps too. Computed with torchmetrics (COCO protocol).")
    rows = ev.get("per_class") or []
    left, right = st.columns(2)
    if rows:
        left.plotly_chart(figures.per_class_ap(rows), key="det_results_ap")
        left.dataframe(pd.DataFrame([{"class": r["class"], "AP@0.5": r["ap50"], "AP@0.5:0.95": r["ap"],
                                      "boxes": r["n_boxes"]} for r in rows]), hide_index=True,
                       key="det_results_table")
    if ev.get("pr_curve"):
        right.plotly_chart(figures.pr_curves(ev["pr_curve"]), key="det_results_pr")

    st.subheader("Predictions next to the truth")
    threshold = st.slider("Confidence threshold", 0.05, 0.95, 0.5, 0.05, key="det_results_threshold",
                          help="Boxes scoring below it are not shown (and not counted as mistakes).")
    classes = tuple(ev.get("classes") or [])
    scored = []
    for img in ev.get("images") or []:
        m = match_image(img["pred"], img["gt"], threshold)
        scored.append((len(m["misses"]) + len(m["false_positives"]), img, m))
    scored.sort(key=lambda r: (-r[0], r[1]["name"]))
    total_miss = sum(len(m["misses"]) for _, _, m in scored)
    total_fp = sum(len(m["false_positives"]) for _, _, m in scored)
    total_hit = sum(len(m["hits"]) for _, _, m in scored)
    st.write(f"At {threshold:.2f}: **{total_hit}** boxes found, **{total_miss}** missed, **{total_fp}** false boxes "
             "(IoU ≥ 0.5 with a true box of the same class counts as found).")
    top = best_score(ev.get("images") or [])
    if total_hit + total_fp == 0 and top is not None and top < threshold:
        st.info(f"No box scored {threshold:.2f} or more: the model's best box scored {top:.2f}. Lower the threshold "
                "to see what it finds; a model that is never sure needs more epochs or more photos.")
    st.caption("Blue: found · red dashed: missed · orange: a box where there is none. Worst photos first.")
    shown = st.session_state.get("det_results_more", PAGE)
    cols = st.columns(3)
    for i, (_errors, img, m) in enumerate(scored[:shown]):
        with cols[i % 3]:
            try:
                pic = _picture(img["path"], img["gt"], img["pred"], m, classes, threshold)
            except Exception:  # noqa: BLE001 - a photo deleted since: say so, go on
                st.caption(f"{esc(img['name'])}: the photo is no longer there.")
                continue
            st.image(pic, width="stretch")
            st.caption(f"{esc(img['name'])}: {len(m['hits'])} found, {len(m['misses'])} missed, "
                       f"{len(m['false_positives'])} false")
    if len(scored) > shown and st.button("Show more", key="det_results_show_more"):
        st.session_state["det_results_more"] = shown + PAGE
        st.rerun()
