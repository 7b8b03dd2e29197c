"""Figures and table rows of the Sensitivity page: the layer x class heatmap of recall lost with one
layer pruned, the accuracy curves per layer (Distiller's sensitivity plot), and the per-layer
sparsities of the suggested allocation beside the uniform and global ones."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from pruning.layer_scan import LayerScan
from pruning.plots.palette import BLUE, DENSE_COLOUR, MODEL_MARKER_LINE_COLOUR, ORANGE, OTHER_COLOURS

ALLOCATION_COLOURS = {"sensitivity": BLUE, "layerwise": DENSE_COLOUR, "global": ORANGE}
LAYER_DASHES = ("solid", "dash", "dot", "dashdot")  # a second colour cycle for models with many layers
HEATMAP_HOVER = ("layer %{y}<br>class %{x}<br>recall lost %{z:+.1f} pts<br>"
                 "dense %{customdata[0]:.1f}% → pruned %{customdata[1]:.1f}%<extra></extra>")


def percent(value: float) -> str:
    """A sparsity as the page writes it: 90%, 97.5%."""
    return f"{100 * value:.4g}%"


def panel_height(scan: LayerScan) -> int:
    """The heatmap's and the curves' height (drawn side by side): room for every layer's row."""
    return max(380, 190 + 42 * len(scan.layers))


def recall_lost_points(scan: LayerScan, index: int) -> list[list[float]]:
    """Per (layer, class) at ``scan.sparsities[index]``: dense recall minus pruned recall, in points."""
    return [[100 * lost for lost in row] for row in scan.recall_lost(index)]


def recall_lost_figure(scan: LayerScan, index: int, class_names: list[str]) -> go.Figure:
    """Rows the layers, columns the classes: how many recall points each class loses when that layer
    alone is pruned at ``scan.sparsities[index]``. Zero is white; red is recall lost, blue recall
    gained (pruning one layer can help a class), on a scale symmetric about zero."""
    z = recall_lost_points(scan, index)
    reach = max([abs(value) for row in z for value in row] + [1.0])
    pruned = [[100 * value for value in rows[index]] for rows in scan.recall]
    customdata = [[[100 * dense, after] for dense, after in zip(scan.dense_recall, row)] for row in pruned]
    heatmap = go.Heatmap(
        z=z, x=list(class_names), y=list(scan.layers), customdata=customdata, zmid=0, zmin=-reach, zmax=reach,
        colorscale="RdBu_r", hovertemplate=HEATMAP_HOVER, texttemplate="%{z:.1f}", textfont=dict(size=11),
        colorbar=dict(title=dict(text="points"), thickness=12), xgap=1, ygap=1,
    )
    return go.Figure([heatmap], layout=dict(
        title=dict(text=f"Recall lost per layer and class, one layer pruned to {percent(scan.sparsities[index])}"
                        "<br><sup>dense recall − pruned recall (points); red: the class lost recall, blue: it gained</sup>"),
        xaxis=dict(title=dict(text="class"), type="category", side="bottom"),
        yaxis=dict(title=dict(text="layer pruned (the others dense)"), type="category", autorange="reversed"),
        height=panel_height(scan),
        margin=dict(t=80, b=10),
    ))


