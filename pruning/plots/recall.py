"""Figures of the Recall page: relative recall gaps, the intensification ratio alpha over
sparsity, the change of the confusion matrix, the test images whose prediction flipped, and all
but the images along the whole sparsity slider in one figure scrubbed in the browser.
(``display_pixels`` also serves the Attributions page.)"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from pruning.analysis.recall import Intensification, relative_gaps
from pruning.plots.arrays import as_numpy
from pruning.plots.images import png_data_uri, translucent
from pruning.plots.palette import (
    DENSE_COLOUR,
    FIT_COLOUR,
    FLIP_COLOURS,
    GAP_COLOUR,
    OTHER_COLOURS,
    PRUNED_COLOUR,
    RECALL_METHOD_COLOURS,
)
from pruning.plots.scrub import frame_name, with_scrubber
from pruning.sparsity_sweep import SparsitySweep, SweepPoint

GAP_HOVER = "class %{text}<br>dense gap %{x:+.1f}%<br>pruned gap %{y:+.1f}%<extra></extra>"


def zero_lines(x_axis: str = "x", y_axis: str = "y") -> list[dict]:
    """The x = 0 and y = 0 lines of a subplot, across its whole width and height."""
    line = dict(color="black", width=1)
    return [dict(type="line", xref=f"{x_axis} domain", x0=0, x1=1, yref=y_axis, y0=0, y1=0, line=line),
            dict(type="line", xref=x_axis, x0=0, x1=0, yref=f"{y_axis} domain", y0=0, y1=1, line=line)]


def recall_gap_figure(class_names: list[str], d0, dt, alpha: float) -> go.Figure:
    """Each class's relative recall gap, dense (x) against pruned (y), in % of accuracy, with the
    y = x line (gaps unchanged), the zero lines (recall equal to accuracy) and the fitted slope
    through the origin: points moving away from zero along y mean intensification. (Built with its
    layout in one go: ``update_layout`` after the traces costs ten times as long.)"""
    x, y = 100 * as_numpy(d0, float).ravel(), 100 * as_numpy(dt, float).ravel()
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    reach = 1.15 * max(float(np.abs(finite).max()) if len(finite) else 0.0, 1.0)
    traces = [
        go.Scatter(x=[-reach, reach], y=[-reach, reach], mode="lines", name="y = x (gaps unchanged)",
                   line=dict(color=DENSE_COLOUR, dash="dot"), hoverinfo="skip"),
        go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers+text", name="class", text=list(class_names),
                   textposition="top center", marker=dict(color=GAP_COLOUR, size=9), hovertemplate=GAP_HOVER),
    ]
    if math.isfinite(alpha):
        traces.append(go.Scatter(x=[-reach, reach], y=[-alpha * reach, alpha * reach], mode="lines",
                                 name=f"fit through 0: slope α = {alpha:.2f}", line=dict(color=FIT_COLOUR),
                                 hoverinfo="skip"))
    return go.Figure(traces, layout=dict(
        title=dict(text="Recall gaps, dense against pruned"
                        "<br><sup>gap = recall / accuracy − 1; away from 0 beyond the dotted line: the gap grew</sup>"),
        xaxis=dict(title=dict(text="dense: recall / accuracy − 1 (%)"), range=[-reach, reach], zeroline=False),
        yaxis=dict(title=dict(text="pruned: recall / accuracy − 1 (%)"), range=[-reach, reach], zeroline=False,
                   scaleanchor="x", scaleratio=1),
        shapes=zero_lines(),
        height=440,
        margin=dict(t=70, b=10),
        legend=dict(orientation="h", y=-0.18, x=0.5, xanchor="center"),
    ))


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


def confusion_cells(dense_confusion, pruned_confusion) -> dict:
    """What a heatmap of the pruned minus dense confusion matrix needs: the change, its symmetric
    colour scale and the cells' labels (blank where nothing changed)."""
    change = as_numpy(pruned_confusion, int) - as_numpy(dense_confusion, int)
    reach = max(1, int(np.abs(change).max()))
    cells = change.tolist()
    return dict(z=cells, zmin=-reach, zmax=reach, text=[[f"{value:+d}" if value else "" for value in row] for row in cells])


