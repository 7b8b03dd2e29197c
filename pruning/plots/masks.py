"""Figures of the Masks page: one layer's mask as a heatmap, small conv layers as kernel grids,
what changed between two snapshots of a run, the run's mask turnover, and the overlap of two
methods' masks (the scrubbers are in ``pruning.plots.mask_scrub``). The mask arithmetic itself
lives in ``pruning.mask_diff``.

Cell values go to plotly as NumPy arrays: they travel as compact typed arrays, while nested
lists cost plotly a Python-level validation of every cell (most of a page's drawing time)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch

from pruning.mask_diff import CHANGE_CODES, change_codes, code_counts, mask_matrix
from pruning.plots.palette import (
    BOUNDARY_COLOUR,
    CHANGE_COLOURS,
    DENSE_COLOUR,
    MASK_COLOURSCALE,
    MASK_KEPT_COLOUR,
    MEASURE_COLOUR,
    PRUNED_COLOUR,
)

MASK_MAX_CELLS = 300  # a heatmap shows at most this many cells along each axis
MAX_BOUNDARY_LINES = 24  # block boundaries drawn per axis at most (every k-th beyond that)
MASK_ASPECT_RANGE = (0.3, 2.0)  # thinner or taller layers are drawn with stretched cells
KERNEL_GRID_MAX_FILTERS = 64
KERNEL_GRID_MAX_CHANNELS = 32
KERNEL_GRID_MAX_SIDE = 7


def downsample_factors(rows: int, cols: int, max_cells: int = MASK_MAX_CELLS) -> tuple[int, int]:
    """Weights per cell, down and across, that leave at most ``max_cells`` cells along each axis."""
    return max(1, math.ceil(rows / max_cells)), max(1, math.ceil(cols / max_cells))


def downsample_mask(matrix: np.ndarray, max_cells: int = MASK_MAX_CELLS) -> tuple[np.ndarray, tuple[int, int]]:
    """Block-average a 0/1 matrix to at most ``max_cells`` x ``max_cells``: each cell is the kept
    fraction of the ``fr`` x ``fc`` weights it covers (border cells may cover fewer). Returns the
    cells and the factors ``(fr, fc)``; ``(1, 1)`` means shown as is."""
    rows, cols = matrix.shape
    fr, fc = downsample_factors(rows, cols, max_cells)
    if fr == fc == 1:
        return matrix.astype(float), (1, 1)
    down, across = math.ceil(rows / fr), math.ceil(cols / fc)
    padded = np.zeros((down * fr, across * fc), dtype=np.int32)
    padded[:rows, :cols] = matrix
    kept = padded.reshape(down, fr, across, fc).sum((1, 3))
    covered = np.outer(np.minimum(fr, rows - fr * np.arange(down)), np.minimum(fc, cols - fc * np.arange(across)))
    return kept / covered, (fr, fc)


def block_boundaries(count: int, block_size: int, max_lines: int = MAX_BOUNDARY_LINES) -> tuple[list[float], int]:
    """Positions (weight-index coordinates, between cells) of the block boundaries along an axis
    of ``count`` weights, blocks starting at 0; every ``stride``-th if there would be too many."""
    positions = [k * block_size - 0.5 for k in range(1, math.ceil(count / block_size))]
    stride = max(1, math.ceil(len(positions) / max_lines))
    return positions[stride - 1 :: stride], stride


def _fit_height(rows: float, cols: float, low: int = 220, high: int = 520) -> int:
    """Figure height for a plot whose cells are kept square in a column about 500 px wide."""
    return int(min(high, max(low, 130 + 440 * rows / max(cols, 1))))


def cell_stretch(rows: int, cols: int) -> float:
    """How much taller than wide to draw cells so the layer's aspect stays in MASK_ASPECT_RANGE."""
    aspect, (low, high) = rows / cols, MASK_ASPECT_RANGE
    return low / aspect if aspect < low else high / aspect if aspect > high else 1.0


