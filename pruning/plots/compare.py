"""Figure of the Compare page: accuracy against compression or theoretical speedup over a
sparsity sweep, one line per method (seeds aggregated by ``pruning.sweep_summary``)."""

from __future__ import annotations

import plotly.graph_objects as go

from pruning.plots.palette import BASELINE_COLOURS, OTHER_COLOURS
from pruning.sweep_summary import sweep_summary

SWEEP_AXES = {
    "compression": ("Accuracy against compression", "compression (all parameters / nonzero, ×, log scale)"),
    "theoretical_speedup": ("Accuracy against theoretical speedup",
                            "theoretical speedup (dense FLOPs / pruned FLOPs, ×, log scale)"),
}


def sweep_accuracy_figure(rows: list[dict], x_field: str = "compression") -> go.Figure:
    """Test accuracy (after any fine-tuning) against compression or theoretical speedup (log x),
    one line per method, mean over seeds with min-max error bars; dense accuracy as a line."""
    title, x_title = SWEEP_AXES[x_field]
    summary = sweep_summary(rows, x_field)
    others = iter(OTHER_COLOURS * 4)
    traces = []
    for method, points in summary.items():
        colour = BASELINE_COLOURS.get(method) or next(others)
        seeds = max(point["seeds"] for point in points)
        traces.append(go.Scatter(
            x=[p["x"] for p in points], y=[100 * p["mean"] for p in points], name=method, mode="lines+markers",
            line=dict(color=colour, dash="dash" if method == "random" else "solid"),
            error_y=dict(type="data", symmetric=False, visible=seeds > 1,
                         array=[100 * (p["max"] - p["mean"]) for p in points],
                         arrayminus=[100 * (p["mean"] - p["min"]) for p in points]),
            customdata=[[100 * p["target_sparsity"], p["seeds"]] for p in points],
            hovertemplate=f"{method}<br>sparsity %{{customdata[0]:.1f}}%<br>×%{{x:.2f}}<br>"
                          "accuracy %{y:.2f}% (mean of %{customdata[1]} seeds)<extra></extra>",
        ))
    figure = go.Figure(traces)
    xs = [p["x"] for points in summary.values() for p in points if p["x"] > 0]
    ticks = [value * 10**power for power in range(6) for value in (1, 2, 5)]
    ticks = [tick for tick in ticks if xs and min(xs) / 1.5 <= tick <= max(xs) * 1.5]
    if len(ticks) >= 2:
        figure.update_xaxes(tickmode="array", tickvals=ticks, ticktext=[f"{tick:g}×" for tick in ticks])
    dense = {row["seed"]: row["dense_accuracy"] for row in rows}
    if dense:
        mean_dense = 100 * sum(dense.values()) / len(dense)
        figure.add_hline(y=mean_dense, line_dash="dot", line_color="black",
                         annotation_text=f"dense {mean_dense:.1f}%", annotation_position="bottom left")
    figure.update_layout(
        title=title,
        xaxis=dict(title=x_title, type="log"),
        yaxis=dict(title="test accuracy (%)", rangemode="tozero"),
        height=380,
        margin=dict(t=50, b=10),
        legend=dict(orientation="h", y=1.12, x=1, xanchor="right"),
    )
    return figure
