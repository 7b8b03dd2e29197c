"""Patterns made legible: a zoom onto the first N:M groups of a layer's rows, weight by weight, with
how many weights every group of M keeps, and a transformer's attention heads as a grid."""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from pruning.masks import Mask
from pruning.plots.palette import BOUNDARY_COLOUR, MASK_COLOURSCALE, MASK_KEPT_COLOUR
from pruning.vit import attention_layers, head_rows

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


def head_kept_fractions(model: nn.Module, mask: Mask) -> tuple[list[str], list[list[float]]]:
    """Per attention module and head, the kept fraction of the head's weights (its q, k, v rows and
    its output-projection columns); 1.0 where the mask does not touch them."""
    names, grid = [], []
    for name, attention in attention_layers(model).items():
        row = []
        for head in range(attention.num_heads):
            rows = head_rows(attention, head)
            kept = total = 0
            for part in ("q", "k", "v", "proj"):
                keep = mask.get(f"{name}.{part}.weight")
                weight = getattr(attention, part).weight
                piece = (keep if keep is not None else torch.ones_like(weight, dtype=torch.bool))
                piece = piece[:, rows] if part == "proj" else piece[rows]
                kept, total = kept + int(piece.sum()), total + piece.numel()
            row.append(kept / total)
        names.append(name)
        grid.append(row)
    return names, grid


def head_grid_figure(model: nn.Module, mask: Mask) -> go.Figure:
    """Blocks x heads: each cell a head, shaded by the kept fraction of its weights (0: removed)."""
    names, grid = head_kept_fractions(model, mask)
    figure = go.Figure(go.Heatmap(
        z=grid, x=[f"head {head}" for head in range(len(grid[0]))], y=[name.removesuffix(".attention") for name in names],
        zmin=0, zmax=1, colorscale=MASK_COLOURSCALE, xgap=3, ygap=3, text=[[f"{100 * value:.0f}%" for value in row] for row in grid],
        texttemplate="%{text}", colorbar=dict(title="kept"),
        hovertemplate="%{y}, %{x}: %{z:.1%} of its q, k, v rows and projection columns kept<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=80 + 50 * len(names), margin=dict(t=40, b=10), title="Attention heads",
                         meta={"grid": grid})
    return figure