def confusion_heatmap(class_names: list[str], dense_confusion, pruned_confusion) -> go.Heatmap:
    names = list(class_names)
    return go.Heatmap(
        **confusion_cells(dense_confusion, pruned_confusion), x=names, y=names, zmid=0, colorscale="RdBu_r",
        texttemplate="%{text}", colorbar=dict(title=dict(text="images", side="right"), thickness=12),
        hovertemplate="true %{y}, predicted %{x}<br>%{z:+d} images after pruning<extra></extra>",
    )


def confusion_change_figure(class_names: list[str], dense_confusion, pruned_confusion) -> go.Figure:
    """Pruned minus dense confusion matrix (rows: true class, columns: predicted), zero centred:
    red = more test images in the cell after pruning, blue = fewer. A blue diagonal cell is a
    class losing correct answers; the red cells of its row say where they went."""
    return go.Figure(confusion_heatmap(class_names, dense_confusion, pruned_confusion), layout=dict(
        title=dict(text="Confusion matrix change (pruned − dense)"
                        "<br><sup>red: more images after pruning, blue: fewer</sup>"),
        xaxis=dict(title=dict(text="predicted class"), type="category", side="bottom"),
        yaxis=dict(title=dict(text="true class"), type="category", autorange="reversed", scaleanchor="x"),
        height=460,
        margin=dict(t=70, b=10),
    ))


def display_pixels(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Standardised images (N, C, H, W) back to 0..255 RGB (N, H, W, 3) for display: un-standardised
    with the dataset's per-channel mean/std (each image stretched to its own range when they are
    unknown); one channel is repeated to grey. In numpy: on a busy machine torch's threaded kernels
    spent tens of milliseconds on these few small images."""
    x = images.detach().cpu().double().numpy()
    if mean and std:
        x = x * np.asarray(std, dtype=float).reshape(1, -1, 1, 1) + np.asarray(mean, dtype=float).reshape(1, -1, 1, 1)
    else:
        low = x.min(axis=(1, 2, 3), keepdims=True)
        x = (x - low) / np.maximum(x.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    x = np.clip(x, 0, 1)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return np.rint(255 * x[:, :3]).astype(np.uint8).transpose(0, 2, 3, 1)


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
    return go.Figure(go.Image(source=png_data_uri(mosaic), zsmooth=False, hoverinfo="skip"), layout=dict(
        title=dict(text="Test images whose prediction pruning changed (dense → pruned)"
                        "<br><sup>classes whose recall fell most first; red: lost, green: gained, grey: a different wrong answer</sup>"),
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=annotations,
        height=int(100 + 620 * mosaic.shape[0] / mosaic.shape[1]),  # about 620 px wide on the page
        margin=dict(t=90, b=10, l=10, r=10),
        plot_bgcolor="white",
        meta=dict(indices=[flip.index for flip in flips]),
    ))


# --- the whole slider in one figure, scrubbed in the browser ---

SHORT_VERDICTS = {"intensified": "gaps intensified (interval above 1)", "de-intensified": "gaps narrowed (interval below 1)",
                  "no clear change": "no clear change (interval contains 1)", "undefined": "α undefined"}
AXIS_STEPS = (1, 1.5, 2, 3, 5, 7.5, 10)
MOVING = (1, 2, 4, 6, 7, 11)  # the traces a frame redraws (see ``recall_scrub_figure``)


def finite_or_none(value) -> float | None:
    """A number for the figure's JSON: None (drawn as a gap) for NaN, infinities and None."""
    return None if value is None or not math.isfinite(value) else float(value)


def gap_reach(gaps: np.ndarray) -> float:
    """Half-width of the gap axes (%): 15% beyond the largest finite gap, rounded up to 1, 1.5, 2,
    3, 5 or 7.5 times a power of ten, so that neighbouring frames mostly share their axes."""
    finite = np.abs(gaps[np.isfinite(gaps)])
    need = 1.15 * max(float(finite.max()) if finite.size else 0.0, 1.0)
    power = 10.0 ** math.floor(math.log10(need))
    return next(step * power for step in AXIS_STEPS if step * power >= need - 1e-9)