def mask_heatmap_figure(layer: str, keep, block_size: int | None = None, max_cells: int = MASK_MAX_CELLS,
                        pruned: bool = True) -> go.Figure:
    """One layer's mask: dark = kept, light = pruned; Linear as out x in, Conv as filters x
    (in*kh*kw). Larger layers are block-averaged to at most ``max_cells`` per axis (the cell is then
    the kept fraction). ``block_size`` draws the block boundaries of block granularity.
    ``layout.meta`` holds what the page's caption says: the downsampling factors, the strides
    (down, across) of the boundary lines and how much the cells are stretched vertically."""
    shape = tuple(keep.shape)
    matrix = mask_matrix(keep)
    rows, cols = matrix.shape
    sparsity = 1.0 - float(matrix.mean())
    cells, (fr, fc) = downsample_mask(matrix, max_cells)
    downsampled = (fr, fc) != (1, 1)
    conv = len(shape) > 2
    z = cells.astype(np.float32) if downsampled else matrix.astype(np.uint8)
    value = "kept fraction %{z:.2f}" if downsampled else "kept %{z}"
    row_name, col_name = ("filter", "column") if conv else ("output neuron", "input feature")
    heatmap = go.Heatmap(
        z=z, x0=(fc - 1) / 2, dx=fc, y0=(fr - 1) / 2, dy=fr, zmin=0, zmax=1, colorscale=MASK_COLOURSCALE,
        xgap=0, ygap=0,
        colorbar=dict(title=dict(text="kept fraction" if downsampled else "weight", side="right"), thickness=12,
                      tickvals=[0, 1], ticktext=["0 (pruned)", "1 (kept)"] if downsampled else ["pruned", "kept"]),
        hovertemplate=f"{row_name} ≈ %{{y:.0f}}<br>{col_name} ≈ %{{x:.0f}}<br>{value}<extra></extra>",
    )
    figure = go.Figure(heatmap)
    shapes, stride = [], [1, 1]
    if block_size and block_size > 1:
        vertical, stride_x = block_boundaries(cols, block_size)
        horizontal, stride_y = block_boundaries(rows, block_size)
        stride = [stride_y, stride_x]
        line = dict(color=BOUNDARY_COLOUR, width=1 if stride == [1, 1] else 0.75)
        shapes = [dict(type="line", xref="x", yref="y", x0=x, x1=x, y0=-0.5, y1=rows - 0.5, line=line, opacity=0.7,
                       name="block boundary") for x in vertical]
        shapes += [dict(type="line", xref="x", yref="y", x0=-0.5, x1=cols - 0.5, y0=y, y1=y, line=line, opacity=0.7,
                        name="block boundary") for y in horizontal]
    stretch = cell_stretch(rows, cols)
    dims = (f"{shape[0]} × {shape[1]}·{shape[2]}·{shape[3]} weights (filters × in·kh·kw)" if len(shape) == 4
            else f"{rows} × {cols} weights (out × in)")
    state = f"{100 * sparsity:.1f}% pruned" if pruned else "not pruned"
    figure.update_layout(
        title=dict(text=f"{layer} · {state}<br><sup>{dims}"
                   + (f", shown as {cells.shape[0]} × {cells.shape[1]} cells of {fr} × {fc}" if downsampled else "")
                   + (f", cells drawn {stretch:.2g}× {'taller' if stretch > 1 else 'as tall'}" if stretch != 1 else "")
                   + "</sup>"),
        xaxis=dict(title=("input channel × kernel position (index, in·kh·kw)" if conv else "input feature (index)"),
                   range=[-0.5, cols - 0.5], showgrid=False, zeroline=False, constrain="domain"),
        yaxis=dict(title=("filter (index)" if conv else "output neuron (index)"), range=[rows - 0.5, -0.5],
                   showgrid=False, zeroline=False, scaleanchor="x", scaleratio=stretch, constrain="domain"),
        shapes=shapes,
        height=_fit_height(rows * stretch, cols),
        margin=dict(t=70, b=10, l=10, r=10),
        plot_bgcolor="white",
        meta=dict(layer=layer, shape=list(shape), rows=rows, cols=cols, kept=1.0 - sparsity, downsample=[fr, fc],
                  block_size=block_size or 0, boundary_stride=stride, stretch=stretch),
    )
    return figure


