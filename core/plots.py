"""Plotly figures from plain rows: pure functions, unit-testable, no Streamlit."""

from __future__ import annotations

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
