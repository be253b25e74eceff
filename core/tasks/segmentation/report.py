"""The HTML report of a segmentation run for people: settings, curves, per-class IoU, confusion matrix and
overlays of the worst validation images (truth and prediction), in one self-contained file."""

from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path

import plotly.graph_objects as go

from core import runs
from core.storage import write_bytes_atomic
from core.tasks.segmentation.evaluate import evaluate_run, load_evaluation, overlay_pair
from core.tasks.segmentation.predict import SegPredictor


def _img(im) -> str:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=82)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="">'


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def iou_figure(ev: dict) -> go.Figure:
    rows = [r for r in ev["per_class"]]
    fig = go.Figure(go.Bar(x=[r["iou"] if r["iou"] is not None else 0 for r in rows], y=[r["class"] for r in rows],
                           orientation="h", marker_color=[f"rgb{tuple(c)}" for c in ev.get("colours", [])] or None,
                           text=[_pct(r["iou"]) for r in rows], textposition="auto"))
    fig.update_layout(height=max(260, 28 * len(rows) + 80), margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_range=[0, 1], title=f"IoU per class (mIoU {_pct(ev['miou'])})",
                      yaxis_autorange="reversed")
    return fig


def confusion_figure(ev: dict) -> go.Figure:
    cm = ev["confusion_matrix"]
    classes = ev["classes"]
    norm = [[v / max(1, sum(row)) for v in row] for row in cm]
    fig = go.Figure(go.Heatmap(z=norm, x=classes, y=classes, colorscale="Blues", zmin=0, zmax=1,
                               text=[[f"{v:.0%}" for v in row] for row in norm], texttemplate="%{text}",
                               hovertemplate="true %{y} → predicted %{x}: %{z:.1%}<extra></extra>"))
    fig.update_layout(height=max(320, 34 * len(classes) + 140), margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="predicted", yaxis_title="true (share of its pixels)", yaxis_autorange="reversed",
                      title="Confusion matrix of classes (pixels)")
    return fig


def curves_figure(history: list[dict]) -> go.Figure:
    fig = go.Figure()
    xs = [h["epoch"] for h in history]
    fig.add_trace(go.Scatter(x=xs, y=[h.get("val_accuracy") for h in history], name="val mIoU"))
    fig.add_trace(go.Scatter(x=xs, y=[(h.get("metrics") or {}).get("val_pixel_accuracy") for h in history],
                             name="val pixel accuracy"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="epoch", yaxis_range=[0, 1],
                      title="Validation mIoU and pixel accuracy per epoch")
    fig.update_xaxes(dtick=1)  # whole epochs: a 1-epoch run's axis read 0, 0.5, 1, 1.5, 2
    return fig


def settings_rows(cfg: dict, status: dict, arch: str, seconds: float) -> list[tuple[str, str]]:
    """The run's settings in words (setting, value), as the Train page names them: the report showed its raw JSON."""
    from core.report import format_duration

    train, freeze = cfg.get("train") or {}, cfg.get("freeze") or {}
    size = train.get("train_size")
    return [("architecture", arch), ("backbone", str(cfg.get("backbone") or "–")),
            ("started from", "ImageNet weights (transfer learning)" if cfg.get("pretrained", True)
             else "random weights (from scratch)"),
            ("layers trained", str(freeze.get("preset") or "–")),
            ("epochs", f"{status['epochs_done']} done of {train.get('epochs', '–')} planned"
             if status.get("epochs_done") is not None else str(train.get("epochs", "–"))),
            ("batch size", str(train.get("batch_size", "–"))),
            ("learning rate", f"{train['lr']:.3g}" if train.get("lr") else "chosen automatically"),
            ("training crops", f"{size}×{size} px" if size else "full size"),
            ("classes weighted by rarity", "yes" if train.get("class_weights") else "no"),
            ("augmentation", ", ".join(train.get("augment") or []) or "none"),
            ("seed", str(train.get("seed", "–"))),
            ("device", str(status.get("device") or "–")), ("training time", format_duration(seconds))]


def write_report(run_dir: Path, out: Path | None = None, n_worst: int = 6) -> Path:
    """Evaluate when needed, then write RUN/report.html (or `out`)."""
    run_dir = Path(run_dir)
    cfg = runs.read_json_config(run_dir)
    ev = load_evaluation(run_dir)
    if ev is None or ev.get("stale"):
        ev = evaluate_run(run_dir)
    history = [e for e in runs.read_events(run_dir, ("epoch_ended",))]
    predictor = SegPredictor.from_run(run_dir)
    legend = "".join(f'<span class="chip" style="background:rgb{tuple(c)}"></span>{html.escape(n)} '
                     for n, c in zip(ev["classes"], ev["colours"], strict=True))
    gallery = []
    for row in ev["worst"][:n_worst]:
        try:
            img, truth, pred = overlay_pair(row, predictor)
        except Exception:  # noqa: BLE001 - a file gone since: skip it
            continue
        gallery.append(f"<figure>{_img(img)}{_img(truth)}{_img(pred)}<figcaption>{html.escape(row['name'])}: mIoU "
                       f"{_pct(row['miou'])} — photo, truth, prediction</figcaption></figure>")
    figs = [iou_figure(ev), confusion_figure(ev)] + ([curves_figure(history)] if history else [])
    plots = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs))
    arch = (runs.load_dataset(run_dir).get("model") or {}).get("arch", "unet")
    status = runs.read_status(run_dir)
    from core.evaluate import dataset_words
    from core.report import _date
    from core.run_table import seconds_trained

    seconds = seconds_trained(run_dir, status)
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in settings_rows(cfg, status, arch, seconds))
    state = str(status.get("state") or "created")
    facts = (f"Run {html.escape(run_dir.name)} · trained {_date(status.get('created'))} on "
             f"{html.escape(dataset_words(runs.load_dataset(run_dir)))}"
             + ("" if state == "completed" else f" · training <b>{html.escape(state)}</b>")
             + f" · report made {_date(time.time())}")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Segmentation report {html.escape(run_dir.name)}
</title><style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em}}
figure{{display:inline-block;margin:.5em}} figure img{{width:240px;margin-right:4px}}
.chip{{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .8em;border-radius:2px}}
.mute{{color:#64748b}} .settings th{{text-align:left;font-weight:normal;color:#475569;padding:.2em 1.5em .2em 0}}
</style></head><body>
<h1>Segmentation: {html.escape(runs.display_name(run_dir))}</h1>
<p class="mute">{facts}</p>
<p>{html.escape(arch)} on {html.escape(str(cfg.get('backbone')))}; evaluated on {ev['n_images']} validation images:
<b>mIoU {_pct(ev['miou'])}</b>, pixel accuracy {_pct(ev['pixel_accuracy'])}. {html.escape(ev['notes'][0])}</p>
<p>Classes: {legend}</p>{plots}<h2>Worst validation images</h2>{''.join(gallery)}
<h2>Settings</h2><table class="settings">{settings}</table></body></html>"""
    path = out or run_dir / "report.html"
    write_bytes_atomic(path, page.encode())
    return path
