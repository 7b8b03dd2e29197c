"""The Masks page's scrubbers: one frame per grid sparsity of a sweep (or per snapshot of a run)
whose images and bars are that point's mask, small enough to send once, shown on the page."""

import base64
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import plotly.io
import pytest
import torch
from PIL import Image

from pruning.experiment import Experiment
from pruning.mask_diff import CHANGE_CODES, change_codes, code_counts, mask_matrix, matrix_shape
from pruning.plots.images import png_uri
from pruning.plots.mask_scrub import (
    SCRUB_FRAME_CELLS,
    SCRUB_MAX_CELLS,
    SCRUB_ORDER,
    SCRUB_SHADES,
    kept_shades,
    mask_scrub_figure,
    run_scrub_figure,
    scrub_max_cells,
)
from pruning.plots.masks import downsample_codes, downsample_factors, downsample_mask
from pruning.plots.palette import CHANGE_COLOURS
from pruning.plots.scrub import frame_name
from pruning.sparsity_sweep import sparsity_grid, sparsity_sweep
from pruning.train import TrainConfig
from tests.app_driver import figures, settle, start

LENET5 = {"conv1.weight": (20, 1, 5, 5), "conv2.weight": (50, 20, 5, 5), "fc1.weight": (500, 800), "fc2.weight": (10, 500)}
MLP = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}


def rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[index : index + 2], 16) for index in (1, 3, 5))


def decoded(uri: str, colours: list[str]) -> np.ndarray:
    """The palette index of every pixel of a PNG data URI, read back through its RGB colours."""
    assert uri.startswith("data:image/png;base64,")
    pixels = np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
    indices = np.full(pixels.shape[:2], -1)
    for index, colour in enumerate(colours):
        indices[(pixels == rgb(colour)).all(axis=-1)] = index
    assert (indices >= 0).all(), "every pixel has one of the palette's colours"
    return indices


def expected_shades(keep, max_cells: int) -> tuple[np.ndarray, int]:
    """The downsampled mask as the scrubber shades it: each cell's kept fraction on ``count`` shades."""
    cells, (fr, fc) = downsample_mask(mask_matrix(keep), max_cells)
    count = min(SCRUB_SHADES, fr * fc + 1)
    return np.rint(cells * (count - 1)).astype(int), count


def nested_masks(shapes: dict, grid: list[float], seed: int = 0) -> list:
    """Global magnitude masks of random scores cut at every grid sparsity (noise-like masks, the
    hardest for the PNG compressor), as sweep points."""
    generator = torch.Generator().manual_seed(seed)
    scores = {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()}
    ordered = torch.cat([score.flatten() for score in scores.values()]).sort().values
    points = []
    for target in grid:
        cut = ordered[int(target * len(ordered))] if target > 0 else -1.0
        points.append(SimpleNamespace(target=target, mask={name: score > cut for name, score in scores.items()}))
    return points


@pytest.fixture(scope="module")
def mlp_sweep():
    return sparsity_sweep(Experiment(model="mlp", train=TrainConfig(epochs=1)), "magnitude")


def test_png_keeps_every_index_with_few_bits():
    indices = np.random.default_rng(0).integers(0, 4, size=(7, 13))
    colours = [CHANGE_COLOURS[name] for name in CHANGE_CODES]
    uri = png_uri(indices, colours)
    assert (decoded(uri, colours) == indices).all()
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size == (13, 7)
    binary = png_uri(np.zeros((100, 100), dtype=int), kept_shades(2))
    assert len(binary) < 300, "an all-pruned 100 x 100 mask is a few dozen bytes"


