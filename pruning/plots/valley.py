"""Figures of the Loss valley page: loss along the line from the dense to the pruned model (at one
sparsity, or scrubbed in the browser along a sparsity sweep), over a plane through both, and the
error barrier between consecutive levels of iterative pruning."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.plots.palette import (
    BARRIER_COLOUR,
    DENSE_COLOUR,
    MODEL_MARKER_LINE_COLOUR,
    PRUNED_COLOUR,
    SPLIT_COLOURS,
)
from pruning.plots.scrub import frame_name, with_scrubber
from pruning.sparsity_sweep import SparsitySweep, SweepPoint

SCRUB_TITLE = "The line from dense to pruned, along the slider: drag the scrubber below"
SPLITS = ("train", "test")


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


def valley_plane_figure(plane, title: str = "Train loss over the plane of dense, pruned and a random direction") -> go.Figure:
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
        title=title,
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


def _scrub_subtitle(point: SweepPoint) -> str:
    line = point.valley
    dense, pruned = line.a.index(0.0), line.a.index(1.0)
    return (f"{SCRUB_TITLE}<br><sup>at {100 * point.target:.1f}%: error barrier test {100 * line.barrier('test'):.2f} pts, "
            f"train {100 * line.barrier('train'):.2f} pts · train loss dense → pruned {line.train_loss[dense]:.3g} → "
            f"{line.train_loss[pruned]:.3g}</sup>")


def valley_scrub_figure(sweep: SparsitySweep, active: int) -> go.Figure:
    """The 1-D valley at every sparsity of ``sweep``, one frame per grid point, drawn at ``active``.
    Left: train and test loss (log axis) and accuracy (right axis, dotted) along dense (a = 0) ->
    pruned (a = 1). Right: the error barrier of both splits along the whole sweep, the current
    point marked. The axes are fixed over all frames, so scrubbing shows the valley rise in place
    instead of the axes rescaling. Frame ``i`` carries point ``i``'s LinePath unchanged (accuracy
    in percent)."""
    lines = [point.valley for point in sweep.points]
    losses = [value for line in lines for split in SPLITS for value in getattr(line, f"{split}_loss") if value > 0]
    low, high = (min(losses), max(losses)) if losses else (1e-3, 1.0)
    barriers = {split: [100 * line.barrier(split) for line in lines] for split in SPLITS}
    barrier_values = barriers["train"] + barriers["test"]
    targets = [100 * point.target for point in sweep.points]
    figure = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.15,
                           specs=[[{"secondary_y": True}, {}]],
                           subplot_titles=("Loss and accuracy along the line", "Error barrier along the slider: test, train"))

    def moving(index: int) -> list[tuple[go.Scatter, int, bool]]:
        """Point ``index``'s traces, each with its column and whether it is on the accuracy axis."""
        line = sweep.points[index].valley
        traces = []
        for split in SPLITS:
            colour = SPLIT_COLOURS[split]
            traces.append((go.Scatter(x=line.a, y=getattr(line, f"{split}_loss"), name=f"{split} loss",
                                      mode="lines+markers", line=dict(color=colour), marker=dict(size=5)), 1, False))
            traces.append((go.Scatter(x=line.a, y=[100 * value for value in getattr(line, f"{split}_accuracy")],
                                      name=f"{split} accuracy (%)", mode="lines", line=dict(color=colour, dash="dot")),
                           1, True))
        ends = [line.a.index(0.0), line.a.index(1.0)]
        traces.append((go.Scatter(x=[0.0, 1.0], y=[line.train_loss[i] for i in ends], mode="markers+text",
                                  text=["dense", "pruned"], textposition="top center", name="models (train loss)",
                                  marker=dict(size=11, color=[DENSE_COLOUR, PRUNED_COLOUR], symbol=["circle", "x"])),
                       1, False))
        traces.append((go.Scatter(x=[targets[index]] * 2, y=[barriers["test"][index], barriers["train"][index]],
                                  mode="markers", name="here", showlegend=False,
                                  marker=dict(size=12, color=[SPLIT_COLOURS["test"], SPLIT_COLOURS["train"]],
                                              line=dict(color="black", width=1)),
                                  hovertemplate="%{x:.1f}%: %{y:.2f} pts<extra></extra>"), 2, False))
        return traces

    for trace, col, accuracy_axis in moving(active):
        figure.add_trace(trace, row=1, col=col, secondary_y=accuracy_axis if col == 1 else None)
    drawn = list(figure.data)  # the moving traces, with the axes make_subplots gave them

    def frame(index: int) -> go.Frame:
        data = [trace.update(xaxis=placed.xaxis, yaxis=placed.yaxis) for (trace, _, _), placed in zip(moving(index), drawn)]
        return go.Frame(name=frame_name(sweep.points[index].target), data=data, traces=list(range(len(data))),
                        layout=go.Layout(title_text=_scrub_subtitle(sweep.points[index])))

    for split in SPLITS:
        figure.add_trace(go.Scatter(x=targets, y=barriers[split], name=f"{split} error barrier", mode="lines",
                                    line=dict(color=SPLIT_COLOURS[split], width=1.5), showlegend=False,
                                    hovertemplate=f"{split}: %{{y:.2f}} pts at %{{x:.1f}}%<extra></extra>"),
                         row=1, col=2)
    frames = [frame(index) for index in range(len(sweep.points))]
    for value in (0.0, 1.0):
        figure.add_vline(x=value, line_dash="dot", line_color=MODEL_MARKER_LINE_COLOUR, row=1, col=1)
    figure.update_xaxes(title_text="a  (θ_dense → θ_pruned)", row=1, col=1)
    figure.update_yaxes(title_text="loss (cross-entropy, log)", type="log",
                        range=[math.log10(low) - 0.1, math.log10(high) + 0.1], secondary_y=False, row=1, col=1)
    figure.update_yaxes(title_text="accuracy (%, dotted)", range=[0, 100], tickmode="linear", tick0=0, dtick=20,
                        showgrid=False, secondary_y=True, row=1, col=1)
    figure.update_xaxes(title_text="sparsity (%)", range=[0, 100], row=1, col=2)
    figure.update_yaxes(title_text="error barrier (points)",
                        range=[min(0.0, *barrier_values) - 1, max(1.0, *barrier_values) * 1.1 + 1], row=1, col=2)
    figure.update_layout(title_text=_scrub_subtitle(sweep.points[active]), height=500, margin=dict(t=125, b=10),
                         legend=dict(orientation="h", yanchor="bottom", y=1.07, x=0))
    return with_scrubber(figure, frames, active)


def scrubber_at(figure: dict, active: int) -> go.Figure:
    """``figure`` (a scrubber figure as a dict, e.g. ``valley_scrub_figure(...).to_dict()``) drawn
    at frame ``active`` instead: its moving traces and title from that frame, its slider there.
    Equal to building the figure at ``active``, in tens of milliseconds instead of half a second
    (the parts are not validated again; they were when the figure was built), so a page can keep
    one figure per sweep and still open the scrubber where its own slider stands. ``figure`` is
    only read."""
    frame = figure["frames"][active]
    data = list(frame["data"]) + list(figure["data"][len(frame["data"]):])
    slider = {**figure["layout"]["sliders"][0], "active": active}
    layout = {**figure["layout"], **frame.get("layout", {}), "sliders": [slider]}
    return go.Figure({"data": data, "layout": layout, "frames": figure["frames"]}, _validate=False)