def kernel_grid_eligible(keep) -> bool:
    """Small conv layers get a kernel grid: at most 64 filters x 32 input channels of kernels
    larger than 1x1 and at most 7x7."""
    shape = tuple(keep.shape)
    return (len(shape) == 4 and shape[0] <= KERNEL_GRID_MAX_FILTERS and shape[1] <= KERNEL_GRID_MAX_CHANNELS
            and 1 < shape[2] * shape[3] and max(shape[2], shape[3]) <= KERNEL_GRID_MAX_SIDE)


def _tile_ticks(count: int, side: int, max_ticks: int = 16) -> dict:
    step = max(1, math.ceil(count / max_ticks))
    indices = list(range(0, count, step))
    return dict(tickmode="array", tickvals=[i * (side + 1) + (side - 1) / 2 for i in indices], ticktext=[str(i) for i in indices])


def _kernel_bands(filters: int, channels: int, kh: int, kw: int, min_aspect: float = 0.35) -> int:
    """How many rows of tiles ("bands") to wrap the filters into so the grid is not a thin strip."""
    bands = 1
    while bands < filters and bands * (channels * (kh + 1) + 1) / (math.ceil(filters / bands) * (kw + 1)) < min_aspect:
        bands += 1
    return bands


def kernel_grid_figure(layer: str, keep) -> go.Figure:
    """A conv layer's mask as one kh x kw tile per (filter, input channel), filters across and
    input channels down, one-cell gaps between tiles; dark = kept, light = pruned. Layers with few
    input channels wrap their filters into several bands of tiles (hover names each tile)."""
    array = keep.detach().cpu().numpy() if isinstance(keep, torch.Tensor) else np.asarray(keep)
    filters, channels, kh, kw = array.shape
    bands = _kernel_bands(filters, channels, kh, kw)
    per_band = math.ceil(filters / bands)
    padded = np.full((bands * per_band, channels, kh, kw), np.nan)
    padded[:filters] = array.astype(float)
    index = np.full((bands * per_band,), -1)
    index[:filters] = np.arange(filters)
    band_height = channels * (kh + 1) + 1  # tiles plus one extra blank row between bands
    grid = np.full((bands, band_height, per_band, kw + 1), np.nan)
    which = np.full(grid.shape, -1)
    channel_of = np.full(grid.shape, -1)
    for band in range(bands):
        tiles = padded[band * per_band : (band + 1) * per_band]  # (filter, channel, kh, kw)
        block = np.full((channels, kh + 1, per_band, kw + 1), np.nan)
        block[:, :kh, :, :kw] = tiles.transpose(1, 2, 0, 3)  # (channel, row, filter, column)
        grid[band, : channels * (kh + 1)] = block.reshape(channels * (kh + 1), per_band, kw + 1)
        names = np.full((channels, kh + 1, per_band, kw + 1), -1)
        names[:, :kh, :, :kw] = index[band * per_band : (band + 1) * per_band][None, None, :, None]
        which[band, : channels * (kh + 1)] = names.reshape(channels * (kh + 1), per_band, kw + 1)
        chans = np.full((channels, kh + 1, per_band, kw + 1), -1)
        chans[:, :kh, :, :kw] = np.arange(channels)[:, None, None, None]
        channel_of[band, : channels * (kh + 1)] = chans.reshape(channels * (kh + 1), per_band, kw + 1)
    rows, cols = bands * band_height - 2, per_band * (kw + 1) - 1
    grid = grid.reshape(bands * band_height, -1)[:rows, :cols]
    which = which.reshape(bands * band_height, -1)[:rows, :cols]
    channel_of = channel_of.reshape(bands * band_height, -1)[:rows, :cols]
    z = grid.astype(np.float32)  # NaN: the gaps between tiles
    customdata = np.stack([which, channel_of], axis=-1).astype(np.int8)  # at most 64 filters, 32 channels
    sparsity = 1.0 - float(array.mean())
    figure = go.Figure(
        go.Heatmap(z=z, customdata=customdata, zmin=0, zmax=1, colorscale=MASK_COLOURSCALE, showscale=False,
                   hoverongaps=False, hovertemplate="filter %{customdata[0]}, input channel %{customdata[1]}"
                   "<br>kept %{z}<extra></extra>")
    )
    if bands == 1:
        xaxis = dict(title="filter (index)", **_tile_ticks(filters, kw))
        yaxis = dict(title="input channel (index)", **_tile_ticks(channels, kh))
        layout = f"{filters} filters across, {channels} input channels down"
    else:
        xaxis = dict(title=f"filter (offset within a band of {per_band})", **_tile_ticks(per_band, kw))
        starts = [band * per_band for band in range(bands)]
        yaxis = dict(title="band of filters" + (" × input channel" if channels > 1 else ""), tickmode="array",
                     tickvals=[band * band_height + (channels * (kh + 1) - 2) / 2 for band in range(bands)],
                     ticktext=[f"{start}–{min(start + per_band, filters) - 1}" for start in starts])
        layout = (f"{filters} filters in {bands} bands of {per_band}"
                  + (f", {channels} input channels down each band" if channels > 1 else ""))
    figure.update_layout(
        title=dict(text=f"{layer} kernels · {100 * sparsity:.1f}% pruned<br><sup>one {kh}×{kw} tile per "
                        f"(filter, input channel): {layout}</sup>"),
        xaxis=dict(range=[-0.5, cols - 0.5], showgrid=False, zeroline=False, constrain="domain", **xaxis),
        yaxis=dict(range=[rows - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1,
                   constrain="domain", **yaxis),
        height=_fit_height(rows, cols, low=200),
        margin=dict(t=70, b=10, l=10, r=10),
        plot_bgcolor="white",
        meta=dict(layer=layer, kind="kernel grid", bands=bands, rows=rows, cols=cols),
    )
    return figure


# --- Mask evolution of a run: what changed between two snapshots ---


def downsample_codes(codes: np.ndarray, max_cells: int = MASK_MAX_CELLS) -> tuple[np.ndarray, tuple[int, int]]:
    """Shrink a change-code matrix to at most ``max_cells`` per axis. A cell shows "spliced back" if
    any weight under it was, else "newly pruned" if any was, else kept or pruned by majority:
    changes are rare and would vanish in an average."""
    rows, cols = codes.shape
    fr, fc = downsample_factors(rows, cols, max_cells)
    if fr == fc == 1:
        return codes, (1, 1)
    padding = ((0, -rows % fr), (0, -cols % fc))
    shape = (math.ceil(rows / fr), fr, math.ceil(cols / fc), fc)

    def share(code):
        hits = np.pad((codes == code).astype(float), padding).reshape(shape).sum((1, 3))
        return hits / np.pad(np.ones(codes.shape), padding).reshape(shape).sum((1, 3))

    cells = np.where(share(1) >= 0.5, 1, 0).astype(np.int8)
    cells[share(2) > 0] = CHANGE_CODES["newly pruned"]
    cells[share(3) > 0] = CHANGE_CODES["spliced back"]
    return cells, (fr, fc)


def mask_change_figure(layer: str, previous, current, max_cells: int = MASK_MAX_CELLS) -> go.Figure:
    """One layer's mask at a snapshot, coloured by what changed since the previous snapshot:
    kept, pruned, newly pruned, spliced back. ``layout.meta`` has the counts and downsampling."""
    codes = change_codes(previous, current)
    rows, cols = codes.shape
    cells, (fr, fc) = downsample_codes(codes, max_cells)
    names = list(CHANGE_CODES)
    colourscale = []
    for index, name in enumerate(names):  # four flat bands over z in [0, 3]
        colourscale += [[index / 4, CHANGE_COLOURS[name]], [(index + 1) / 4, CHANGE_COLOURS[name]]]
    counts = code_counts(codes)
    figure = go.Figure(go.Heatmap(
        z=cells, x0=(fc - 1) / 2, dx=fc, y0=(fr - 1) / 2, dy=fr, zmin=-0.5, zmax=3.5,
        colorscale=colourscale, colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=names, thickness=12),
        # a name per cell would be a Python string per cell to validate and send: the code is explained instead
        hovertemplate="row ≈ %{y:.0f}<br>column ≈ %{x:.0f}<br>code %{z} ("
                      + ", ".join(f"{code} {name}" for name, code in CHANGE_CODES.items()) + ")<extra></extra>",
    ))
    downsampled = (fr, fc) != (1, 1)
    figure.update_layout(
        title=dict(text=f"{layer} · {counts['newly pruned']:,} newly pruned, {counts['spliced back']:,} spliced back"
                   f"<br><sup>{rows} × {cols} weights"
                   + (f", shown as {cells.shape[0]} × {cells.shape[1]} cells of {fr} × {fc}" if downsampled else "")
                   + "</sup>"),
        xaxis=dict(range=[-0.5, cols - 0.5], showgrid=False, zeroline=False, title="input (index)"),
        yaxis=dict(range=[rows - 0.5, -0.5], showgrid=False, zeroline=False, title="output (index)"),
        height=_fit_height(min(rows, 2 * cols), cols), margin=dict(t=70, b=10, l=10, r=10), plot_bgcolor="white",
        meta=dict(layer=layer, kind="change", counts=counts, downsample=[fr, fc]),
    )
    return figure


