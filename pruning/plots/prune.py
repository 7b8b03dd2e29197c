"""Figures of the Prune page: sparsity per layer, recall per class, the dense model's training,
a schedule's plan and run, and the three costs of the pruned model. (The Masks page reuses the
layer sparsity chart, the Recall page the recall per class.)"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.metrics import ModelStats
from pruning.plots.palette import DENSE_COLOUR, MEASURE_COLOUR, PRUNED_COLOUR, WARN_SPARSITY
from pruning.plots.scrub import frame_name, with_scrubber
from pruning.sparsity_sweep import SparsitySweep, SweepPoint


def layer_sparsity_figure(stats: ModelStats, target: float | None = None) -> go.Figure:
    """Sparsity of every Linear/Conv weight, with the target drawn as a line."""
    names = [layer.name.removesuffix(".weight") for layer in stats.layers]
    colours = [PRUNED_COLOUR if layer.sparsity >= WARN_SPARSITY else MEASURE_COLOUR for layer in stats.layers]
    figure = go.Figure(
        go.Bar(
            x=names,
            y=[100 * layer.sparsity for layer in stats.layers],
            marker_color=colours,
            customdata=[[layer.params, layer.nonzero] for layer in stats.layers],
            hovertemplate="%{x}<br>sparsity %{y:.1f}%<br>%{customdata[1]:,} of %{customdata[0]:,} weights kept<extra></extra>",
        )
    )
    if target is not None:
        figure.add_hline(y=100 * target, line_dash="dash", annotation_text=f"target {100 * target:.0f}%")
    figure.update_layout(
        title="Sparsity per layer",
        xaxis_title="layer (in forward order)",
        yaxis_title="pruned weights (%)",
        yaxis_range=[0, 100],
        margin=dict(t=50, b=10),
        height=340,
    )
    return figure


def class_recall_figure(
    class_names: list[str],
    dense_recall: list[float],
    pruned_recall: list[float],
    dense_accuracy: float,
    pruned_accuracy: float,
) -> go.Figure:
    """Per-class recall, dense beside pruned, with each model's overall accuracy as a line."""
    figure = go.Figure(
        [
            go.Bar(name="dense", x=class_names, y=[100 * r for r in dense_recall], marker_color=DENSE_COLOUR),
            go.Bar(name="pruned", x=class_names, y=[100 * r for r in pruned_recall], marker_color=PRUNED_COLOUR),
        ]
    )
    figure.add_hline(y=100 * dense_accuracy, line_dash="dot", line_color=DENSE_COLOUR,
                     annotation_text=f"dense accuracy {100 * dense_accuracy:.1f}%", annotation_position="bottom left")
    figure.add_hline(y=100 * pruned_accuracy, line_dash="dash", line_color=PRUNED_COLOUR,
                     annotation_text=f"pruned accuracy {100 * pruned_accuracy:.1f}%", annotation_position="bottom right")
    low = min(dense_recall + pruned_recall)
    figure.update_layout(
        title="Recall per class",
        barmode="group",
        xaxis_title="class",
        xaxis_type="category",
        yaxis_title="recall (%)",
        yaxis_range=[max(0.0, 100 * low - 10), 100],
        margin=dict(t=50, b=10),
        height=340,
        legend=dict(orientation="h", y=1.1, x=1, xanchor="right"),
    )
    return figure


def training_curve_figure(history: list[dict]) -> go.Figure:
    """Test accuracy and training loss per epoch of the dense model."""
    epochs = [row["epoch"] for row in history]
    figure = go.Figure(
        [
            go.Scatter(x=epochs, y=[100 * row["test_accuracy"] for row in history], name="test accuracy (%)", mode="lines+markers"),
            go.Scatter(x=epochs, y=[row["train_loss"] for row in history], name="train loss", mode="lines+markers", yaxis="y2"),
        ]
    )
    figure.update_layout(
        title="Dense training",
        xaxis_title="epoch",
        yaxis=dict(title="test accuracy (%)"),
        yaxis2=dict(title="train loss (cross-entropy)", overlaying="y", side="right"),
        height=300,
        margin=dict(t=50, b=10),
        legend=dict(orientation="h", y=1.15, x=1, xanchor="right"),
    )
    return figure


def schedule_preview_figure(points: list[dict], title: str = "Planned sparsity") -> go.Figure:
    """Sparsity against training epoch as a schedule plans it, drawn before anything runs."""
    figure = go.Figure(
        go.Scatter(x=[p["epoch"] for p in points], y=[100 * p["sparsity"] for p in points], mode="lines+markers", line_shape="linear")
    )
    figure.update_layout(title=title, xaxis_title="training epoch of the schedule", yaxis_title="sparsity (%)",
                         yaxis_range=[0, 100], height=260, margin=dict(t=50, b=10))
    return figure