def alpha_title(point: SweepPoint, dense_accuracy: float, classes: int) -> str:
    """A frame's title: α with its interval and verdict, the sparsity and both accuracies."""
    alpha, low, high = (math.nan if value is None else value for value in (point.alpha, point.ci_low, point.ci_high))
    verdict = Intensification(alpha, low, high, classes=classes, seeds=1).verdict
    shown = ("α undefined" if math.isnan(alpha) else f"α = {alpha:.2f}"
             + (f" (95% interval {low:.2f} to {high:.2f})" if math.isfinite(low) else ""))
    return (f"Recall along the slider: {shown} at {100 * point.sparsity:.1f}% sparsity"
            f"<br><sup>{SHORT_VERDICTS[verdict]} · pruned accuracy {100 * point.accuracy:.1f}% "
            f"(dense {100 * dense_accuracy:.1f}%) · drag the scrubber below: every frame was computed once</sup>")


def recall_scrub_figure(sweep: SparsitySweep, active: int) -> go.Figure:
    """The Recall page along the whole slider, one frame per grid sparsity of ``sweep``: each
    class's relative recall gap (dense against pruned, with the fitted slope through the origin and
    y = x), recall per class, the confusion matrix change and α against sparsity with the frame's
    point marked; α, its interval and the verdict in the title. Drawn at frame ``active``."""
    names, count = list(sweep.class_names), len(sweep.class_names)
    d0 = 100 * relative_gaps(sweep.dense_recall, sweep.dense_accuracy).ravel()
    gaps = [100 * relative_gaps(point.per_class_recall, point.accuracy).ravel() for point in sweep.points]
    widest = max(gap_reach(np.concatenate([d0, dt])) for dt in gaps)
    figure = make_subplots(rows=2, cols=2, horizontal_spacing=0.14, vertical_spacing=0.12, subplot_titles=(
        "Recall gaps (%): dotted y = x, red slope α", "Recall per class (%): dense grey, pruned red",
        "Confusion change: true (rows) × predicted", "α against sparsity (%), 95% band"))
    figure.update_annotations(font_size=13)
    positions = list(range(count))
    sparsities = [100 * point.sparsity for point in sweep.points]

    def moving(index: int) -> list:
        point, dt = sweep.points[index], gaps[index]
        alpha = finite_or_none(point.alpha)
        return [
            go.Scatter(x=[finite_or_none(value) for value in d0], y=[finite_or_none(value) for value in dt]),
            go.Scatter(y=[None, None] if alpha is None else [-alpha * widest, alpha * widest],
                       name="fit through 0: slope α" + ("" if alpha is None else f" = {alpha:.2f}")),
            go.Bar(y=[100 * value for value in point.per_class_recall]),
            go.Scatter(y=[100 * point.accuracy] * 2),
            go.Heatmap(**confusion_cells(sweep.dense_confusion, point.confusion)),
            go.Scatter(x=[sparsities[index]], y=[alpha]),
        ]

    def frame_layout(index: int) -> dict:
        reach = gap_reach(np.concatenate([d0, gaps[index]]))
        lowest = min(sweep.dense_recall + sweep.points[index].per_class_recall)
        return dict(title=dict(text=alpha_title(sweep.points[index], sweep.dense_accuracy, count)),
                    xaxis=dict(range=[-reach, reach]), yaxis=dict(range=[-reach, reach]),
                    yaxis2=dict(range=[max(0.0, 10 * math.floor((100 * lowest - 5) / 10)), 100]))

    start = moving(active)
    spanning = dict(mode="lines", x=[-widest, widest], hoverinfo="skip")
    ends = [-0.5, count - 0.5]
    traces = [  # (trace, row, col); the indices of MOVING are the frames' traces
        (go.Scatter(y=[-widest, widest], name="y = x (gaps unchanged)", line=dict(color=DENSE_COLOUR, dash="dot"),
                    **spanning), 1, 1),
        (start[0].update(mode="markers+text", name="class", text=names, textposition="top center", showlegend=False,
                         marker=dict(color=GAP_COLOUR, size=9), hovertemplate=GAP_HOVER), 1, 1),
        (start[1].update(line=dict(color=FIT_COLOUR), **spanning), 1, 1),
        (go.Bar(x=positions, y=[100 * value for value in sweep.dense_recall], name="dense", marker_color=DENSE_COLOUR,
                customdata=names, hovertemplate="class %{customdata}: %{y:.1f}%<extra>dense</extra>"), 1, 2),
        (start[2].update(x=positions, name="pruned", marker_color=PRUNED_COLOUR, customdata=names,
                         hovertemplate="class %{customdata}: %{y:.1f}%<extra>pruned</extra>"), 1, 2),
        (go.Scatter(x=ends, y=[100 * sweep.dense_accuracy] * 2, mode="lines", line=dict(color=DENSE_COLOUR, dash="dot"),
                    showlegend=False, name="dense accuracy", hovertemplate="dense accuracy %{y:.1f}%<extra></extra>"), 1, 2),
        (start[3].update(x=ends, mode="lines", line=dict(color=PRUNED_COLOUR, dash="dash"), showlegend=False,
                         name="pruned accuracy", hovertemplate="pruned accuracy %{y:.1f}%<extra></extra>"), 1, 2),
        (confusion_heatmap(names, sweep.dense_confusion, sweep.points[active].confusion), 2, 1),
        (go.Scatter(x=sparsities, y=[finite_or_none(point.ci_high) for point in sweep.points], mode="lines",
                    line=dict(width=0), showlegend=False, hoverinfo="skip"), 2, 2),
        (go.Scatter(x=sparsities, y=[finite_or_none(point.ci_low) for point in sweep.points], mode="lines",
                    line=dict(width=0), fill="tonexty", fillcolor=translucent(GAP_COLOUR, 0.18), showlegend=False,
                    hoverinfo="skip"), 2, 2),
        (go.Scatter(x=sparsities, y=[finite_or_none(point.alpha) for point in sweep.points], mode="lines",
                    line=dict(color=GAP_COLOUR), showlegend=False, name="α",
                    hovertemplate="sparsity %{x:.1f}%<br>α %{y:.2f}<extra></extra>"), 2, 2),
        (start[5].update(mode="markers", marker=dict(color=FIT_COLOUR, size=12, line=dict(color="white", width=2)),
                         showlegend=False, hovertemplate="this frame: α %{y:.2f}<extra></extra>"), 2, 2),
    ]
    for trace, row, col in traces:
        figure.add_trace(trace, row=row, col=col)
    x3, y3 = figure.layout.xaxis3.domain, figure.layout.yaxis3.domain
    figure.update_traces(colorbar=dict(x=x3[1] + 0.01, y=(y3[0] + y3[1]) / 2, len=y3[1] - y3[0]),
                         selector=dict(type="heatmap"))
    alphas = [value for value in (finite_or_none(point.alpha) for point in sweep.points) if value is not None] or [1.0]
    low, high = min(0.0, *alphas), max(2.0, *alphas)
    figure.update_layout(
        frame_layout(active), height=920, margin=dict(t=110, b=10), barmode="group", showlegend=False,
        shapes=zero_lines("x", "y") + [dict(type="line", xref="x4 domain", x0=0, x1=1, yref="y4", y0=1, y1=1,
                                            line=dict(color="black", dash="dash", width=1))],
        xaxis=dict(title=dict(text="dense gap (%)"), zeroline=False),
        yaxis=dict(title=dict(text="pruned gap (%)"), zeroline=False),
        xaxis2=dict(tickvals=positions, ticktext=names, title=dict(text="class")),
        xaxis3=dict(type="category"),  # no titles under the lower row: the scrubber's label sits there
        yaxis3=dict(type="category", autorange="reversed", title=dict(text="true class")),
        xaxis4=dict(range=[0, 100], dtick=20),
        yaxis4=dict(range=[low - 0.1 * (high - low), high + 0.1 * (high - low)]),
    )
    frames = [go.Frame(name=frame_name(point.target), data=moving(index), traces=list(MOVING),
                       layout=frame_layout(index)) for index, point in enumerate(sweep.points)]
    return with_scrubber(figure, frames, active)