def test_frames_carry_the_sweeps_masks(mlp_sweep):
    active = mlp_sweep.nearest(0.9)
    spec = mask_scrub_figure(mlp_sweep, active, MLP).to_plotly_json()
    meta, layers = spec["layout"]["meta"], ["fc1", "fc2", "fc3"]
    assert meta["kind"] == "mask scrub" and meta["layers"] == layers
    assert [frame["name"] for frame in spec["frames"]] == [frame_name(point.target) for point in mlp_sweep.points]
    steps = spec["layout"]["sliders"][0]["steps"]
    assert [step["args"][0] for step in steps] == [[frame["name"]] for frame in spec["frames"]]
    assert spec["layout"]["sliders"][0]["active"] == active
    assert meta["downsample"] == {"fc1": [2, 5], "fc2": [1, 2], "fc3": [1, 1]}
    for index in (0, 10, active, len(mlp_sweep.points) - 1):
        point, frame = mlp_sweep.points[index], spec["frames"][index]
        bars = {trace["name"]: trace for trace in frame["data"][len(layers):]}
        kept = [int(point.mask[name].sum()) for name in MLP]
        assert list(bars["kept"]["customdata"]) == kept
        assert [k + p for k, p in zip(kept, bars["pruned"]["customdata"])] == [point.mask[name].numel() for name in MLP]
        assert 1 - sum(kept) / sum(point.mask[name].numel() for name in MLP) == pytest.approx(point.sparsity)
        assert bars["kept"]["x"] == pytest.approx([100 * (1 - point.layer_sparsity[name]) for name in MLP])
        for position, name in enumerate(MLP):
            shades, count = expected_shades(point.mask[name], meta["max_cells"])
            image = frame["data"][position]
            assert (decoded(image["source"], kept_shades(count)) == shades).all(), (index, name)
            fr, fc = meta["downsample"][layers[position]]
            assert (image["dx"], image["dy"], image["x0"], image["y0"]) == (fc, fr, (fc - 1) / 2, (fr - 1) / 2)
    shown = spec["data"]
    assert [trace.get("source") for trace in shown[:3]] == [trace["source"] for trace in spec["frames"][active]["data"][:3]]


def test_lenet5_sized_scrubber_stays_small():
    points = nested_masks(LENET5, sparsity_grid())
    figure = mask_scrub_figure(SimpleNamespace(points=points), 40, LENET5)
    size = len(plotly.io.to_json(figure, validate=False))
    assert len(figure.frames) == len(points) == 50
    assert size < 1_500_000, f"{size / 1e6:.2f} MB of figure JSON for 50 lenet5 frames"
    fc1 = expected_shades(points[40].mask["fc1.weight"], figure.layout.meta["max_cells"])
    assert fc1[1] == SCRUB_SHADES, "500 x 800 weights are drawn as cells of 4 x 5 in 16 shades"
    image = figure.frames[40].data[2]
    assert (decoded(image.source, kept_shades(fc1[1])) == fc1[0]).all()


def test_many_layers_get_coarser_images():
    def cells(shapes, limit):
        return sum(math.ceil(rows / fr) * math.ceil(cols / fc)
                   for rows, cols in shapes for fr, fc in [downsample_factors(rows, cols, limit)])

    assert scrub_max_cells([matrix_shape(shape) for shape in LENET5.values()]) == SCRUB_MAX_CELLS
    many = [(512, 4608)] * 20
    limit = scrub_max_cells(many)
    assert limit < SCRUB_MAX_CELLS and cells(many, limit) <= SCRUB_FRAME_CELLS < cells(many, limit + 8)