def sensitivity_curves_figure(scan: LayerScan, chosen: float | None = None) -> go.Figure:
    """Test accuracy against sparsity with one layer pruned at a time, one line per layer, the dense
    accuracy dashed and the chosen sparsity dotted: the layers whose line falls first are the
    sensitive ones."""
    x = [100 * sparsity for sparsity in scan.sparsities]
    traces = []
    for number, (layer, row) in enumerate(zip(scan.layers, scan.accuracy)):
        colour = OTHER_COLOURS[number % len(OTHER_COLOURS)]
        dash = LAYER_DASHES[(number // len(OTHER_COLOURS)) % len(LAYER_DASHES)]
        traces.append(go.Scatter(
            x=x, y=[100 * value for value in row], name=layer, mode="lines+markers", line=dict(color=colour, dash=dash),
            hovertemplate=f"{layer}<br>%{{x:.4g}}% pruned<br>accuracy %{{y:.2f}}%<extra></extra>"))
    dense = 100 * scan.dense_accuracy
    traces.append(go.Scatter(x=[min(x), max(x)] if x else [], y=[dense, dense] if x else [], mode="lines",
                             name=f"dense ({dense:.2f}%)", line=dict(color=DENSE_COLOUR, dash="dash"), hoverinfo="skip"))
    shapes = []
    if chosen is not None:
        shapes.append(dict(type="line", xref="x", x0=100 * chosen, x1=100 * chosen, yref="y domain", y0=0, y1=1,
                           line=dict(color=MODEL_MARKER_LINE_COLOUR, dash="dot")))
    return go.Figure(traces, layout=dict(
        title=dict(text="Accuracy with one layer pruned"
                        "<br><sup>each line prunes one layer, the others dense; nothing retrained</sup>"),
        xaxis=dict(title=dict(text="sparsity of that layer (%)")),
        yaxis=dict(title=dict(text="test accuracy (%)")),
        shapes=shapes,
        height=panel_height(scan),
        margin=dict(t=80, b=10),
        legend=dict(orientation="h", y=-0.22, x=0.5, xanchor="center", yanchor="top"),
    ))


def scan_rows(scan: LayerScan, index: int, class_names: list[str]) -> list[dict]:
    """The page's table: per layer its weights, accuracy (%) and loss at each scanned sparsity, and
    the class that loses most recall when it alone is pruned at ``scan.sparsities[index]``."""
    lost = recall_lost_points(scan, index)
    rows = []
    for number, layer in enumerate(scan.layers):
        row = {"layer": layer, "weights": scan.params[layer]}
        row.update({f"accuracy at {percent(s)}": 100 * value for s, value in zip(scan.sparsities, scan.accuracy[number])})
        row.update({f"loss at {percent(s)}": value for s, value in zip(scan.sparsities, scan.loss[number])})
        worst = max(range(len(class_names)), key=lambda c: lost[number][c])
        chosen = percent(scan.sparsities[index])
        row[f"worst class at {chosen}"] = class_names[worst]
        row[f"its recall lost at {chosen} (pts)"] = lost[number][worst]
        rows.append(row)
    return rows


def allocation_rows(params: dict[str, int], targets: dict[str, dict[str, float]]) -> list[dict]:
    """Per layer, its weights and the % of its groups each allocation prunes (``targets[allocation][layer]``)."""
    return [{"layer": layer, "weights": count,
             **{f"{allocation} (% pruned)": 100 * layers[layer] for allocation, layers in targets.items()}}
            for layer, count in params.items()]


def allocation_figure(targets: dict[str, dict[str, float]], accuracies: dict[str, float], sparsity: float) -> go.Figure:
    """The % of each layer's groups every allocation prunes at the same overall ``sparsity``, the
    test accuracy it reaches in the legend, and the overall sparsity as a dotted line."""
    traces = []
    for allocation, layers in targets.items():
        accuracy = accuracies.get(allocation, math.nan)
        traces.append(go.Bar(
            x=list(layers), y=[100 * value for value in layers.values()], name=f"{allocation}: accuracy {100 * accuracy:.2f}%",
            marker=dict(color=ALLOCATION_COLOURS.get(allocation, OTHER_COLOURS[len(traces) % len(OTHER_COLOURS)])),
            hovertemplate=f"{allocation}<br>%{{x}}<br>%{{y:.2f}}% pruned<extra></extra>"))
    return go.Figure(traces, layout=dict(
        title=dict(text=f"Per-layer sparsity at {percent(sparsity)} overall"
                        "<br><sup>the fraction of each layer's weights (or neurons/blocks) each allocation prunes</sup>"),
        barmode="group",
        xaxis=dict(title=dict(text="layer"), type="category"),
        yaxis=dict(title=dict(text="pruned (%)"), range=[0, 100]),
        shapes=[dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=100 * sparsity, y1=100 * sparsity,
                     line=dict(color=MODEL_MARKER_LINE_COLOUR, dash="dot"))],
        height=380,
        margin=dict(t=80, b=10),
        legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"),
    ))
