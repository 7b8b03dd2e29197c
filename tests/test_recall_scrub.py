"""The Recall page's scrubber: one figure whose frames carry the sparsity sweep's numbers point by
point (alpha and its interval, each class's relative recall gap, recall per class, the confusion
change), the lighter live-panel figures, and the page drawing the scrubber above the exact
sparsity panel (AppTest)."""

import base64
import dataclasses
import io
import json
import math

import numpy as np
import plotly.io
import pytest
from PIL import Image

from pruning.analysis.recall import Flip, intensification
from pruning.data import load_dataset
from pruning.experiment import Experiment
from pruning.plots.images import png_data_uri
from pruning.plots.recall import MOVING, display_pixels, flipped_images_figure, recall_scrub_figure
from pruning.plots.scrub import frame_name
from pruning.sparsity_sweep import sparsity_grid, sparsity_sweep
from pruning.train import TrainConfig
from tests.app_driver import figure_starting as figure
from tests.app_driver import metric, open_page, settle

TINY = Experiment(model="mlp", train=TrainConfig(epochs=1))
GRID = [0.0, 0.5, 0.9, 0.99]
TITLE = "Recall along the slider"
KINDS = ["scatter", "scatter", "bar", "scatter", "heatmap", "scatter"]  # the moving traces, in MOVING's order


def refuse(constant: str):
    raise AssertionError(f"{constant} in the figure's JSON: a browser cannot parse it")


def browser_spec(figure) -> dict:
    """The figure as the page sends it: strict JSON (no NaN)."""
    return json.loads(plotly.io.to_json(figure, validate=False), parse_constant=refuse)


def alpha_text(shift) -> str:
    return f"α = {shift.alpha:.2f} (95% interval {shift.ci_low:.2f} to {shift.ci_high:.2f})"


def assert_frame_matches(spec: dict, index: int, sweep) -> None:
    """Frame ``index`` of ``spec`` draws point ``index`` of ``sweep``, recomputed here from its recalls."""
    point, frame = sweep.points[index], spec["frames"][index]
    shift = intensification(sweep.dense_recall, sweep.dense_accuracy, point.per_class_recall, point.accuracy)
    gaps, fit, bars, accuracy, change, marker = frame["data"]
    assert frame["name"] == frame_name(point.target) and frame["traces"] == list(MOVING)
    assert frame["layout"]["title"]["text"].startswith(f"{TITLE}: {alpha_text(shift)} at {100 * point.sparsity:.1f}%")
    assert gaps["x"] == pytest.approx(100 * shift.d0.ravel()) and gaps["y"] == pytest.approx(100 * shift.dt.ravel())
    fit_x = spec["data"][MOVING[1]]["x"]
    assert fit["y"][1] / fit_x[1] == pytest.approx(shift.alpha) and fit["y"][0] / fit_x[0] == pytest.approx(shift.alpha)
    assert f"α = {shift.alpha:.2f}" in fit["name"]
    assert bars["y"] == pytest.approx([100 * value for value in point.per_class_recall])
    assert accuracy["y"] == pytest.approx([100 * point.accuracy] * 2)
    expected = np.array(point.confusion) - np.array(sweep.dense_confusion)
    assert np.array_equal(np.array(change["z"]), expected)
    assert change["zmin"] == -change["zmax"] == -max(1, int(np.abs(expected).max())), "a symmetric colour scale"
    assert change["text"] == [[f"{value:+d}" if value else "" for value in row] for row in expected.tolist()]
    assert marker["x"] == pytest.approx([100 * point.sparsity]) and marker["y"] == pytest.approx([shift.alpha])
    reach = frame["layout"]["xaxis"]["range"][1]
    assert frame["layout"]["xaxis"]["range"] == frame["layout"]["yaxis"]["range"] == [-reach, reach]
    assert max(abs(value) for value in gaps["x"] + gaps["y"]) <= reach, "every class inside the axes"
    low, high = frame["layout"]["yaxis2"]["range"]
    assert high == 100 and low <= 100 * min(point.per_class_recall + sweep.dense_recall)


@pytest.fixture(scope="module")
def sweep(one_thread):
    return sparsity_sweep(TINY, "magnitude", grid=GRID)


def test_every_frame_carries_its_sweep_point(sweep):
    spec = browser_spec(recall_scrub_figure(sweep, active=2))
    assert [frame["name"] for frame in spec["frames"]] == [frame_name(target) for target in GRID]
    assert [spec["data"][index]["type"] for index in MOVING] == KINDS
    for index in range(len(GRID)):
        assert_frame_matches(spec, index, sweep)
    first = spec["frames"][0]
    assert first["layout"]["title"]["text"].startswith(f"{TITLE}: α = 1.00 (95% interval 1.00 to 1.00)"), "nothing pruned"
    assert not any(first["data"][4]["text"][row][col] for row in range(10) for col in range(10))


