"""The Masks page's scrubbers: every prunable layer's mask as a small image per frame, with its
kept and pruned weights, played by plotly in the browser along the sparsity slider (one frame per
grid sparsity of a sparsity sweep) or through a training run's snapshots (``pruning.plots.scrub``).

Each image is a palette PNG (a data URI) of the layer's mask, downsampled to what a person can see
in a panel a few hundred pixels wide; a frame swaps the images' sources, so fifty frames of a
lenet5 cost well under a megabyte of figure JSON."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.mask_diff import CHANGE_CODES, change_codes, code_counts, layer_matrix, matrix_shape
from pruning.plots.images import png_uri, rgb
from pruning.plots.masks import cell_stretch, downsample_codes, downsample_factors, downsample_mask
from pruning.plots.palette import CHANGE_COLOURS, MASK_KEPT_COLOUR, MASK_PRUNED_COLOUR
from pruning.plots.scrub import frame_name, with_scrubber

SCRUB_MAX_CELLS = 160  # an image has at most this many cells along each axis (about 3 px each on screen)
SCRUB_FRAME_CELLS = 60_000  # cells per frame over all layers: models with many layers get coarser images
SCRUB_SHADES = 16  # shades of the kept fraction in a downsampled image (a 4-bit PNG)
SCRUB_ORDER = ("kept", "spliced back", "newly pruned", "pruned")  # stacking order of the count bars


def kept_shades(count: int) -> list[str]:
    """``count`` colours evenly spaced from pruned (light) to kept (dark)."""
    low, high = np.array(rgb(MASK_PRUNED_COLOUR)), np.array(rgb(MASK_KEPT_COLOUR))
    return ["#%02x%02x%02x" % tuple(np.rint(low + (high - low) * k / (count - 1)).astype(int)) for k in range(count)]


def kept_levels(matrix: np.ndarray, max_cells: int) -> tuple[np.ndarray, tuple[int, int], int]:
    """A 0/1 matrix as shade indices: each downsampled cell's kept fraction rounded to one of
    ``count`` evenly spaced shades (every fraction a full cell can have gets its own shade while
    cells cover fewer than ``SCRUB_SHADES`` weights). Returns the indices, factors and ``count``."""
    cells, (fr, fc) = downsample_mask(matrix, max_cells)
    count = min(SCRUB_SHADES, fr * fc + 1)
    return np.rint(cells * (count - 1)).astype(np.uint8), (fr, fc), count


def scrub_max_cells(shapes) -> int:
    """Cells per axis of a scrubber's images (``shapes``: the layers' 2-D views): ``SCRUB_MAX_CELLS``,
    fewer while the layers together would exceed ``SCRUB_FRAME_CELLS`` cells a frame."""
    def cells(limit: int) -> int:
        return sum(math.ceil(rows / fr) * math.ceil(cols / fc)
                   for rows, cols in shapes for fr, fc in [downsample_factors(rows, cols, limit)])

    limit = SCRUB_MAX_CELLS
    while limit > 16 and cells(limit) > SCRUB_FRAME_CELLS:
        limit -= 8
    return limit


def _layer_image(indices: np.ndarray, colours: list[str], factors: tuple[int, int], layer: str) -> go.Image:
    fr, fc = factors
    return go.Image(source=png_uri(indices, colours), x0=(fc - 1) / 2, dx=fc, y0=(fr - 1) / 2, dy=fr,
                    hovertemplate=f"row ≈ %{{y:.0f}}<br>column ≈ %{{x:.0f}}<extra>{layer}</extra>")


def _count_bars(layers: list[str], counts: dict[str, list[int]], totals: list[int]) -> list[go.Bar]:
    """One stacked horizontal bar per layer: its weights split by ``counts`` (percent of the layer,
    the counts written on the bars)."""
    return [go.Bar(y=layers, x=[100 * count / total for count, total in zip(values, totals)], customdata=values,
                   name=name, orientation="h", marker_color=CHANGE_COLOURS[name], texttemplate="%{customdata:,}",
                   textposition="inside", insidetextanchor="middle", textangle=0,
                   textfont_color=MASK_KEPT_COLOUR if name == "pruned" else "white",
                   hovertemplate=f"%{{y}}: %{{customdata:,}} {name} (%{{x:.1f}}%)<extra></extra>")
            for name, values in counts.items()]


def _scrub_canvas(title: str, shapes: dict[str, tuple[int, int]], max_cells: int, first: list) -> go.Figure:
    """Every layer's image in a grid (weight indices on the axes, cells stretched like the
    heatmaps' within MASK_ASPECT_RANGE) over the per-layer count bars, drawn with ``first``'s traces."""
    layers = list(shapes)
    across = 2 if len(layers) <= 4 else 3 if len(layers) <= 12 else 4
    down = math.ceil(len(layers) / across)
    titles = []
    for rows, cols in shapes.values():
        fr, fc = downsample_factors(rows, cols, max_cells)
        titles.append(f"{rows} × {cols} weights" + (f" in cells of {fr} × {fc}" if (fr, fc) != (1, 1) else ""))
    titles = [f"{layer}<br><sup>{text}</sup>" for layer, text in zip(layers, titles)]
    specs = [[{} if row * across + col < len(layers) else None for col in range(across)] for row in range(down)]
    image_height, gap, bar_height = 250, 70, 60 + 30 * len(layers)  # pixels; a gap holds a two-line title
    plot_height = down * (image_height + gap) + bar_height
    figure = make_subplots(rows=down + 1, cols=across, specs=specs + [[{"colspan": across}] + [None] * (across - 1)],
                           subplot_titles=titles + ["Weights per layer (% of the layer; counts on the bars)"],
                           row_heights=[image_height] * down + [bar_height], vertical_spacing=gap / plot_height,
                           horizontal_spacing=0.06)
    for index, (layer, (rows, cols)) in enumerate(shapes.items()):
        row, col = index // across + 1, index % across + 1
        figure.add_trace(first[index], row=row, col=col)
        anchor = figure.get_subplot(row, col).xaxis.plotly_name.replace("axis", "")
        figure.update_xaxes(range=[-0.5, cols - 0.5], showgrid=False, zeroline=False, constrain="domain",
                            tickfont_size=9, row=row, col=col)
        figure.update_yaxes(range=[rows - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor=anchor,
                            scaleratio=cell_stretch(rows, cols), constrain="domain", tickfont_size=9, row=row, col=col)
    for trace in first[len(layers):]:
        figure.add_trace(trace, row=down + 1, col=1)
    figure.update_yaxes(autorange="reversed", row=down + 1, col=1)
    figure.update_xaxes(range=[0, 100], title="% of the layer's weights", row=down + 1, col=1)
    bars_top = figure.get_subplot(down + 1, 1).yaxis.domain[1]
    figure.layout.annotations[-1].update(x=0, xanchor="left")  # the bars' title, left of their legend
    figure.update_layout(title=title, barmode="stack", height=plot_height + 200, plot_bgcolor="white",
                         margin=dict(t=90, b=10, l=10, r=10), uniformtext=dict(minsize=9, mode="hide"),
                         legend=dict(orientation="h", y=bars_top, yanchor="bottom", x=1, xanchor="right",
                                     traceorder="normal"))
    return figure


def mask_scrub_figure(sweep, active: int, shapes: dict[str, tuple]) -> go.Figure:
    """Every prunable layer's mask along the whole slider, one frame per grid sparsity of the
    sparsity ``sweep``: each layer an image (dark = kept, light = pruned; large layers downsampled,
    a cell's shade then the kept fraction of its weights) and the kept and pruned weights per layer.
    ``shapes``: the prunable weights' shapes (a layer a mask leaves out is kept whole)."""
    views = {name.removesuffix(".weight"): matrix_shape(shape) for name, shape in shapes.items()}
    max_cells = scrub_max_cells(views.values())
    layers = list(views)

    def moving(mask) -> list:
        images, kept, totals = [], [], []
        for (name, shape), layer in zip(shapes.items(), layers):
            matrix = layer_matrix(mask, name, shape)
            levels, factors, count = kept_levels(matrix, max_cells)
            images.append(_layer_image(levels, kept_shades(count), factors, layer))
            kept.append(int(matrix.sum()))
            totals.append(matrix.size)
        return images + _count_bars(layers, {"kept": kept, "pruned": [t - k for t, k in zip(totals, kept)]}, totals)

    figure = _scrub_canvas("Every layer's mask along the slider: drag the scrubber below (computed once for every "
                           "sparsity)", views, max_cells, moving(sweep.points[active].mask))
    frames = [go.Frame(name=frame_name(point.target), data=moving(point.mask), traces=list(range(len(layers) + 2)))
              for point in sweep.points]
    figure.update_layout(meta=dict(kind="mask scrub", layers=layers, max_cells=max_cells,
                                   downsample={layer: list(downsample_factors(*views[layer], max_cells)) for layer in layers}))
    return with_scrubber(figure, frames, active)


def run_scrub_figure(snapshots: list, active: int, shapes: dict[str, tuple]) -> go.Figure:
    """A training run's masks, one frame per snapshot: each layer an image coloured by what changed
    since the previous snapshot (kept, pruned, newly pruned, spliced back; a downsampled cell shows a
    change if any weight under it changed) and those four counts per layer."""
    views = {name.removesuffix(".weight"): matrix_shape(shape) for name, shape in shapes.items()}
    max_cells = scrub_max_cells(views.values())
    layers = list(views)
    colours = [CHANGE_COLOURS[name] for name in CHANGE_CODES]  # palette index = change code

    def moving(index: int) -> list:
        before, after = snapshots[max(index - 1, 0)].mask, snapshots[index].mask
        images, counts = [], {name: [] for name in SCRUB_ORDER}
        for (name, shape), layer in zip(shapes.items(), layers):
            codes = change_codes(layer_matrix(before, name, shape), layer_matrix(after, name, shape))
            cells, factors = downsample_codes(codes, max_cells)
            images.append(_layer_image(cells, colours, factors, layer))
            for key, value in code_counts(codes).items():
                counts[key].append(value)
        return images + _count_bars(layers, counts, [rows * cols for rows, cols in views.values()])

    figure = _scrub_canvas("Every layer's mask through the run: drag the scrubber below (each snapshot against the "
                           "previous one)", views, max_cells, moving(active))
    frames = [go.Frame(name=str(index), data=moving(index), traces=list(range(len(layers) + len(SCRUB_ORDER))))
              for index in range(len(snapshots))]
    figure.update_layout(meta=dict(kind="run scrub", layers=layers, max_cells=max_cells,
                                   downsample={layer: list(downsample_factors(*views[layer], max_cells)) for layer in layers}))
    figure = with_scrubber(figure, frames, active, prefix="Snapshot (scrubs in the browser): ")
    for step, shot in zip(figure.layout.sliders[0].steps, snapshots):
        step.label = f"step {shot.step}"
    return figure
