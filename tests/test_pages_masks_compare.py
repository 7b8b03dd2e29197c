"""AppTest for the Masks and Compare pages, plus the figure functions they draw with."""

import base64

import numpy as np
import pytest
import torch

from pruning.mask_diff import mask_overlap
from pruning.plots import masks as mask_plots
from tests.app_driver import figure_starting as figure
from tests.app_driver import figures, metric, start


def mask_heatmaps(at) -> dict[str, dict]:
    """The layer mask heatmaps by layer name (kernel grids excluded)."""
    return {
        spec["layout"]["meta"]["layer"]: spec
        for spec in figures(at)
        if spec["layout"].get("meta", {}).get("layer") and spec["layout"]["meta"].get("kind") not in ("kernel grid", "change")
    }


def plotted(value) -> np.ndarray:
    """A trace's array as plotly writes it: a base64 typed array (NumPy input) or nested lists."""
    if isinstance(value, dict):
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        return array.reshape([int(size) for size in str(value["shape"]).split(",")]) if "shape" in value else array
    return np.array(value)


def kept_fraction(spec: dict) -> float:
    """The kept fraction a heatmap shows: cells weighted by how many weights they average."""
    trace, meta = spec["data"][0], spec["layout"]["meta"]
    z = plotted(trace["z"]).astype(float)
    fr, fc = meta["downsample"]
    rows = np.minimum(fr, meta["rows"] - fr * np.arange(z.shape[0]))
    cols = np.minimum(fc, meta["cols"] - fc * np.arange(z.shape[1]))
    weights = np.outer(rows, cols)
    assert weights.sum() == meta["rows"] * meta["cols"]
    return float((z * weights).sum() / weights.sum())


def layer_sparsity(at, layer: str) -> float:
    bars = figure(at, "Sparsity per layer")["data"][0]
    return bars["y"][bars["x"].index(layer)] / 100


@pytest.fixture(scope="module")
def masks():
    at = start(model="mlp", epochs=1)
    assert not at.exception
    at.switch_page("views/masks.py").run()
    assert not at.exception
    return at


def test_masks_page_draws_the_real_mask_of_every_layer(masks):
    heatmaps = mask_heatmaps(masks)
    assert sorted(heatmaps) == ["fc1", "fc2", "fc3"], "one heatmap per prunable layer"
    for sparsity in (0.9, 0.5, 0.97):
        masks.slider(key="masks.sparsity").set_value(sparsity).run()
        assert not masks.exception
        heatmaps = mask_heatmaps(masks)
        total = sum(spec["layout"]["meta"]["rows"] * spec["layout"]["meta"]["cols"] for spec in heatmaps.values())
        kept = sum(kept_fraction(spec) * spec["layout"]["meta"]["rows"] * spec["layout"]["meta"]["cols"]
                   for spec in heatmaps.values())
        assert 1 - kept / total == pytest.approx(sparsity, abs=1e-3)
        for layer, spec in heatmaps.items():
            assert kept_fraction(spec) == pytest.approx(1 - layer_sparsity(masks, layer), abs=1e-3)
            assert spec["layout"]["title"]["text"].startswith(f"{layer} · {100 * layer_sparsity(masks, layer):.1f}% pruned")
    fc1 = mask_heatmaps(masks)["fc1"]
    assert fc1["layout"]["meta"]["downsample"] == [1, 3], "784 inputs are shown as at most 300 cells"
    assert any("Downsampled for display" in caption.value for caption in masks.caption)
    fc3 = plotted(mask_heatmaps(masks)["fc3"]["data"][0]["z"])
    assert fc3.shape == (10, 100) and set(np.unique(fc3)) <= {0, 1}, "small layers are shown weight by weight"


def test_block_granularity_draws_block_boundaries(masks):
    masks.slider(key="masks.sparsity").set_value(0.8).run()
    masks.radio(key="masks.magnitude.scope").set_value("layerwise").run()
    masks.radio(key="masks.magnitude.granularity").set_value("block").run()
    assert not masks.exception
    spec = mask_heatmaps(masks)["fc3"]  # 10 x 100 weights, 4 x 4 blocks
    lines = spec["layout"]["shapes"]
    vertical = sorted(line["x0"] for line in lines if line["x0"] == line["x1"])
    horizontal = sorted(line["y0"] for line in lines if line["y0"] == line["y1"])
    assert vertical == [4 * k - 0.5 for k in range(1, 25)]
    assert horizontal == [3.5, 7.5]
    z = plotted(spec["data"][0]["z"])
    for row in range(0, 10, 4):
        for col in range(0, 100, 4):
            assert len(np.unique(z[row : row + 4, col : col + 4])) == 1, "each 4x4 block is kept or pruned whole"
    masks.radio(key="masks.magnitude.granularity").set_value("unstructured").run()
    assert not mask_heatmaps(masks)["fc3"]["layout"].get("shapes")
    masks.radio(key="masks.magnitude.scope").set_value("global").run()


