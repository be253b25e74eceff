"""Plotly figures from plain rows: pure functions, unit-testable, no Streamlit."""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go


def layer_groups_figure(rows: list[dict], trains_key: str) -> go.Figure:
    """Horizontal bars of parameters per layer group (stem at the top), coloured by trainable/frozen."""
    names = [r["group"] for r in rows][::-1]
    params = [r["params"] for r in rows][::-1]
    trains = [bool(r[trains_key]) for r in rows][::-1]
    fig = go.Figure(go.Bar(
        x=params, y=names, orientation="h",
        marker_color=["#2563eb" if t else "#cbd5e1" for t in trains],
        text=["trains" if t else "frozen" for t in trains], textposition="auto",
        hovertemplate="%{y}: %{x:,} parameters<extra></extra>",
    ))
    fig.update_layout(height=max(220, 28 * len(rows) + 60), margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="parameters", title="Layer groups (input at the top, head at the bottom)")
    return fig


# a legend above the plot area, under the title (a legend at y=1.15 with a 30 px margin sat on the title)
TOP_LEGEND = dict(orientation="h", y=1.02, yanchor="bottom", x=0)


def _x_range(xs: list[float], pad: float) -> list[float] | None:
    """An x range holding every point and phase line with `pad` to spare, or None when there is nothing. Set
    explicitly because plotly's autorange also makes room for annotation text: a long phase label left of its line
    would stretch an epoch axis to -1 or a step axis below 0."""
    if not xs:
        return None
    lo, hi = min(xs), max(xs)
    return [lo - pad, hi + pad] if hi > lo else [lo - max(pad, 0.5), hi + max(pad, 0.5)]


def _phase_lines(fig: go.Figure, phases: list[dict], x_key: str, x_range: list[float] | None = None) -> None:
    """A dotted line where each phase after the first begins, its label on the side with more room, in short lines
    on a light box (a long label ran over the axis' numbers)."""
    middle = sum(x_range) / 2 if x_range else None
    for ph in phases[1:]:
        side = "top right" if middle is not None and ph[x_key] < middle else "top left"
        fig.add_vline(x=ph[x_key], line_dash="dot", line_color="#64748b",
                      annotation_text=_wrapped(ph.get("label", "phase")), annotation_position=side,
                      annotation_bgcolor="rgba(255,255,255,0.85)", annotation_font_size=11)


def _wrapped(text: str, width: int = 24) -> str:
    """`text` in lines of about `width` characters, joined for plotly (<br>)."""
    return "<br>".join(textwrap.wrap(text, width)) or text


def _epoch_axis(fig: go.Figure, epochs: list[int], phase_xs: list[float]) -> list[float] | None:
    """Whole epochs on the x axis, spanning the epochs and phase lines only."""
    xs = [*epochs, *phase_xs]
    span = max(xs) - min(xs) if xs else 0
    x_range = _x_range(xs, max(0.25, 0.04 * span))
    fig.update_xaxes(dtick=1, range=x_range)
    return x_range


def _finite(value):
    """None for a missing or NaN value (plotly leaves a gap), else the value."""
    return None if value is None or value != value else value


def epoch_curves(history: list[dict], metric: str, phases: list[dict] | None = None, label: str = "",
                 train_label: str = "") -> go.Figure:
    """Train and validation `metric` ('loss' or 'accuracy') per epoch, with phase changes marked.

    For tasks whose primary metric is not accuracy (mAP, mIoU), `label` names it, and `train_label` the other curve
    when it is not measured on the training photos (faces: rank-1 on the held-back photos); a split with no values
    (e.g. no train mAP, or a detector's validation loss) is left out once the run has epochs."""
    fig = go.Figure()
    epochs = [h["epoch"] for h in history]
    shown = label or metric
    for split, colour in (("train", "#94a3b8"), ("val", "#2563eb")):
        key = f"{split}_{metric}"
        values = [_finite(h.get(key)) for h in history]
        if (metric != "loss" or history) and all(v is None for v in values):
            continue
        name = f"{split} {metric}" if not label else (label if split == "val" else train_label or f"train {metric}")
        fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=name, line_color=colour))
    lines = [{"x": p["epoch"] + 0.5, "label": p["label"]} for p in phases or []]
    x_range = _epoch_axis(fig, epochs, [ln["x"] for ln in lines[1:]])
    _phase_lines(fig, lines, "x", x_range)
    if metric == "accuracy":  # scores in [0, 1]: a flat 100 % must not draw an axis up to 2
        fig.update_yaxes(autorangeoptions=dict(maxallowed=1.02))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=70, b=10), xaxis_title="epoch",
                      yaxis_title=shown, legend=TOP_LEGEND,
                      title=dict(text=shown if label else shown[:1].upper() + shown[1:], y=0.97))  # "mAP@0.5" stays
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def extra_metrics_figure(history: list[dict]) -> go.Figure:
    """Every task-specific per-epoch figure (`EpochEnded.metrics`: loss terms, mAP@0.5:0.95, pixel accuracy...)."""
    fig = go.Figure()
    epochs = [h["epoch"] for h in history]
    keys = sorted({k for h in history for k in (h.get("metrics") or {})})
    for key in keys:
        fig.add_trace(go.Scatter(x=epochs, y=[_finite((h.get("metrics") or {}).get(key)) for h in history],
                                 mode="lines+markers", name=key.replace("_", " ")))
    _epoch_axis(fig, epochs, [])
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10), xaxis_title="epoch",
                      legend=TOP_LEGEND,
                      title=dict(text="Per-epoch details", y=0.97))
    return fig


def smoothed(values: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as in TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        if v != v:  # NaN: keep the line continuous
            out.append(out[-1] if out else float("nan"))
            continue
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def batch_loss_figure(steps: list[int], losses: list[float], phase_steps: list[dict] | None = None) -> go.Figure:
    """Per-batch training loss (faint) and its smoothed curve, with phase changes marked by step."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=losses, mode="lines", name="batch loss", line_color="#cbd5e1"))
    fig.add_trace(go.Scatter(x=steps, y=smoothed(losses), mode="lines", name="smoothed", line_color="#2563eb"))
    lines = phase_steps or []
    x_range = _x_range([*steps, *(p["step"] for p in lines[1:])], 0)
    few = bool(steps) and max(steps) - min(steps) <= 10  # plotly's own ticks would fall on half steps (1.5, 2.5)
    fig.update_xaxes(range=x_range, **({"dtick": 1} if few else {}))
    _phase_lines(fig, lines, "step", x_range)
    fig.update_layout(height=290, margin=dict(l=10, r=10, t=70, b=10), xaxis_title="step", yaxis_title="loss",
                      legend=TOP_LEGEND, title=dict(text="Training loss per batch", y=0.97))
    return fig


def lr_find_figure(lrs: list[float], losses: list[float], smooth: list[float], suggestion: float) -> go.Figure:
    """Loss against learning rate (log axis) with the suggested value marked."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=lrs, y=losses, mode="lines", name="loss", line_color="#cbd5e1"))
    fig.add_trace(go.Scatter(x=lrs, y=smooth, mode="lines", name="smoothed", line_color="#2563eb"))
    fig.add_vline(x=suggestion, line_dash="dash", line_color="#16a34a", annotation_text=f"suggested {suggestion:.2g}")
    fig.update_xaxes(type="log", title="learning rate", exponentformat="e")  # 1e-05, not the SI "10μ"
    fig.update_layout(height=310, margin=dict(l=10, r=10, t=70, b=10), yaxis_title="loss",
                      title=dict(text="Learning-rate finder", y=0.97), legend=TOP_LEGEND)
    return fig
