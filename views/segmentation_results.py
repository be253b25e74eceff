"""Results of a segmentation run (the Runs page's Results tab): per-class IoU and mIoU, pixel accuracy, the class
confusion matrix and the worst validation images with truth and prediction overlays. Also the small view helpers
the other segmentation pages share (legend, overlays)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from views.common import esc, results_not_computed


def legend(names: list[str], colours: list, shares: dict[str, float] | None = None, key: str = "seg_legend") -> None:
    """Class colours (cell backgrounds) with names and, when given, each class's share of the pixels."""
    rows = [{"colour": "", "class": n} | ({"share": (shares or {}).get(n, 0.0)} if shares is not None else {})
            for n in names]
    styles = [f"background-color: rgb({c[0]},{c[1]},{c[2]})" for c in colours]
    df = pd.DataFrame(rows)
    styled = df.style.apply(lambda col: styles if col.name == "colour" else [""] * len(col), axis=0)
    config = {"share": st.column_config.ProgressColumn("share of pixels", min_value=0, max_value=1, format="percent")}
    st.dataframe(styled, hide_index=True, key=key, column_config=config if shares is not None else None)


def jpeg(img, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@st.cache_resource(show_spinner=False, max_entries=4)
def run_predictor(run_dir: str, stamp: float):  # noqa: ARG001 - stamp: reload when the weights change
    from core.tasks.segmentation.predict import SegPredictor

    return SegPredictor.from_run(run_dir)


def _stamp(run_dir: Path) -> float:
    path = Path(run_dir) / "checkpoints" / "best.safetensors"
    return path.stat().st_mtime if path.exists() else 0.0


def _cli_evaluate(run_dir: Path) -> str:
    import subprocess
    import sys

    from core.settings import PROJECT_ROOT
    from views.results import cli_error

    proc = subprocess.run([sys.executable, "-m", "core.cli", "evaluate", "--run", str(run_dir), "--json"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600, check=False)
    return "" if proc.returncode == 0 else cli_error(proc.stderr)


def show(run_dir: Path) -> None:
    """The Results tab for one segmentation run."""
    from core.tasks.segmentation.evaluate import load_evaluation, overlay_pair
    from core.tasks.segmentation.report import confusion_figure, iou_figure

    run_dir = Path(run_dir)
    ev = load_evaluation(run_dir)
    label = "Compute results" if ev is None else ("Recompute (the weights changed)" if ev.get("stale")
                                                  else "Recompute")
    if st.button(label, key="seg_results_evaluate", type="primary" if ev is None or ev.get("stale") else "secondary"):
        with st.spinner("Measuring the model on its validation images…"):
            err = _cli_evaluate(run_dir)
        ev = load_evaluation(run_dir)
        if err:
            results_not_computed(err, ev is not None)
        else:
            st.rerun()  # the button's label follows the new results
    if ev is None:
        st.caption("Results are measured on the run's validation images (full size, void ignored).")
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("mIoU", f"{ev['miou']:.1%}" if ev.get("miou") is not None else "—",
              help="Mean intersection-over-union over the known classes; void pixels are ignored.")
    c2.metric("Pixel accuracy", f"{ev['pixel_accuracy']:.1%}")
    c3.metric("Validation images", ev["n_images"])
    table = pd.DataFrame([{"class": r["class"], "IoU": r["iou"], "pixels": r["pixels"], "predicted": r["predicted"]}
                          for r in ev["per_class"]])
    left, right = st.columns([2, 3])
    left.dataframe(table, hide_index=True, key="seg_results_table",
                   column_config={"IoU": st.column_config.ProgressColumn("IoU", min_value=0, max_value=1,
                                                                         format="%.3f")})
    right.plotly_chart(iou_figure(ev), key="seg_results_iou")
    st.plotly_chart(confusion_figure(ev), key="seg_results_confusion")
    st.subheader("Worst validation images")
    st.caption("Photo, truth and prediction; sorted by each image's own mIoU.")
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="seg_results_opacity")
    predictor = run_predictor(str(run_dir), _stamp(run_dir))
    for row in ev["worst"][:6]:
        try:
            img, truth, pred = overlay_pair(row, predictor, opacity)
        except Exception as err:  # noqa: BLE001 - a file removed since: say so and go on
            st.caption(f"{esc(row['name'])}: cannot be shown ({esc(err)})")
            continue
        cols = st.columns(3)
        cols[0].image(jpeg(img), caption=f"{row['name'][:60]}")
        cols[1].image(jpeg(truth), caption="truth")
        cols[2].image(jpeg(pred), caption=f"prediction (mIoU {row['miou']:.1%})")
    for bad in ev.get("bad_images", [])[:10]:
        st.caption(f"Not evaluated: {esc(bad['name'])}: {esc(bad['reason'])}")