def test_run_scrubber_colours_what_changed_between_snapshots():
    generator = torch.Generator().manual_seed(1)
    shapes = {"fc1.weight": (40, 700), "fc2.weight": (10, 40)}
    masks = [{name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()}]
    for _ in range(3):
        masks.append({name: keep ^ (torch.rand(keep.shape, generator=generator) < 0.2) for name, keep in masks[-1].items()})
    snapshots = [SimpleNamespace(step=100 * index, mask=mask) for index, mask in enumerate(masks)]
    spec = run_scrub_figure(snapshots, 3, shapes).to_plotly_json()
    assert [step["label"] for step in spec["layout"]["sliders"][0]["steps"]] == ["step 0", "step 100", "step 200", "step 300"]
    colours = [CHANGE_COLOURS[name] for name in CHANGE_CODES]
    for index in range(1, 4):
        frame = spec["frames"][index]
        bars = {trace["name"]: trace for trace in frame["data"][len(shapes):]}
        assert list(bars) == list(SCRUB_ORDER)
        for position, name in enumerate(shapes):
            codes = change_codes(masks[index - 1][name], masks[index][name])
            for kind, count in code_counts(codes).items():
                assert bars[kind]["customdata"][position] == count
            cells, _ = downsample_codes(codes, spec["layout"]["meta"]["max_cells"])
            assert (decoded(frame["data"][position]["source"], colours) == cells).all()
    first = {trace["name"]: trace for trace in spec["frames"][0]["data"][len(shapes):]}
    assert list(first["newly pruned"]["customdata"]) == [0, 0] and list(first["kept"]["customdata"]) == [400 * 70, 400]


def test_masks_page_shows_the_scrubber_for_magnitude(mlp_sweep):
    at = start(model="mlp", epochs=1)
    settle(at.switch_page("views/masks.py").run())
    assert not at.exception
    scrubbers = [spec for spec in figures(at) if spec["layout"].get("meta", {}).get("kind") == "mask scrub"]
    assert len(scrubbers) == 1
    spec = scrubbers[0]
    assert spec["layout"]["meta"]["layers"] == ["fc1", "fc2", "fc3"]
    assert len(spec["frames"]) == len(mlp_sweep.points)
    assert all(step["method"] == "animate" for step in spec["layout"]["sliders"][0]["steps"])
    assert len(json.dumps(spec)) < 2_000_000
    last = {trace["name"]: trace for trace in spec["frames"][-1]["data"][3:]}
    assert last["kept"]["customdata"] == [int(keep.sum()) for keep in mlp_sweep.points[-1].mask.values()]
    assert any("Computed once at" in caption.value for caption in at.caption)
    at.slider(key="masks.sparsity").set_value(0.5).run()
    assert not at.exception
    again = [spec for spec in figures(at) if spec["layout"].get("meta", {}).get("kind") == "mask scrub"]
    assert again == scrubbers, "the scrubber is built once; the Streamlit slider only redraws the exact view"


def test_masks_page_scrubs_a_training_runs_snapshots_in_the_browser(fresh_cache):
    at = start(dataset="digits", model="mlp", epochs=2)
    at.switch_page("views/masks.py").run()
    at.selectbox(key="masks.method").set_value("dns").run()
    at.slider(key="masks.dns.epochs").set_value(2).run()
    at.slider(key="masks.dns.c_rate").set_value(1.0).run()
    at.button(key="masks.run").click().run()
    assert not at.exception
    assert not [spec for spec in figures(at) if spec["layout"].get("meta", {}).get("kind") == "mask scrub"], \
        "a method that trains has no sweep"
    (spec,) = [spec for spec in figures(at) if spec["layout"].get("meta", {}).get("kind") == "run scrub"]
    slider = at.select_slider(key="masks.snapshot")
    assert len(spec["frames"]) == len(slider.options), "one frame per snapshot; the exact picker stays"
    assert [step["label"] for step in spec["layout"]["sliders"][0]["steps"]] == [option.split(" ·")[0]
                                                                               for option in slider.options]
    changes = [other for other in figures(at) if other["layout"].get("meta", {}).get("kind") == "change"]
    last = {trace["name"]: trace for trace in spec["frames"][-1]["data"][3:]}
    by_layer = {other["layout"]["meta"]["layer"]: other["layout"]["meta"]["counts"] for other in changes}
    for kind in SCRUB_ORDER:
        assert last[kind]["customdata"] == [by_layer[layer][kind] for layer in spec["layout"]["meta"]["layers"]], \
            "the last frame counts what the exact view of the last snapshot counts"
