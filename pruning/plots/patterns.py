"""N:M patterns made legible: a zoom onto the first groups of a layer's rows, weight by weight, and
how many weights every group of M keeps across the whole layer."""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from pruning.plots.palette import BOUNDARY_COLOUR, MASK_COLOURSCALE, MASK_KEPT_COLOUR

ZOOM_ROWS, ZOOM_GROUPS = 8, 8


def group_counts(keep: torch.Tensor, m: int) -> list[int]:
    """How many groups of M consecutive weights of a row keep 0, 1, ..., M weights (rows that do not
    divide into groups of M: their whole groups only)."""
    rows = keep.flatten(1)
    whole = rows[:, : rows.shape[1] // m * m].reshape(rows.shape[0], -1, m)
    return torch.bincount(whole.sum(-1).flatten(), minlength=m + 1).tolist()


def nm_zoom_figure(layer: str, keep: torch.Tensor, weight: torch.Tensor, m: int) -> go.Figure:
    """Left: the first rows x groups of the layer, each cell a weight (dark kept, light pruned, its
    value in the hover), group boundaries drawn. Right: the count of groups by weights kept."""
    rows = keep.flatten(1)[:ZOOM_ROWS, : ZOOM_GROUPS * m].float()
    values = weight.detach().flatten(1)[:ZOOM_ROWS, : ZOOM_GROUPS * m]
    counts = group_counts(keep, m)
    figure = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35], horizontal_spacing=0.1,
                           subplot_titles=(f"{layer}: first {rows.shape[0]} rows x {rows.shape[1] // m} groups of {m}",
                                           f"Groups of {m} by weights kept"))
    figure.add_trace(go.Heatmap(z=rows.tolist(), customdata=values.tolist(), zmin=0, zmax=1, showscale=False, xgap=1, ygap=1,
                                colorscale=MASK_COLOURSCALE,
                                hovertemplate="row %{y}, input %{x}: weight %{customdata:.4f}<extra></extra>"), 1, 1)
    for boundary in range(1, rows.shape[1] // m):
        figure.add_vline(x=boundary * m - 0.5, line_color=BOUNDARY_COLOUR, line_width=2, row=1, col=1)
    figure.add_trace(go.Bar(x=[str(kept) for kept in range(m + 1)], y=counts, marker_color=MASK_KEPT_COLOUR,
                            text=[f"{count:,}" for count in counts], textposition="outside",
                            hovertemplate="%{y:,} groups keep %{x} of " + str(m) + "<extra></extra>"), 1, 2)
    figure.update_yaxes(autorange="reversed", title_text="output row", row=1, col=1)
    figure.update_xaxes(title_text="input (weight index in the row)", row=1, col=1)
    figure.update_xaxes(title_text="weights kept in the group", row=1, col=2)
    figure.update_yaxes(title_text="groups", row=1, col=2)
    figure.update_layout(height=340, margin=dict(t=50, b=10), showlegend=False, meta={"counts": counts})
    return figure
