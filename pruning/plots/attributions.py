"""Figures of the Attributions page: input attribution maps of the dense and the pruned model,
channel attributions per layer, attribution per class and channel, and each class's reliance on
the channels pruning removed against the recall it lost."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.plots.arrays import as_numpy
from pruning.plots.palette import (
    ATTRIBUTION_KEPT_COLOUR,
    DENSE_COLOUR,
    PRUNED_COLOUR,
    REMOVED_STRIP_COLOURSCALE,
)


def _fmt(value: float, digits: int = 2) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.{digits}f}"


def input_attribution_figure(pixels: np.ndarray, maps: dict[str, dict[str, np.ndarray]], row_labels: list[str],
                             signed: tuple[str, ...] = ("integrated-gradients",)) -> go.Figure:
    """One row per image: the image, then for each input attribution method (``maps``:
    ``{method: {"dense": (N, H, W), "pruned": (N, H, W)}}``) the dense and the pruned model's map
    side by side on one colour scale per row and method, so they compare by eye. Signed methods
    (integrated gradients) are red for pixels that raise the target logit and blue for those that
    lower it, around 0; unsigned ones (saliency) dark to bright. The grid's axes are laid out by
    hand: ``make_subplots`` took most of a slider move's time."""
    rows = max(len(pixels), 1)
    columns = ["image"] + [f"{method}, {model}" for method in maps for model in ("dense", "pruned")]
    short = {"integrated-gradients": "IG"}
    headings = ["image"] + [f"{short.get(method, method)}, {model}" for method in maps for model in ("dense", "pruned")]
    cols, traces, layout, annotations = len(columns), [], {}, []
    for row in range(len(pixels)):
        for col in range(cols):
            number = row * cols + col + 1
            suffix = "" if number == 1 else str(number)
            layout[f"xaxis{suffix}"] = dict(domain=[col / cols + 0.004, (col + 1) / cols - 0.004], anchor=f"y{suffix}",
                                            visible=False)
            layout[f"yaxis{suffix}"] = dict(domain=[1 - (row + 1) / rows + 0.012, 1 - row / rows - 0.012],
                                            anchor=f"x{suffix}", scaleanchor=f"x{suffix}", autorange="reversed",
                                            showticklabels=False, ticks="", showgrid=False, zeroline=False,
                                            title=dict(text=row_labels[row], font=dict(size=11)) if col == 0 else None)
        traces.append(go.Image(z=pixels[row], hoverinfo="skip", xaxis="x" if row == 0 else f"x{row * cols + 1}",
                               yaxis="y" if row == 0 else f"y{row * cols + 1}"))
        col = 1
        for method, pair in maps.items():
            is_signed = method in signed
            pair = {model: as_numpy(pair[model][row], np.float32) for model in ("dense", "pruned")}
            reach = max(float(np.abs(pair["dense"]).max()), float(np.abs(pair["pruned"]).max()))
            reach = reach if reach > 0 else 1.0
            for model in ("dense", "pruned"):
                suffix = str(row * cols + col + 1)
                traces.append(go.Heatmap(
                    z=pair[model], showscale=False, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                    colorscale="RdBu_r" if is_signed else "Viridis",
                    zmin=-reach if is_signed else 0.0, zmax=reach, zmid=0.0 if is_signed else None,
                    hovertemplate=f"{method}, {model}<br>row %{{y}}, column %{{x}}<br>%{{z:.3g}}<extra></extra>",
                ))
                col += 1
    for col, text in enumerate(headings):
        annotations.append(dict(text=text, x=(col + 0.5) / cols, y=1.0, xref="paper", yref="paper", yanchor="bottom",
                                showarrow=False, font=dict(size=12)))
    figure = go.Figure(traces, layout=layout)
    figure.update_layout(
        title=dict(text="Input attributions, dense and pruned"
                        "<br><sup>IG (integrated gradients): red raises the target logit, blue lowers it; saliency: "
                        "|gradient|; one colour scale per row and method</sup>"),
        annotations=annotations, height=int(110 + 150 * rows), margin=dict(t=110, b=10, l=10, r=10),
        plot_bgcolor="white", meta=dict(columns=columns, rows=len(pixels)),
    )
    return figure


