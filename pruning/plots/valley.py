"""Figures of the Loss valley page: loss along the line from the dense to the pruned model, over
a plane through both, and the error barrier between consecutive levels of iterative pruning."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from pruning.plots.palette import (
    BARRIER_COLOUR,
    DENSE_COLOUR,
    MODEL_MARKER_LINE_COLOUR,
    PRUNED_COLOUR,
    SPLIT_COLOURS,
)


def valley_line_figure(line) -> go.Figure:
    """Train and test loss (left axis) and accuracy (right axis, dotted) along the line from the
    dense (a = 0) to the pruned model (a = 1), both models marked. ``line``: a LinePath."""
    figure = go.Figure()
    for split, dash, colour in (("train", "solid", SPLIT_COLOURS["train"]), ("test", "solid", SPLIT_COLOURS["test"])):
        figure.add_trace(go.Scatter(x=line.a, y=getattr(line, f"{split}_loss"), name=f"{split} loss", mode="lines",
                                    line=dict(color=colour, dash=dash)))
        figure.add_trace(go.Scatter(x=line.a, y=[100 * v for v in getattr(line, f"{split}_accuracy")],
                                    name=f"{split} accuracy (%)", mode="lines", yaxis="y2",
                                    line=dict(color=colour, dash="dot")))
    ends = [line.a.index(0.0), line.a.index(1.0)]
    figure.add_trace(go.Scatter(x=[0.0, 1.0], y=[line.train_loss[i] for i in ends], mode="markers+text",
                                text=["dense", "pruned"], textposition="top center", name="models (train loss)",
                                marker=dict(size=11, color=[DENSE_COLOUR, PRUNED_COLOUR], symbol=["circle", "x"])))
    for value in (0.0, 1.0):
        figure.add_vline(x=value, line_dash="dot", line_color=MODEL_MARKER_LINE_COLOUR)
    figure.update_layout(
        title="Loss along the line from dense to pruned",
        xaxis_title="a  (θ = θ_dense + a · (θ_pruned − θ_dense))",
        yaxis=dict(title="loss (cross-entropy)", rangemode="tozero"),
        yaxis2=dict(title="accuracy (%)", overlaying="y", side="right", range=[0, 100]),
        height=380,
        margin=dict(t=50, b=10),
        legend=dict(orientation="h", y=-0.2, x=0),
    )
    return figure


def valley_plane_figure(plane) -> go.Figure:
    """Contours of log10 of the train loss over the plane (a along pruned − dense, b along a
    filter-normalised random direction), with the dense and pruned models marked. A log scale
    keeps the valley floor readable next to the steep walls. ``plane``: a Plane."""
    z = np.log10(np.maximum(np.asarray(plane.loss, dtype=float), 1e-12))
    figure = go.Figure(go.Contour(
        x=plane.a, y=plane.b, z=z, colorscale="Viridis", ncontours=25,
        colorbar=dict(title=dict(text="log10 loss", side="right"), thickness=12),
        customdata=np.asarray(plane.loss, dtype=float),
        hovertemplate="a %{x:.2f}, b %{y:.2f}<br>loss %{customdata:.4g}<extra></extra>",
    ))
    names = list(plane.points)
    figure.add_trace(go.Scatter(
        x=[plane.points[name][0] for name in names], y=[plane.points[name][1] for name in names],
        mode="markers+text", text=names, textposition="top center", name="models", showlegend=False,
        marker=dict(size=12, color=[DENSE_COLOUR if name == "dense" else PRUNED_COLOUR for name in names],
                    symbol=["circle" if name == "dense" else "x" for name in names], line=dict(color="white", width=1)),
        textfont=dict(color="white"),
    ))
    figure.update_layout(
        title="Train loss over the plane of dense, pruned and a random direction",
        xaxis_title="a: along θ_pruned − θ_dense",
        yaxis_title="b: along a filter-normalised random direction" + (" (survivors only)" if plane.restricted else ""),
        height=460,
        margin=dict(t=50, b=10),
    )
    return figure


def level_barrier_figure(rows: list[dict]) -> go.Figure:
    """Error barrier between consecutive levels of iterative pruning (linear mode connectivity),
    one bar per transition, labelled with the two sparsities. ``rows``: ``level_barriers``'s."""
    labels = [f"{100 * row['from_sparsity']:.0f}% → {100 * row['to_sparsity']:.0f}%" for row in rows]
    figure = go.Figure(go.Bar(
        x=labels, y=[100 * row["barrier"] for row in rows], marker_color=BARRIER_COLOUR,
        customdata=[[100 * row["start_error"], 100 * row["end_error"], 100 * row["max_error"]] for row in rows],
        hovertemplate="%{x}<br>barrier %{y:.2f} pts<br>errors: start %{customdata[0]:.1f}%, end %{customdata[1]:.1f}%, "
                      "highest %{customdata[2]:.1f}%<extra></extra>",
    ))
    figure.update_layout(title="Error barrier between consecutive pruning levels", xaxis_title="sparsity, level to level",
                         yaxis=dict(title="test error barrier (points)", rangemode="tozero"), height=320,
                         margin=dict(t=50, b=10))
    return figure
