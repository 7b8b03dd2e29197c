"""Figures of the Limit page (the fundamental limit of pruning): the Hessian's spectral density,
where the removable fraction crosses the diagonal, and accuracy against the pruned fraction."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from pruning.plots.arrays import as_numpy
from pruning.plots.palette import (
    DENSE_COLOUR,
    LIMIT_ACTUAL_COLOUR,
    LIMIT_PREDICTED_COLOUR,
    MEASURE_COLOUR,
    PRUNED_COLOUR,
)


def spectral_density_figure(grid: list[float], density: list[float], zero_mass: float) -> go.Figure:
    """rho(lambda) of the live Hessian block on a log axis (its tails span many decades), with the
    exact-zero mass that Lanczos cannot resolve stated in the title."""
    values = as_numpy(density, float)
    floor = max(float(values.max()) * 1e-8, 1e-300) if values.size else 1e-300
    figure = go.Figure(go.Scatter(x=as_numpy(grid, float).tolist(), y=np.maximum(values, floor).tolist(), mode="lines",
                                  line=dict(color=MEASURE_COLOUR), name="rho",
                                  hovertemplate="lambda %{x:.4g}<br>density %{y:.3g}<extra></extra>"))
    figure.update_layout(
        title=f"Hessian spectral density (plus {100 * zero_mass:.1f}% exactly-zero eigenvalues)",
        xaxis_title="eigenvalue lambda", yaxis_title="density rho(lambda)", yaxis_type="log",
        margin=dict(t=50, b=10), height=340,
    )
    return figure


def limit_crossing_figure(fractions: list[float], removable: list[float], predicted: float) -> go.Figure:
    """G(R(p)), the removable fraction at the distance pruning p moves the weights, against p; the
    prediction is where it crosses the diagonal (removable = removed)."""
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color=DENSE_COLOUR, dash="dot"),
                                name="removable = removed"))
    figure.add_trace(go.Scatter(x=list(fractions), y=list(removable), mode="lines", line=dict(color=MEASURE_COLOUR),
                                name="G(R(p))", hovertemplate="p %{x:.2f}<br>G %{y:.3f}<extra></extra>"))
    figure.add_trace(go.Scatter(x=[predicted], y=[predicted], mode="markers",
                                marker=dict(color=LIMIT_PREDICTED_COLOUR, size=11), name=f"predicted {100 * predicted:.1f}%"))
    figure.update_layout(title="Removable fraction G(R(p)) against pruned fraction p", xaxis_title="pruned fraction p",
                         yaxis_title="removable fraction G", xaxis_range=[0, 1], yaxis_range=[0, 1.02],
                         margin=dict(t=50, b=10), height=360)
    return figure


def limit_accuracy_figure(fractions: list[float], accuracy: list[float], dense_accuracy: float,
                          predicted: float, actual: float) -> go.Figure:
    """Test accuracy of the one-shot magnitude-pruned L1-trained model against p, with the
    unpruned accuracy and both limits."""
    figure = go.Figure(go.Scatter(x=list(fractions), y=[100 * a for a in accuracy], mode="lines+markers",
                                  marker=dict(size=4), line=dict(color=PRUNED_COLOUR), name="pruned, no fine-tuning",
                                  hovertemplate="p %{x:.2f}<br>accuracy %{y:.2f}%<extra></extra>"))
    figure.add_hline(y=100 * dense_accuracy, line_dash="dash", line_color=DENSE_COLOUR,
                     annotation_text=f"unpruned {100 * dense_accuracy:.2f}%")
    figure.add_vline(x=actual, line_color=LIMIT_ACTUAL_COLOUR, annotation_text=f"actual {100 * actual:.0f}%")
    figure.add_vline(x=predicted, line_dash="dot", line_color=LIMIT_PREDICTED_COLOUR,
                     annotation_text=f"predicted {100 * predicted:.1f}%", annotation_position="bottom left")
    figure.update_layout(title="Accuracy against pruned fraction", xaxis_title="pruned fraction p",
                         yaxis_title="test accuracy (%)", xaxis_range=[0, 1], margin=dict(t=50, b=10), height=360)
    return figure
