"""The live Loss valley page: the line scrubbed in the browser along a sparsity sweep (frames that
carry the sweep's numbers), the coarse plane that follows the slider, and the page itself showing
both without a button press."""

import base64
import json

import numpy as np
import pytest

from pruning.analysis import landscape
from pruning.analysis.valley import COARSE_BATCH, COARSE_GRID, coarse_plane
from pruning.experiment import Experiment, train_dense
from pruning.pipeline import prune_model
from pruning.plots.scrub import frame_name
from pruning.plots.valley import SCRUB_TITLE, scrubber_at, valley_scrub_figure
from pruning.registry import get_method
from pruning.sparsity_sweep import VALLEY_BATCH, VALLEY_POINTS, compute_sweep
from pruning.train import TrainConfig
from tests.app_driver import figure_starting, figures, settle, start

EXPERIMENT = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
LINE_TRACES = (("train loss", "train_loss", 1), ("train accuracy (%)", "train_accuracy", 100),
               ("test loss", "test_loss", 1), ("test accuracy (%)", "test_accuracy", 100))


def array(value) -> np.ndarray:
    """A figure spec's array: a list, or plotly's base64 encoding of a numpy array."""
    if isinstance(value, dict):
        shape = [int(size) for size in str(value["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value)


@pytest.fixture(scope="module")
def trained():
    dense = train_dense(EXPERIMENT).model
    return dense, EXPERIMENT.load_data()


@pytest.fixture(scope="module")
def sweep(trained):
    dense, data = trained
    return compute_sweep(dense, data, "magnitude", get_method("magnitude").settings(), [0.0, 0.5, 0.8, 0.95], seed=EXPERIMENT.seed)


def test_every_frame_carries_its_points_line(sweep):
    active = 2
    spec = json.loads(valley_scrub_figure(sweep, active).to_json())
    frames = spec["frames"]
    assert [frame["name"] for frame in frames] == [frame_name(point.target) for point in sweep.points]
    for frame, point in zip(frames, sweep.points):
        line = point.valley
        traces = {trace["name"]: trace for trace in frame["data"]}
        for name, field, scale in LINE_TRACES:
            assert traces[name]["x"] == line.a
            assert traces[name]["y"] == pytest.approx([scale * value for value in getattr(line, field)], rel=1e-12)
        ends = [line.a.index(0.0), line.a.index(1.0)]
        assert traces["models (train loss)"]["y"] == [line.train_loss[i] for i in ends]
        assert traces["here"]["x"] == [100 * point.target] * 2
        assert traces["here"]["y"] == pytest.approx([100 * line.barrier("test"), 100 * line.barrier("train")])
        assert frame["traces"] == list(range(len(frame["data"])))
        assert f"test {100 * line.barrier('test'):.2f} pts" in frame["layout"]["title"]["text"]
    moving = len(frames[active]["data"])
    assert spec["data"][:moving] == frames[active]["data"], "drawn at the active point"
    barriers = {trace["name"]: trace["y"] for trace in spec["data"][moving:]}
    assert barriers["test error barrier"] == pytest.approx([100 * point.valley.barrier("test") for point in sweep.points])
    slider = spec["layout"]["sliders"][0]
    assert slider["active"] == active
    assert [step["args"][0] for step in slider["steps"]] == [[frame["name"]] for frame in frames]
    assert spec["layout"]["yaxis"]["type"] == "log", "one fixed loss axis for every frame"
    assert len(json.dumps(spec)) < 100_000


def test_scrubber_at_another_point_equals_building_it_there(sweep):
    base = valley_scrub_figure(sweep, 0).to_dict()
    for active in range(len(sweep.points)):
        moved = json.loads(scrubber_at(base, active).to_json())
        assert moved == json.loads(valley_scrub_figure(sweep, active).to_json())
    assert base["layout"]["sliders"][0]["active"] == 0, "the stored figure is only read"


@pytest.mark.parametrize("restrict", [False, True])
def test_coarse_plane_is_the_plane_on_the_small_fixed_batch(trained, restrict):
    dense, data = trained
    result = prune_model(dense, data, "magnitude", 0.8, {}, seed=EXPERIMENT.seed)
    surface = coarse_plane(dense, result, data, EXPERIMENT.seed, restrict=restrict)
    batch = landscape.fixed_batch(data.x_train, data.y_train, COARSE_BATCH, seed=EXPERIMENT.seed)
    reference = landscape.plane(dense, landscape.full_tensors(dense), result.pruned_tensors, batch, points=COARSE_GRID,
                                mask=result.mask if restrict else None, seed=EXPERIMENT.seed)
    assert (surface.a, surface.b, surface.restricted) == (reference.a, reference.b, restrict)
    assert sum(surface.loss, []) == pytest.approx(sum(reference.loss, []), rel=1e-5, abs=1e-7)
    assert sum(surface.accuracy, []) == pytest.approx(sum(reference.accuracy, []))
    # Its a axis is the sweep's line's, its batch the first samples of the sweep's: the b = 0 row is that line's train curve.
    sweep_batch = landscape.fixed_batch(data.x_train, data.y_train, VALLEY_BATCH, seed=EXPERIMENT.seed)
    assert COARSE_BATCH <= VALLEY_BATCH and batch[0].equal(sweep_batch[0][:COARSE_BATCH])
    line = landscape.line_path(dense, landscape.full_tensors(dense), result.pruned_tensors, batch, batch,
                               points=VALLEY_POINTS)
    assert surface.a == line.a
    assert surface.loss[surface.b.index(0.0)] == pytest.approx(line.train_loss, rel=1e-5, abs=1e-7)


def test_loss_valley_page_scrubs_without_a_button():
    at = start(model="mlp", epochs=1)
    settle(at.switch_page("views/valley.py").run())
    assert not at.exception and not at.error
    assert at.selectbox(key="valley.method").value == "magnitude"
    line = figure_starting(at, SCRUB_TITLE)
    frames = line["frames"]
    assert len(frames) > 20 and len(line["layout"]["sliders"][0]["steps"]) == len(frames)
    targets = [float(frame["name"]) for frame in frames]
    active = line["layout"]["sliders"][0]["active"]
    assert active == min(range(len(targets)), key=lambda index: abs(targets[index] - 0.9)), "opens at the slider's sparsity"
    for frame in frames:
        names = [trace["name"] for trace in frame["data"]]
        assert {"train loss", "test loss", "train accuracy (%)", "test accuracy (%)"} <= set(names)
        assert frame["data"][0]["x"][0] == -0.5 and frame["data"][0]["x"][-1] == 1.5
    coarse = figure_starting(at, "Train loss over the plane, coarse")
    assert coarse["data"][0]["type"] == "contour"
    assert coarse["data"][0]["x"] == frames[active]["data"][0]["x"], "the plane's a axis is the line's"
    assert array(coarse["data"][0]["z"]).shape == (COARSE_GRID, len(coarse["data"][0]["x"]))
    assert coarse["data"][1]["text"] == ["dense", "pruned"]
    titles = [spec["layout"]["title"]["text"] for spec in figures(at)]
    assert "Train loss over the plane of dense, pruned and a random direction" not in titles, "full plane waits"
    assert at.button(key="valley.compute").value is False
    assert not [metric for metric in at.metric if metric.label.startswith("Top Hessian")]

    at.slider(key="valley.sparsity").set_value(0.5).run()
    assert not at.exception and not at.error
    moved = figure_starting(at, SCRUB_TITLE)
    assert moved["layout"]["sliders"][0]["active"] == min(range(len(targets)), key=lambda index: abs(targets[index] - 0.5))
    assert moved["frames"] == frames, "one sweep, sent whole"
    assert not np.allclose(array(figure_starting(at, "Train loss over the plane, coarse")["data"][0]["z"]),
                           array(coarse["data"][0]["z"])), "the coarse plane follows the slider"

    at.selectbox(key="valley.method").set_value("grda").run()
    assert not at.exception and not at.error
    titles = [spec["layout"]["title"]["text"] for spec in figures(at)]
    assert not [title for title in titles if title.startswith(SCRUB_TITLE) or "coarse" in title]
    assert at.button(key="valley.run").value is False, "a method that trains waits for its button"
