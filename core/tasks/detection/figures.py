"""Plotly figures for detection data and results (pure functions of plain data)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 300) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=50, b=10), title=dict(text=title, y=0.97),
                      xaxis_title=x, yaxis_title=y, legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    return fig


def boxes_per_class(counts: dict[str, int]) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), marker_color="#2563eb"))
    return _layout(fig, "Boxes per class", "class", "boxes")


def boxes_per_image(values: Sequence[int]) -> go.Figure:
    top = max(values, default=0)
    counts = [sum(1 for v in values if v == k) for k in range(top + 1)]
    fig = go.Figure(go.Bar(x=list(range(top + 1)), y=counts, marker_color="#64748b"))
    fig.update_xaxes(dtick=1)
    return _layout(fig, "Boxes per image (0 = images without objects)", "boxes in the image", "images")


def box_sizes(sizes: Sequence[dict]) -> go.Figure:
    """Width against height of every box (pixels), one colour per class."""
    fig = go.Figure()
    for name in sorted({s["class"] for s in sizes}):
        rows = [s for s in sizes if s["class"] == name]
        fig.add_trace(go.Scatter(x=[r["width"] for r in rows], y=[r["height"] for r in rows], mode="markers",
                                 name=name, marker=dict(size=6, opacity=0.7)))
    return _layout(fig, "Box sizes", "width (px)", "height (px)", 340)


def relative_areas(sizes: Sequence[dict]) -> go.Figure:
    """How much of its image each box covers (small objects are harder)."""
    fig = go.Figure(go.Histogram(x=[100 * s["relative_area"] for s in sizes], xbins=dict(start=0, end=100, size=5),
                                 marker=dict(color="#d97706", line=dict(color="white", width=1))))  # bins of 5 %
    fig.update_xaxes(range=[0, 100])
    return _layout(fig, "Share of the image each box covers", "% of the image", "boxes")


def pr_curves(curves: Sequence[dict]) -> go.Figure:
    fig = go.Figure()
    for c in curves:
        fig.add_trace(go.Scatter(x=c["recall"], y=c["precision"], mode="lines", name=c["class"]))
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(range=[0, 1.0])
    return _layout(fig, "Precision-recall at IoU 0.5", "recall", "precision", 340)


def per_class_ap(rows: Sequence[dict]) -> go.Figure:
    names = [r["class"] for r in rows]
    fig = go.Figure([go.Bar(x=names, y=[r.get("ap50") for r in rows], name="AP@0.5", marker_color="#2563eb"),
                     go.Bar(x=names, y=[r.get("ap") for r in rows], name="AP@0.5:0.95", marker_color="#94a3b8")])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, "Average precision per class", "class", "AP")