def test_jaccard_overlap_of_two_methods(masks):
    masks.slider(key="masks.sparsity").set_value(0.9).run()
    masks.selectbox(key="masks.other").set_value("magnitude").run()
    assert not masks.exception
    assert float(metric(masks, "Overall Jaccard overlap")) == pytest.approx(1.0)
    assert figure(masks, "Overlap of kept weights")["data"][0]["y"] == pytest.approx([1.0, 1.0, 1.0])
    masks.selectbox(key="masks.other").set_value("random").run()
    assert not masks.exception
    overall = float(metric(masks, "Overall Jaccard overlap"))
    assert overall < 0.5
    bars = figure(masks, "Overlap of kept weights: magnitude vs random")["data"][0]["y"]
    assert all(0 <= value < 0.5 for value in bars)


def test_overlap_and_figures_directly():
    generator = torch.Generator().manual_seed(0)
    a = {"w": torch.rand(40, 50, generator=generator) > 0.5}
    b = {"w": a["w"].clone()}
    assert mask_overlap(a, b)[1] == 1.0
    b["w"][0, 0] = ~b["w"][0, 0]
    inter, union = int((a["w"] & b["w"]).sum()), int((a["w"] | b["w"]).sum())
    assert mask_overlap(a, b)[1] == pytest.approx(inter / union)
    conv = torch.rand(8, 3, 3, 3, generator=generator) > 0.5
    assert mask_plots.kernel_grid_eligible(conv) and not mask_plots.kernel_grid_eligible(torch.ones(128, 64, 3, 3))
    grid = plotted(mask_plots.kernel_grid_figure("conv", conv).to_plotly_json()["data"][0]["z"])
    assert len(grid) == 3 * 4 - 1 and len(grid[0]) == 8 * 4 - 1, "one band: channels down, filters across"
    assert grid[0][0] == int(conv[0, 0, 0, 0]) and np.isnan(grid[0][3]) and grid[4][4] == int(conv[1, 1, 0, 0])
    wide = torch.rand(20, 1, 5, 5, generator=generator) > 0.5  # few input channels: filters wrap into bands
    spec = mask_plots.kernel_grid_figure("conv1", wide).to_plotly_json()
    assert spec["layout"]["meta"]["bands"] > 1
    tiles = {}
    for z_row, names in zip(plotted(spec["data"][0]["z"]), plotted(spec["data"][0]["customdata"])):
        for value, (filter_index, channel) in zip(z_row, names):
            assert np.isnan(value) == (filter_index < 0)
            if not np.isnan(value):
                tiles.setdefault((filter_index, channel), []).append(value)
    assert sorted(tiles) == [(f, 0) for f in range(20)]
    assert all(sorted(values) == sorted(wide[f, c].flatten().int().tolist()) for (f, c), values in tiles.items())
    heat = mask_plots.mask_heatmap_figure("conv", conv).to_plotly_json()
    assert plotted(heat["data"][0]["z"]).shape == (8, 27)
    cells, factors = mask_plots.downsample_mask(np.ones((601, 10)))
    assert factors == (3, 1) and cells.shape == (201, 10) and (cells == 1).all()


def test_compare_page_runs_a_sweep_and_offers_the_csv():
    at = start(model="mlp", epochs=1)
    at.switch_page("views/compare.py").run()
    assert not at.exception
    assert not at.get("plotly_chart"), "nothing runs before the button"
    at.text_input(key="compare.sparsities").set_value("0.5, 0.95")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.get("status"), "the sweep ran with its progress bar"
    compression = figure(at, "Accuracy against compression")
    speedup = figure(at, "Accuracy against theoretical speedup")
    for spec in (compression, speedup):
        assert spec["layout"]["xaxis"]["type"] == "log"
        assert {trace["name"] for trace in spec["data"]} == {"random", "magnitude"}
        assert any(shape["type"] == "line" for shape in spec["layout"]["shapes"]), "dense accuracy line"
    table = at.dataframe[0].value
    assert sorted(set(table["method"])) == ["magnitude", "random"] and len(table) == 4
    high = table[table["target_sparsity"] == 0.95].set_index("method")["accuracy_after_finetune"]
    assert high["random"] < high["magnitude"]
    assert at.get("download_button"), "a CSV download button"
    at.run()  # a rerun shows the cached results, it does not recompute
    assert figure(at, "Accuracy against compression") and not at.get("status")

    at.text_input(key="compare.sparsities").set_value("0.5, 1.2")
    at.button[0].click().run()
    assert not at.exception
    assert any("sparsity must be in [0, 1)" in error.value for error in at.error)
    at.text_input(key="compare.sparsities").set_value("  ")
    at.button[0].click().run()
    assert not at.exception
    assert any("at least one sparsity" in error.value for error in at.error)
    at.text_input(key="compare.sparsities").set_value("0.5, lots")
    at.button[0].click().run()
    assert not at.exception
    assert any("'lots' is not a number" in error.value for error in at.error)