def history_figure(history: list[dict]) -> go.Figure:
    """Sparsity and test accuracy against training step of a schedule that ran."""
    steps = [row["step"] for row in history]
    figure = go.Figure(
        [
            go.Scatter(x=steps, y=[100 * row["sparsity"] for row in history], name="sparsity (%)", mode="lines+markers"),
            go.Scatter(x=steps, y=[100 * row["accuracy"] for row in history], name="test accuracy (%)", mode="lines+markers"),
        ]
    )
    figure.update_layout(title="Sparsity and accuracy during the run", xaxis_title="training step", yaxis_title="%",
                         yaxis_range=[0, 100], height=300, margin=dict(t=50, b=10),
                         legend=dict(orientation="h", y=1.15, x=1, xanchor="right"))
    return figure


def costs_figure(costs) -> go.Figure:
    """The three costs (a ``pruning.physical.costs.RealCosts``) side by side, each as a ratio to the dense model."""
    rows = {row["model"]: row for row in costs.rows()}
    measures = [("compression", "compression<br>(params)"), ("theoretical_speedup", "theoretical speedup<br>(FLOPs)"),
                ("measured_speedup_batch1", "measured speedup<br>batch 1"),
                ("measured_speedup_batch64", "measured speedup<br>batch 64")]
    figure = go.Figure()
    for kind in ("masked", "physical"):
        if rows[kind]["params"] is not None:
            figure.add_bar(name=kind, x=[label for _, label in measures], y=[rows[kind][key] for key, _ in measures])
    figure.add_hline(y=1.0, line_dash="dot", annotation_text="dense")
    figure.update_layout(title="Three costs: size, FLOPs and measured time", yaxis_title="ratio to the dense model (x)",
                         barmode="group", height=360)
    return figure


NUMBER = {"font": {"size": 34}}  # the scrubber's cards: sized for the page's results column
TITLE = {"font": {"size": 14}}


def prune_scrub_figure(sweep: SparsitySweep, active: int) -> go.Figure:
    """The Prune page along the whole slider: accuracy, achieved sparsity, compression and FLOPs
    speedup, sparsity per layer and recall per class, one frame per grid sparsity."""
    names = [name.removesuffix(".weight") for name in sweep.layer_params]
    classes = list(sweep.class_names)
    figure = make_subplots(
        rows=2, cols=4, row_heights=[0.28, 0.72], vertical_spacing=0.12,
        specs=[[{"type": "indicator"}] * 4, [{"colspan": 2}, None, {"colspan": 2}, None]],
        subplot_titles=("", "", "", "", "Sparsity per layer (%)", "Recall per class (%)"),
    )

    def moving(point: SweepPoint) -> list:
        return [
            go.Indicator(mode="number+delta", value=100 * point.accuracy, number={"suffix": "%", "valueformat": ".2f", **NUMBER},
                         delta={"reference": 100 * sweep.dense_accuracy, "valueformat": ".2f"},
                         title={"text": "Pruned accuracy", **TITLE}),
            go.Indicator(mode="number", value=100 * point.sparsity, number={"suffix": "%", "valueformat": ".2f", **NUMBER},
                         title={"text": "Sparsity achieved", **TITLE}),
            go.Indicator(mode="number", value=point.compression, number={"suffix": "x", "valueformat": ".2f", **NUMBER},
                         title={"text": "Compression", **TITLE}),
            go.Indicator(mode="number", value=point.speedup, number={"suffix": "x", "valueformat": ".2f", **NUMBER},
                         title={"text": "Speedup (FLOPs)", **TITLE}),
            go.Bar(x=names, y=[100 * point.layer_sparsity[name] for name in sweep.layer_params], name="layer sparsity",
                   marker_color=[PRUNED_COLOUR if point.layer_sparsity[name] >= WARN_SPARSITY else MEASURE_COLOUR
                                 for name in sweep.layer_params], showlegend=False,
                   hovertemplate="%{x}: %{y:.1f}% pruned<extra></extra>"),
            go.Bar(x=classes, y=[100 * value for value in point.per_class_recall], name="pruned",
                   marker_color=PRUNED_COLOUR, hovertemplate="class %{x}: %{y:.1f}%<extra>pruned</extra>"),
        ]

    cells = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 3)]
    for trace, (row, col) in zip(moving(sweep.points[active]), cells):
        figure.add_trace(trace, row=row, col=col)
    figure.add_trace(go.Bar(x=classes, y=[100 * value for value in sweep.dense_recall], name="dense",
                            marker_color=DENSE_COLOUR, hovertemplate="class %{x}: %{y:.1f}%<extra>dense</extra>"),
                     row=2, col=3)
    frames = [go.Frame(name=frame_name(point.target), data=moving(point), traces=list(range(6)))
              for point in sweep.points]
    figure.update_yaxes(range=[0, 100], row=2, col=1)
    figure.update_yaxes(range=[0, 100], row=2, col=3)
    figure.update_layout(title="Along the slider: drag the scrubber below (computed once for every sparsity)",
                         barmode="group", height=560, margin=dict(t=70, b=10), legend=dict(orientation="h", x=0.52, y=0.66))
    return with_scrubber(figure, frames, active)
