"""Plotly figures, one function per figure; pages only lay them out. No streamlit here."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch

from pruning.metrics import ModelStats

DENSE_COLOUR = "#7f8c8d"
PRUNED_COLOUR = "#c0392b"
WARN_SPARSITY = 0.99


def layer_sparsity_figure(stats: ModelStats, target: float | None = None) -> go.Figure:
    """Sparsity of every Linear/Conv weight, with the target drawn as a line."""
    names = [layer.name.removesuffix(".weight") for layer in stats.layers]
    colours = [PRUNED_COLOUR if layer.sparsity >= WARN_SPARSITY else "#2980b9" for layer in stats.layers]
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


# --- Masks page: one layer's mask as a heatmap, kernel grids, overlap of two methods' masks ---



KEPT_COLOUR = "#1b2a41"
PRUNED_MASK_COLOUR = "#dfe4ea"
MASK_COLOURSCALE = [[0.0, PRUNED_MASK_COLOUR], [1.0, KEPT_COLOUR]]
BOUNDARY_COLOUR = "#e67e22"
MASK_MAX_CELLS = 300  # a heatmap shows at most this many cells along each axis
MAX_BOUNDARY_LINES = 24  # block boundaries drawn per axis at most (every k-th beyond that)
MASK_ASPECT_RANGE = (0.3, 2.0)  # thinner or taller layers are drawn with stretched cells
KERNEL_GRID_MAX_FILTERS = 64
KERNEL_GRID_MAX_CHANNELS = 32
KERNEL_GRID_MAX_SIDE = 7


def mask_matrix(keep) -> np.ndarray:
    """A layer's keep-mask (True = kept) as the 2-D view the heatmaps show: Linear weights as
    (out, in), Conv weights as (filters, in*kh*kw). This is the transpose of the view blocks are
    cut from (``pruning.selection._matrix``), so BxB blocks stay BxB blocks from the top left."""
    array = keep.detach().cpu().numpy() if isinstance(keep, torch.Tensor) else np.asarray(keep)
    array = array.astype(bool)
    return array.reshape(array.shape[0], -1)


def downsample_mask(matrix: np.ndarray, max_cells: int = MASK_MAX_CELLS) -> tuple[np.ndarray, tuple[int, int]]:
    """Block-average a 0/1 matrix to at most ``max_cells`` x ``max_cells``: each cell is the kept
    fraction of the ``fr`` x ``fc`` weights it covers (border cells may cover fewer). Returns the
    cells and the factors ``(fr, fc)``; ``(1, 1)`` means shown as is."""
    rows, cols = matrix.shape
    fr, fc = max(1, math.ceil(rows / max_cells)), max(1, math.ceil(cols / max_cells))
    values = matrix.astype(float)
    if fr == fc == 1:
        return values, (1, 1)
    padding = ((0, -rows % fr), (0, -cols % fc))
    padded, counts = np.pad(values, padding), np.pad(np.ones_like(values), padding)
    shape = (padded.shape[0] // fr, fr, padded.shape[1] // fc, fc)
    return padded.reshape(shape).sum((1, 3)) / counts.reshape(shape).sum((1, 3)), (fr, fc)


def block_boundaries(count: int, block_size: int, max_lines: int = MAX_BOUNDARY_LINES) -> tuple[list[float], int]:
    """Positions (weight-index coordinates, between cells) of the block boundaries along an axis
    of ``count`` weights, blocks starting at 0; every ``stride``-th if there would be too many."""
    positions = [k * block_size - 0.5 for k in range(1, math.ceil(count / block_size))]
    stride = max(1, math.ceil(len(positions) / max_lines))
    return positions[stride - 1 :: stride], stride


def _fit_height(rows: float, cols: float, low: int = 220, high: int = 520) -> int:
    """Figure height for a plot whose cells are kept square in a column about 500 px wide."""
    return int(min(high, max(low, 130 + 440 * rows / max(cols, 1))))


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
    z = np.round(cells, 4).tolist() if downsampled else matrix.astype(int).tolist()
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
    aspect = rows / cols
    low, high = MASK_ASPECT_RANGE
    stretch = low / aspect if aspect < low else high / aspect if aspect > high else 1.0
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
    z = [[None if math.isnan(v) else int(v) for v in row] for row in grid.tolist()]
    customdata = np.stack([which, channel_of], axis=-1).tolist()
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

CHANGE_CODES = {"pruned": 0, "kept": 1, "newly pruned": 2, "spliced back": 3}
CHANGE_COLOURS = {"pruned": PRUNED_MASK_COLOUR, "kept": KEPT_COLOUR, "newly pruned": "#e74c3c", "spliced back": "#2ecc71"}


def change_codes(previous, current) -> np.ndarray:
    """Per weight of a layer (in the heatmap's 2-D view): 0 pruned in both snapshots, 1 kept in
    both, 2 pruned since the previous one, 3 spliced back (pruned then, kept now)."""
    before, after = mask_matrix(previous), mask_matrix(current)
    codes = after.astype(np.int8)
    codes[before & ~after] = CHANGE_CODES["newly pruned"]
    codes[~before & after] = CHANGE_CODES["spliced back"]
    return codes


def downsample_codes(codes: np.ndarray, max_cells: int = MASK_MAX_CELLS) -> tuple[np.ndarray, tuple[int, int]]:
    """Shrink a change-code matrix to at most ``max_cells`` per axis. A cell shows "spliced back" if
    any weight under it was, else "newly pruned" if any was, else kept or pruned by majority:
    changes are rare and would vanish in an average."""
    rows, cols = codes.shape
    fr, fc = max(1, math.ceil(rows / max_cells)), max(1, math.ceil(cols / max_cells))
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
    counts = {name: int((codes == code).sum()) for name, code in CHANGE_CODES.items()}
    figure = go.Figure(go.Heatmap(
        z=cells.tolist(), x0=(fc - 1) / 2, dx=fc, y0=(fr - 1) / 2, dy=fr, zmin=-0.5, zmax=3.5,
        colorscale=colourscale, customdata=np.array(names, dtype=object)[cells].tolist(),
        colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=names, thickness=12),
        hovertemplate="row ≈ %{y:.0f}<br>column ≈ %{x:.0f}<br>%{customdata}<extra></extra>",
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
                   mode="lines+markers", line=dict(color=KEPT_COLOUR)),
    ])
    figure.update_layout(title="Mask turnover during the run", xaxis_title="training step",
                         yaxis=dict(title="weights since the previous snapshot", type="log"),
                         yaxis2=dict(title="sparsity (%)", overlaying="y", side="right", range=[0, 100]),
                         barmode="group", height=320, margin=dict(t=50, b=10),
                         legend=dict(orientation="h", y=1.15, x=1, xanchor="right"))
    return figure


def mask_overlap(mask_a: dict, mask_b: dict, names: list[str] | None = None) -> tuple[dict[str, float], float]:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of the *kept* weights of two masks, per layer and over
    all layers together. A layer missing from one mask counts as fully kept there; two empty
    sets overlap fully (1)."""
    names = names or list(dict.fromkeys([*mask_a, *mask_b]))
    per_layer, inter_total, union_total = {}, 0, 0
    for name in names:
        a, b = mask_a.get(name), mask_b.get(name)
        a = torch.ones_like(b, dtype=torch.bool) if a is None else a.bool()
        b = torch.ones_like(a, dtype=torch.bool) if b is None else b.bool()
        inter, union = int(torch.count_nonzero(a & b)), int(torch.count_nonzero(a | b))
        per_layer[name] = inter / union if union else 1.0
        inter_total += inter
        union_total += union
    return per_layer, (inter_total / union_total if union_total else 1.0)


def overlap_figure(per_layer: dict[str, float], overall: float, method_a: str, method_b: str,
                   chance: dict[str, float] | None = None) -> go.Figure:
    """Per-layer Jaccard overlap of two methods' kept weights, the overall value as a line and,
    optionally, what two independent random masks of the same per-layer sparsities would give."""
    names = [name.removesuffix(".weight") for name in per_layer]
    traces = [go.Bar(x=names, y=list(per_layer.values()), name="Jaccard overlap", marker_color="#2980b9",
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


# --- Compare page: accuracy against compression / theoretical speedup over a sweep ---

BASELINE_COLOURS = {"random": DENSE_COLOUR, "magnitude": "#2980b9"}
OTHER_COLOURS = ("#c0392b", "#27ae60", "#8e44ad", "#e67e22", "#16a085", "#d35400", "#2c3e50", "#f1c40f")
SWEEP_AXES = {
    "compression": ("Accuracy against compression", "compression (all parameters / nonzero, ×, log scale)"),
    "theoretical_speedup": ("Accuracy against theoretical speedup",
                            "theoretical speedup (dense FLOPs / pruned FLOPs, ×, log scale)"),
}


def sweep_summary(rows: list[dict], x_field: str, y_field: str = "accuracy_after_finetune") -> dict[str, list[dict]]:
    """Per method, per target sparsity (ascending): the mean of ``x_field`` and the mean, min and
    max of ``y_field`` over seeds."""
    grouped: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        grouped.setdefault(row["method"], {}).setdefault(row["target_sparsity"], []).append(row)
    summary = {}
    for method, by_sparsity in grouped.items():
        points = []
        for target in sorted(by_sparsity):
            group = by_sparsity[target]
            ys = [row[y_field] for row in group]
            points.append({"target_sparsity": target, "x": sum(row[x_field] for row in group) / len(group),
                           "mean": sum(ys) / len(ys), "min": min(ys), "max": max(ys), "seeds": len(group)})
        summary[method] = points
    return summary


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
    ticks = [value * 10**power for power in range(0, 6) for value in (1, 2, 5)]
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


# --- Recall page: relative recall gaps, alpha over sparsity, confusion change, flipped images ---

GAP_COLOUR = "#2980b9"
FIT_COLOUR = PRUNED_COLOUR
RECALL_METHOD_COLOURS = {"magnitude": "#2980b9", "undecayed": "#c0392b"}


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
    colours = {"lost": PRUNED_COLOUR, "gained": "#27ae60", "changed": "#555555"}
    annotations = []
    pixels = display_pixels(images[[flip.index for flip in flips]], mean, std) if flips else []
    for position, (flip, picture) in enumerate(zip(flips, pixels)):
        top, left = (position // columns) * cell_h + headroom, (position % columns) * cell_w
        mosaic[top : top + height, left : left + width] = picture
        annotations.append(dict(
            x=left + (width - 1) / 2, y=top - 0.5, xref="x", yref="y", yanchor="bottom", showarrow=False,
            text=f"<span style='color:{colours[flip.kind]}'>{class_names[flip.dense]} → {class_names[flip.pruned]}</span>"
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


def valley_line_figure(line) -> go.Figure:
    """Train and test loss (left axis) and accuracy (right axis, dotted) along the line from the
    dense (a = 0) to the pruned model (a = 1), both models marked. ``line``: a LinePath."""
    figure = go.Figure()
    for split, dash, colour in (("train", "solid", "#2980b9"), ("test", "solid", "#e67e22")):
        figure.add_trace(go.Scatter(x=line.a, y=getattr(line, f"{split}_loss"), name=f"{split} loss", mode="lines",
                                    line=dict(color=colour, dash=dash)))
        figure.add_trace(go.Scatter(x=line.a, y=[100 * v for v in getattr(line, f"{split}_accuracy")],
                                    name=f"{split} accuracy (%)", mode="lines", yaxis="y2",
                                    line=dict(color=colour, dash="dot")))
    ends = [line.a.index(0.0), line.a.index(1.0)]
    figure.add_trace(go.Scatter(x=[0.0, 1.0], y=[line.train_loss[i] for i in ends], mode="markers+text",
                                text=["dense", "pruned"], textposition="top center", name="models (train loss)",
                                marker=dict(size=11, color=[DENSE_COLOUR, PRUNED_COLOUR], symbol=["circle", "x"])))
    for value in (0.0, 1.0):
        figure.add_vline(x=value, line_dash="dot", line_color="#95a5a6")
    figure.update_layout(
        title="Loss along the line from dense to pruned",
        xaxis_title="a  (θ = θ_dense + a · (θ_pruned − θ_dense))",
        yaxis=dict(title="loss (cross-entropy)", rangemode="tozero"),
        yaxis2=dict(title="accuracy (%)", overlaying="y", side="right", range=[0, 100]),
        height=380,
        margin=dict(t=50, b=10),
        legend=dict(orientation="h", y=-0.2, x=0),
    )
    return figure


def valley_plane_figure(plane) -> go.Figure:
    """Contours of log10 of the train loss over the plane (a along pruned − dense, b along a
    filter-normalised random direction), with the dense and pruned models marked. A log scale
    keeps the valley floor readable next to the steep walls. ``plane``: a Plane."""
    z = np.log10(np.maximum(np.asarray(plane.loss, dtype=float), 1e-12))
    figure = go.Figure(go.Contour(
        x=plane.a, y=plane.b, z=z, colorscale="Viridis", ncontours=25,
        colorbar=dict(title=dict(text="log10 loss", side="right"), thickness=12),
        customdata=np.asarray(plane.loss, dtype=float),
        hovertemplate="a %{x:.2f}, b %{y:.2f}<br>loss %{customdata:.4g}<extra></extra>",
    ))
    names = list(plane.points)
    figure.add_trace(go.Scatter(
        x=[plane.points[name][0] for name in names], y=[plane.points[name][1] for name in names],
        mode="markers+text", text=names, textposition="top center", name="models", showlegend=False,
        marker=dict(size=12, color=[DENSE_COLOUR if name == "dense" else PRUNED_COLOUR for name in names],
                    symbol=["circle" if name == "dense" else "x" for name in names], line=dict(color="white", width=1)),
        textfont=dict(color="white"),
    ))
    figure.update_layout(
        title="Train loss over the plane of dense, pruned and a random direction",
        xaxis_title="a: along θ_pruned − θ_dense",
        yaxis_title="b: along a filter-normalised random direction" + (" (survivors only)" if plane.restricted else ""),
        height=460,
        margin=dict(t=50, b=10),
    )
    return figure


# --- Fundamental limit of pruning ----------------------------------------------------------------

LIMIT_PREDICTED_COLOUR = "#8e44ad"
LIMIT_ACTUAL_COLOUR = "#27ae60"


def spectral_density_figure(grid: list[float], density: list[float], zero_mass: float) -> go.Figure:
    """rho(lambda) of the live Hessian block on a log axis (its tails span many decades), with the
    exact-zero mass that Lanczos cannot resolve stated in the title."""
    values = np.asarray(density, dtype=float)
    floor = max(float(values.max()) * 1e-8, 1e-300) if values.size else 1e-300
    figure = go.Figure(go.Scatter(x=list(grid), y=np.maximum(values, floor).tolist(), mode="lines",
                                  line=dict(color="#2980b9"), name="rho",
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
    figure.add_trace(go.Scatter(x=list(fractions), y=list(removable), mode="lines", line=dict(color="#2980b9"),
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


def level_barrier_figure(rows: list[dict]) -> go.Figure:
    """Error barrier between consecutive levels of iterative pruning (linear mode connectivity),
    one bar per transition, labelled with the two sparsities. ``rows``: ``level_barriers``'s."""
    labels = [f"{100 * row['from_sparsity']:.0f}% → {100 * row['to_sparsity']:.0f}%" for row in rows]
    figure = go.Figure(go.Bar(
        x=labels, y=[100 * row["barrier"] for row in rows], marker_color="#8e44ad",
        customdata=[[100 * row["start_error"], 100 * row["end_error"], 100 * row["max_error"]] for row in rows],
        hovertemplate="%{x}<br>barrier %{y:.2f} pts<br>errors: start %{customdata[0]:.1f}%, end %{customdata[1]:.1f}%, "
                      "highest %{customdata[2]:.1f}%<extra></extra>",
    ))
    figure.update_layout(title="Error barrier between consecutive pruning levels", xaxis_title="sparsity, level to level",
                         yaxis=dict(title="test error barrier (points)", rangemode="tozero"), height=320,
                         margin=dict(t=50, b=10))
    return figure


# --- Attributions page: input attribution maps, channel attributions, class reliance on removed channels ---

KEPT_COLOUR = "#2980b9"


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
            reach = max(float(np.abs(pair["dense"][row]).max()), float(np.abs(pair["pruned"][row]).max()))
            reach = reach if reach > 0 else 1.0
            for model in ("dense", "pruned"):
                suffix = str(row * cols + col + 1)
                traces.append(go.Heatmap(
                    z=np.asarray(pair[model][row], dtype=np.float32), showscale=False, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
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
    from plotly.subplots import make_subplots

    names = list(layers)
    figure = make_subplots(rows=max(len(names), 1), cols=1, subplot_titles=names,
                           vertical_spacing=min(0.3 / len(names), 0.1) if len(names) > 1 else 0)
    meta, in_legend = {}, set()
    for row, name in enumerate(names, start=1):
        values, removed = (np.asarray(part) for part in layers[name])
        order = np.argsort(-values, kind="stable")
        rank = np.arange(1, len(values) + 1)
        for is_removed, label, colour in ((False, "kept", KEPT_COLOUR), (True, "removed by pruning", PRUNED_COLOUR)):
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
        meta[name] = {"channels": int(len(values)), "removed": int(removed.sum())}
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
    from plotly.subplots import make_subplots

    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, 100 * matrix / totals, np.nan)
    order = np.argsort(-np.nan_to_num(np.nanmean(shares, axis=0) if np.isfinite(shares).any() else np.zeros(matrix.shape[1])),
                       kind="stable")
    removed = np.asarray(removed, dtype=bool)[order]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.07, 0.93], vertical_spacing=0.02)
    figure.add_trace(go.Heatmap(z=[removed.astype(int).tolist()], colorscale=[[0, "#ecf0f1"], [1, PRUNED_COLOUR]],
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
        height=440, margin=dict(t=90, b=10), meta=dict(removed=int(removed.sum()), channels=int(len(removed))),
    )
    return figure


def class_reliance_figure(class_names: list[str], reliance, recall_loss, pearson: float, spearman: float) -> go.Figure:
    """Each class's reliance on the removed channels (the share of its attribution they carried)
    against the recall it lost to pruning, with the least-squares line and both correlations in
    the title: a rising cloud says attribution predicts which classes pay."""
    x = 100 * np.asarray(reliance, dtype=float)
    y = 100 * np.asarray(recall_loss, dtype=float)
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


# --- Prune page: the three costs of a pruned model ---


def costs_figure(costs) -> go.Figure:
    """The three costs (a ``pruning.physical.RealCosts``) side by side, each as a ratio to the dense model."""
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
