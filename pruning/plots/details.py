"""Figures of a method's own numbers (``PruneResult.details``): the per-layer allocation of a
one-shot cut, and how SparseGPT's reconstruction moved the surviving weights."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.plots.palette import DENSE_COLOUR, MEASURE_COLOUR, PRUNED_COLOUR


def allocation_figure(layer_targets: dict[str, float], groups: str = "weights") -> go.Figure:
    """Each layer's pruned fraction of its groups as the allocation chose it."""
    names = [name.removesuffix(".weight") for name in layer_targets]
    values = [100 * value for value in layer_targets.values()]
    figure = go.Figure(go.Bar(x=names, y=values, marker_color=PRUNED_COLOUR,
                              text=[f"{value:.1f}%" for value in values], textposition="outside",
                              hovertemplate="%{x}: %{y:.2f}% of its " + groups + " pruned<extra></extra>"))
    figure.update_layout(height=300, margin=dict(t=30, b=10), yaxis=dict(title=f"{groups} pruned (%)", range=[0, 110]),
                         title="Per-layer targets of the allocation")
    return figure


def movement_labels(edges: tuple[float, ...]) -> list[str]:
    """Labels of the bins between consecutive log10 ``edges``; the end bins also hold what lies beyond."""
    labels = [f"1e{low:g} to 1e{high:g}" for low, high in zip(edges, edges[1:])]
    return [f"< 1e{edges[1]:g}", *labels[1:-1], f">= 1e{edges[-2]:g}"]


def sparsegpt_figure(reconstruction: dict[str, float], masked: dict[str, float], edges: tuple[float, ...],
                     counts: dict[str, list[int]]) -> go.Figure:
    """Left: each layer's output error with the weight update and with the mask alone (what the
    reconstruction recovered). Right: how far the surviving weights moved, |W_hat - W| / |W|,
    a histogram over half decades, one trace per layer."""
    figure = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.12,
                           subplot_titles=("Layer-output error ||WX - ŴX||² / ||WX||²",
                                           "How far surviving weights moved, |Ŵ - W| / |W|"))
    names = [name.removesuffix(".weight") for name in reconstruction]
    figure.add_trace(go.Bar(x=names, y=list(masked.values()), name="mask alone", marker_color=DENSE_COLOUR), 1, 1)
    figure.add_trace(go.Bar(x=names, y=list(reconstruction.values()), name="with the update", marker_color=PRUNED_COLOUR),
                     1, 1)
    labels = movement_labels(edges)
    for name, layer_counts in counts.items():
        total = max(sum(layer_counts), 1)
        figure.add_trace(go.Scatter(x=labels[:len(layer_counts)], y=[100 * count / total for count in layer_counts],
                                    mode="lines+markers", name=name.removesuffix(".weight"),
                                    hovertemplate="%{x}: %{y:.1f}% of the layer's kept weights<extra></extra>"), 1, 2)
    figure.update_yaxes(title_text="relative error", type="log", row=1, col=1)
    figure.update_yaxes(title_text="% of kept weights", row=1, col=2)
    figure.update_xaxes(tickangle=-40, row=1, col=2)
    figure.update_layout(height=380, barmode="group", margin=dict(t=50, b=10), legend=dict(font=dict(size=10)))
    figure.update_traces(selector=dict(type="bar"), marker_line_color=MEASURE_COLOUR, marker_line_width=0.5)
    return figure