def mask_turnover_figure(history: list[dict]) -> go.Figure:
    """Per snapshot interval of a run: weights newly pruned and weights spliced back, with the sparsity."""
    rows = [row for row in history if "spliced_back" in row]
    steps = [row["step"] for row in rows]
    figure = go.Figure([
        go.Bar(x=steps, y=[row["newly_pruned"] for row in rows], name="newly pruned",
               marker_color=CHANGE_COLOURS["newly pruned"]),
        go.Bar(x=steps, y=[row["spliced_back"] for row in rows], name="spliced back",
               marker_color=CHANGE_COLOURS["spliced back"]),
        go.Scatter(x=steps, y=[100 * row["sparsity"] for row in rows], name="sparsity (%)", yaxis="y2",
                   mode="lines+markers", line=dict(color=MASK_KEPT_COLOUR)),
    ])
    figure.update_layout(title="Mask turnover during the run", xaxis_title="training step",
                         yaxis=dict(title="weights since the previous snapshot", type="log"),
                         yaxis2=dict(title="sparsity (%)", overlaying="y", side="right", range=[0, 100]),
                         barmode="group", height=320, margin=dict(t=50, b=10),
                         legend=dict(orientation="h", y=1.15, x=1, xanchor="right"))
    return figure


def overlap_figure(per_layer: dict[str, float], overall: float, method_a: str, method_b: str,
                   chance: dict[str, float] | None = None) -> go.Figure:
    """Per-layer Jaccard overlap of two methods' kept weights, the overall value as a line and,
    optionally, what two independent random masks of the same per-layer sparsities would give."""
    names = [name.removesuffix(".weight") for name in per_layer]
    traces = [go.Bar(x=names, y=list(per_layer.values()), name="Jaccard overlap", marker_color=MEASURE_COLOUR,
                     hovertemplate="%{x}<br>Jaccard %{y:.3f}<extra></extra>")]
    if chance is not None:
        traces.append(go.Scatter(x=names, y=[chance[name] for name in per_layer], name="independent masks (expected)",
                                 mode="markers", marker=dict(symbol="line-ew-open", size=28, color=DENSE_COLOUR, line_width=2),
                                 hovertemplate="%{x}<br>expected by chance %{y:.3f}<extra></extra>"))
    figure = go.Figure(traces)
    figure.add_hline(y=overall, line_dash="dash", line_color=PRUNED_COLOUR)
    figure.update_layout(
        title=dict(text=f"Overlap of kept weights: {method_a} vs {method_b}"
                        f"<br><sup>all layers together: {overall:.3f} (dashed line)</sup>"),
        xaxis_title="layer (in forward order)",
        yaxis_title="Jaccard |A∩B| / |A∪B| (0 to 1)",
        yaxis_range=[0, 1.05],
        height=360,
        margin=dict(t=70, b=10),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
    )
    return figure

