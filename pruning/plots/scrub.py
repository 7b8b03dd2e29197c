"""The client-side scrubber: a plotly figure carries one frame per grid sparsity and a slider
whose steps animate to a frame, so moving it redraws every panel of the figure in the browser,
with no server run (plotly.js plays the frames; Streamlit only sends the figure once)."""

from __future__ import annotations

import plotly.graph_objects as go

SCRUBBER_LABEL = "Sparsity (scrubs in the browser): "


def frame_name(target: float) -> str:
    return f"{target:.4f}"


def with_scrubber(figure: go.Figure, frames: list[go.Frame], active: int, prefix: str = SCRUBBER_LABEL) -> go.Figure:
    """``figure`` (drawn at frame ``active``) with ``frames`` and a slider stepping through them.
    Frame names are the grid sparsities; the slider shows them as percentages."""
    figure.frames = frames
    steps = [{"label": f"{100 * float(frame.name):.1f}%", "method": "animate",
              "args": [[frame.name], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                      "transition": {"duration": 0}}]} for frame in frames]
    figure.update_layout(sliders=[{"active": active, "steps": steps, "currentvalue": {"prefix": prefix},
                                   "pad": {"t": 40, "b": 10}, "len": 1.0, "x": 0.0}])
    return figure