def channel_attribution_figure(layers: dict[str, tuple[np.ndarray, np.ndarray]], method: str) -> go.Figure:
    """Per layer (``{layer: (attribution per channel, removed per channel)}``), every output
    channel's attribution as a bar, highest first, red where pruning removed the channel: removed
    channels on the left of a panel are ones the attribution says mattered."""
    names = list(layers)
    figure = make_subplots(rows=max(len(names), 1), cols=1, subplot_titles=names,
                           vertical_spacing=min(0.3 / len(names), 0.1) if len(names) > 1 else 0)
    meta, in_legend = {}, set()
    for row, name in enumerate(names, start=1):
        values, removed = (as_numpy(part) for part in layers[name])
        order = np.argsort(-values, kind="stable")
        rank = np.arange(1, len(values) + 1)
        for is_removed, label, colour in ((False, "kept", ATTRIBUTION_KEPT_COLOUR),
                                          (True, "removed by pruning", PRUNED_COLOUR)):
            chosen = removed[order] == is_removed
            first = bool(chosen.any()) and label not in in_legend  # an empty trace never shows in the legend
            in_legend |= {label} if first else set()
            figure.add_trace(go.Bar(
                x=rank[chosen].tolist(), y=values[order][chosen].tolist(), name=label, marker_color=colour,
                marker_line_width=0, legendgroup=label, showlegend=first, customdata=order[chosen].tolist(),
                hovertemplate=f"{name}, channel %{{customdata}}<br>rank %{{x}}<br>attribution %{{y:.3g}}<extra>{label}</extra>",
            ), row=row, col=1)
        if row == len(names):
            figure.update_xaxes(title_text="channel, by attribution (highest first)", row=row, col=1)
        figure.update_yaxes(title_text="|attribution|", rangemode="tozero", row=row, col=1)
        meta[name] = {"channels": len(values), "removed": int(removed.sum())}
    figure.update_layout(
        title=dict(text=f"Channel attributions per layer ({method})"
                        "<br><sup>mean |attribution| to the target logit over the chosen images, dense model; "
                        "red: channels pruning removed</sup>"),
        bargap=0.05, barmode="overlay", height=int(90 + 230 * max(len(names), 1)), margin=dict(t=100, b=10),
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"), meta=meta,
    )
    return figure


def class_channel_figure(layer: str, matrix: np.ndarray, removed: np.ndarray, class_names: list[str]) -> go.Figure:
    """A layer's class x channel attribution matrix, each class's row as shares of its total (so
    classes compare), channels ordered by their mean share, highest first; a strip on top marks
    the channels pruning removed."""
    matrix = as_numpy(matrix, float)
    totals = matrix.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, 100 * matrix / totals, np.nan)
    order = np.argsort(-np.nan_to_num(np.nanmean(shares, axis=0) if np.isfinite(shares).any() else np.zeros(matrix.shape[1])),
                       kind="stable")
    removed = as_numpy(removed, bool)[order]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.07, 0.93], vertical_spacing=0.02)
    figure.add_trace(go.Heatmap(z=[removed.astype(int).tolist()], colorscale=REMOVED_STRIP_COLOURSCALE,
                                zmin=0, zmax=1, showscale=False, y=["removed"], customdata=[order.tolist()],
                                hovertemplate="channel %{customdata}<br>removed: %{z}<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Heatmap(
        z=np.round(shares[:, order], 4).tolist(), y=list(class_names), colorscale="Viridis", customdata=[order.tolist()] * len(shares),
        colorbar=dict(title=dict(text="% of class", side="right"), thickness=12, y=0.45, len=0.9),
        hovertemplate="class %{y}, channel %{customdata}<br>%{z:.2f}% of the class's attribution<extra></extra>",
    ), row=2, col=1)
    figure.update_xaxes(showticklabels=False, row=1, col=1)
    figure.update_xaxes(title_text="channel, by mean share (highest first)", showticklabels=False, row=2, col=1)
    figure.update_yaxes(type="category", autorange="reversed", title_text="class", row=2, col=1)
    figure.update_layout(
        title=dict(text=f"Attribution per class and channel: {layer}"
                        "<br><sup>each row: the share of that class's attribution on each channel; top strip: removed channels</sup>"),
        height=440, margin=dict(t=90, b=10), meta=dict(removed=int(removed.sum()), channels=len(removed)),
    )
    return figure


def class_reliance_figure(class_names: list[str], reliance, recall_loss, pearson: float, spearman: float) -> go.Figure:
    """Each class's reliance on the removed channels (the share of its attribution they carried)
    against the recall it lost to pruning, with the least-squares line and both correlations in
    the title: a rising cloud says attribution predicts which classes pay."""
    x = 100 * as_numpy(reliance, float)
    y = 100 * as_numpy(recall_loss, float)
    traces = [go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers+text", text=list(class_names), textposition="top center",
                         marker=dict(color=PRUNED_COLOUR, size=10), name="class",
                         hovertemplate="class %{text}<br>attribution on removed channels %{x:.1f}%<br>"
                                       "recall lost %{y:+.1f} pts<extra></extra>")]
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() >= 2 and np.ptp(x[finite]) > 0:
        slope, intercept = np.polyfit(x[finite], y[finite], 1)
        ends = np.array([x[finite].min(), x[finite].max()])
        traces.append(go.Scatter(x=ends.tolist(), y=(slope * ends + intercept).tolist(), mode="lines", name="least-squares line",
                                 line=dict(color=DENSE_COLOUR, dash="dash"), hoverinfo="skip"))
    figure = go.Figure(traces)
    figure.add_hline(y=0, line_color="black", line_width=1)
    figure.update_layout(
        title=dict(text="Reliance on removed channels against recall loss"
                        f"<br><sup>Pearson r = {_fmt(pearson)}, Spearman ρ = {_fmt(spearman)} over {int(finite.sum())} classes</sup>"),
        xaxis_title="attribution on removed channels (% of the class's, mean over layers)",
        yaxis_title="recall lost (dense − pruned, pts)", height=420, margin=dict(t=80, b=10),
        legend=dict(orientation="h", y=-0.2, x=0.5, xanchor="center"),
        meta=dict(pearson=None if not math.isfinite(pearson) else pearson,
                  spearman=None if not math.isfinite(spearman) else spearman),
    )
    return figure
