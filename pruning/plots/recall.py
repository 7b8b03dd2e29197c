"""Figures of the Recall page: relative recall gaps, the intensification ratio alpha over
sparsity, the change of the confusion matrix and the test images whose prediction flipped.
(``display_pixels`` also serves the Attributions page.)"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch

from pruning.plots.palette import (
    DENSE_COLOUR,
    FIT_COLOUR,
    FLIP_COLOURS,
    GAP_COLOUR,
    OTHER_COLOURS,
    RECALL_METHOD_COLOURS,
)


def recall_gap_figure(class_names: list[str], d0, dt, alpha: float) -> go.Figure:
    """Each class's relative recall gap, dense (x) against pruned (y), in % of accuracy, with the
    y = x line (gaps unchanged), the zero lines (recall equal to accuracy) and the fitted slope
    through the origin: points moving away from zero along y mean intensification."""
    x, y = 100 * np.asarray(d0, dtype=float).ravel(), 100 * np.asarray(dt, dtype=float).ravel()
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    reach = 1.15 * max(float(np.abs(finite).max()) if len(finite) else 0.0, 1.0)
    traces = [
        go.Scatter(x=[-reach, reach], y=[-reach, reach], mode="lines", name="y = x (gaps unchanged)",
                   line=dict(color=DENSE_COLOUR, dash="dot"), hoverinfo="skip"),
        go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers+text", name="class", text=list(class_names),
                   textposition="top center", marker=dict(color=GAP_COLOUR, size=9),
                   hovertemplate="class %{text}<br>dense gap %{x:+.1f}%<br>pruned gap %{y:+.1f}%<extra></extra>"),
    ]
    if math.isfinite(alpha):
        traces.append(go.Scatter(x=[-reach, reach], y=[-alpha * reach, alpha * reach], mode="lines",
                                 name=f"fit through 0: slope α = {alpha:.2f}", line=dict(color=FIT_COLOUR),
                                 hoverinfo="skip"))
    figure = go.Figure(traces)
    figure.add_hline(y=0, line_color="black", line_width=1)
    figure.add_vline(x=0, line_color="black", line_width=1)
    figure.update_layout(
        title=dict(text="Recall gaps, dense against pruned"
                        "<br><sup>gap = recall / accuracy − 1; away from 0 beyond the dotted line: the gap grew</sup>"),
        xaxis=dict(title="dense: recall / accuracy − 1 (%)", range=[-reach, reach], zeroline=False),
        yaxis=dict(title="pruned: recall / accuracy − 1 (%)", range=[-reach, reach], zeroline=False,
                   scaleanchor="x", scaleratio=1),
        height=440,
        margin=dict(t=70, b=10),
        legend=dict(orientation="h", y=-0.18, x=0.5, xanchor="center"),
    )
    return figure


def alpha_sparsity_figure(curves: dict[str, list[dict]]) -> go.Figure:
    """The intensification ratio α against sparsity, one line per method, its bootstrap interval
    as error bars, and α = 1 (gaps unchanged) as a line."""
    others = iter(OTHER_COLOURS * 4)
    traces = []
    for method, rows in curves.items():
        colour = RECALL_METHOD_COLOURS.get(method) or next(others)
        finite = [row for row in rows if math.isfinite(row["alpha"])]
        traces.append(go.Scatter(
            x=[100 * row["sparsity"] for row in finite], y=[row["alpha"] for row in finite], name=method,
            mode="lines+markers", line=dict(color=colour),
            error_y=dict(type="data", symmetric=False,
                         array=[row["ci_high"] - row["alpha"] if math.isfinite(row["ci_high"]) else 0 for row in finite],
                         arrayminus=[row["alpha"] - row["ci_low"] if math.isfinite(row["ci_low"]) else 0 for row in finite]),
            customdata=[[100 * row["accuracy"], row["ci_low"], row["ci_high"]] for row in finite],
            hovertemplate=f"{method}<br>sparsity %{{x:.1f}}%<br>α %{{y:.2f}} "
                          "[%{customdata[1]:.2f}, %{customdata[2]:.2f}]<br>accuracy %{customdata[0]:.1f}%<extra></extra>",
        ))
    figure = go.Figure(traces)
    figure.add_hline(y=1, line_dash="dash", line_color="black", annotation_text="α = 1: gaps unchanged",
                     annotation_position="bottom left")
    figure.update_layout(
        title=dict(text="Intensification ratio α against sparsity"
                        "<br><sup>above 1: pruning widens the gaps between classes; bars: 95% bootstrap interval</sup>"),
        xaxis_title="sparsity (% of prunable weights removed)",
        yaxis_title="α (slope of pruned gaps on dense gaps)",
        height=380,
        margin=dict(t=70, b=10),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
    )
    return figure


def confusion_change_figure(class_names: list[str], dense_confusion, pruned_confusion) -> go.Figure:
    """Pruned minus dense confusion matrix (rows: true class, columns: predicted), zero centred:
    red = more test images in the cell after pruning, blue = fewer. A blue diagonal cell is a
    class losing correct answers; the red cells of its row say where they went."""
    change = np.asarray(pruned_confusion, dtype=int) - np.asarray(dense_confusion, dtype=int)
    reach = max(1, int(np.abs(change).max()))
    names = list(class_names)
    figure = go.Figure(go.Heatmap(
        z=change.tolist(), x=names, y=names, zmid=0, zmin=-reach, zmax=reach, colorscale="RdBu_r",
        text=[[f"{value:+d}" if value else "" for value in row] for row in change.tolist()], texttemplate="%{text}",
        colorbar=dict(title=dict(text="images", side="right"), thickness=12),
        hovertemplate="true %{y}, predicted %{x}<br>%{z:+d} images after pruning<extra></extra>",
    ))
    figure.update_layout(
        title=dict(text="Confusion matrix change (pruned − dense)"
                        "<br><sup>red: more images after pruning, blue: fewer</sup>"),
        xaxis=dict(title="predicted class", type="category", side="bottom"),
        yaxis=dict(title="true class", type="category", autorange="reversed", scaleanchor="x"),
        height=460,
        margin=dict(t=70, b=10),
    )
    return figure


def display_pixels(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Standardised images (N, C, H, W) back to 0..255 RGB (N, H, W, 3) for display: un-standardised
    with the dataset's per-channel mean/std (each image stretched to its own range when they are
    unknown); one channel is repeated to grey."""
    x = images.detach().cpu().double()
    if mean and std:
        x = x * torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1) + torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    else:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp(min=1e-12)
    x = x.clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return (255 * x[:, :3]).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def flipped_images_figure(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], flips,
                          class_names: list[str], columns: int = 8) -> go.Figure:
    """A grid of the test images whose prediction pruning changed (``flips``: objects with
    ``index, label, dense, pruned``), each titled "dense → pruned" over its true class; red titles
    are images pruning got wrong that the dense model got right, green ones the reverse. One image
    trace of the tiles laid out side by side: one subplot per image would take ten times as long."""
    flips = list(flips)
    rows = max(1, math.ceil(len(flips) / columns))
    height, width = images.shape[-2:]
    gap, headroom = max(2, width // 5), max(8, int(0.9 * height))  # pixels between tiles, above each for its title
    cell_w, cell_h = width + gap, height + headroom
    mosaic = np.full((rows * cell_h, columns * cell_w - gap, 3), 255, dtype=np.uint8)
    annotations = []
    pixels = display_pixels(images[[flip.index for flip in flips]], mean, std) if flips else []
    for position, (flip, picture) in enumerate(zip(flips, pixels)):
        top, left = (position // columns) * cell_h + headroom, (position % columns) * cell_w
        mosaic[top : top + height, left : left + width] = picture
        annotations.append(dict(
            x=left + (width - 1) / 2, y=top - 0.5, xref="x", yref="y", yanchor="bottom", showarrow=False,
            text=f"<span style='color:{FLIP_COLOURS[flip.kind]}'>"
                 f"{class_names[flip.dense]} → {class_names[flip.pruned]}</span>"
                 f"<br><span style='font-size:10px'>true {class_names[flip.label]}</span>",
            font=dict(size=12),
        ))
    figure = go.Figure(go.Image(z=mosaic, hoverinfo="skip"))
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_layout(
        title=dict(text="Test images whose prediction pruning changed (dense → pruned)"
                        "<br><sup>classes whose recall fell most first; red: lost, green: gained, grey: a different wrong answer</sup>"),
        annotations=annotations,
        height=int(100 + 620 * mosaic.shape[0] / mosaic.shape[1]),  # about 620 px wide on the page
        margin=dict(t=90, b=10, l=10, r=10),
        plot_bgcolor="white",
        meta=dict(indices=[flip.index for flip in flips]),
    )
    return figure