def test_the_figure_is_drawn_at_the_active_frame_with_the_dense_model_fixed(sweep):
    spec = browser_spec(recall_scrub_figure(sweep, active=2))
    active = spec["frames"][2]
    for index, moved in zip(MOVING, active["data"]):
        for key, value in moved.items():
            if key != "type":
                assert spec["data"][index][key] == value, (index, key)
    assert spec["layout"]["title"]["text"] == active["layout"]["title"]["text"]
    assert spec["layout"]["xaxis"]["range"] == active["layout"]["xaxis"]["range"]
    dense_bars, dense_accuracy = spec["data"][3], spec["data"][5]
    assert dense_bars["name"] == "dense" and dense_bars["y"] == pytest.approx([100 * value for value in sweep.dense_recall])
    assert dense_accuracy["y"] == pytest.approx([100 * sweep.dense_accuracy] * 2)
    assert spec["data"][MOVING[4]]["zmid"] == 0 and spec["data"][MOVING[4]]["x"] == list(sweep.class_names)
    curve = spec["data"][10]
    assert curve["y"] == pytest.approx([point.alpha for point in sweep.points])
    assert curve["x"] == pytest.approx([100 * point.sparsity for point in sweep.points])
    slider = spec["layout"]["sliders"][0]
    assert slider["active"] == 2 and len(slider["steps"]) == len(GRID)
    assert all(step["method"] == "animate" and step["args"][0] == [frame["name"]]
               for step, frame in zip(slider["steps"], spec["frames"]))


def test_an_undefined_alpha_leaves_gaps_not_nan(sweep):
    collapsed = dataclasses.replace(sweep.points[-1], accuracy=0.0, per_class_recall=[0.0] * 10, alpha=math.nan,
                                    ci_low=math.nan, ci_high=math.nan)
    spec = browser_spec(recall_scrub_figure(dataclasses.replace(sweep, points=[*sweep.points[:-1], collapsed]), active=3))
    last = spec["frames"][-1]
    assert last["layout"]["title"]["text"].startswith(f"{TITLE}: α undefined at")
    gaps, fit, _, _, _, marker = last["data"]
    assert gaps["y"] == [None] * 10 and fit["y"] == [None, None] and marker["y"] == [None]
    assert spec["data"][10]["y"][-1] is None
    assert_frame_matches(spec, 1, sweep)


def test_flipped_images_travel_as_a_png_of_the_tiles():
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    uri = png_data_uri(pixels)
    assert uri.startswith("data:image/png;base64,")
    decoded = np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
    assert np.array_equal(decoded, pixels)
    data = load_dataset("mnist-5k")
    flips = [Flip(index, int(data.y_test[index]), 1, 2) for index in (3, 8)]
    spec = browser_spec(flipped_images_figure(data.x_test, data.mean, data.std, flips, list(data.class_names)))
    image = spec["data"][0]
    assert image["type"] == "image" and "z" not in image
    mosaic = np.array(Image.open(io.BytesIO(base64.b64decode(image["source"].split(",", 1)[1]))).convert("RGB"))
    tiles = display_pixels(data.x_test[[3, 8]], data.mean, data.std)
    headroom, gap = max(8, int(0.9 * 28)), max(2, 28 // 5)
    assert np.array_equal(mosaic[headroom : headroom + 28, :28], tiles[0])
    assert np.array_equal(mosaic[headroom : headroom + 28, 28 + gap : 56 + gap], tiles[1])
    assert len(spec["layout"]["annotations"]) == 2 and spec["layout"]["meta"]["indices"] == [3, 8]
    assert len(json.dumps(spec)) < 20_000, "kilobytes, not the half megabyte of a z array"


# --- the page ---


@pytest.fixture(scope="module")
def recall_page():
    return open_page("recall", model="mlp", epochs=1)


def scrubber_spec(at) -> str:
    return next(chart.proto.spec for chart in at.get("plotly_chart") if json.loads(chart.proto.spec)["layout"]["title"]
                ["text"].startswith(TITLE))


def test_the_recall_page_scrubs_the_whole_slider_above_the_exact_panel(recall_page):
    spec = figure(recall_page, TITLE)
    page_sweep = sparsity_sweep(TINY, "magnitude")  # the sweep the page computed, from the test run's cache
    assert len(spec["frames"]) == len(sparsity_grid()) == len(page_sweep.points)
    assert spec["layout"]["sliders"][0]["active"] == page_sweep.nearest(0.9)
    for index in (0, page_sweep.nearest(0.5), page_sweep.nearest(0.9), len(page_sweep.points) - 1):
        assert_frame_matches(spec, index, page_sweep)
    assert any("scrubber redraws in the browser" in caption.value for caption in recall_page.caption)
    headers = [header.value for header in recall_page.subheader]
    assert headers.index("Along the slider") < headers.index("At an exact sparsity") < headers.index("α against sparsity")
    assert metric(recall_page, "Intensification α"), "the exact-sparsity panel stays"


def test_the_exact_slider_leaves_the_scrubber_alone_and_returns_the_same_numbers(recall_page):
    recall_page.slider(key="recall.sparsity").set_value(0.9).run()
    scrubber, alpha = scrubber_spec(recall_page), metric(recall_page, "Intensification α")
    for sparsity in (0.5, 0.9):
        recall_page.slider(key="recall.sparsity").set_value(sparsity).run()
        assert not recall_page.exception and not recall_page.error
    assert metric(recall_page, "Intensification α") == alpha, "a value seen before gives the same result"
    assert scrubber_spec(recall_page) == scrubber


def test_the_scrubber_follows_the_method(recall_page):
    settle(recall_page.selectbox(key="recall.method").set_value("random").run())
    assert not recall_page.exception and not recall_page.error
    spec = figure(recall_page, TITLE)
    assert_frame_matches(spec, 10, sparsity_sweep(TINY, "random"))
    recall_page.selectbox(key="recall.method").set_value("magnitude").run()
    assert not recall_page.exception and not recall_page.error
