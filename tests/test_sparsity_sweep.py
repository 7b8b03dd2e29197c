"""The sparsity sweep behind the scrubbers: every grid point equals pruning at that sparsity
(``prune_model``), nested criteria are scored once, the cache round-trips, and the Prune page's
frames carry the sweep's numbers."""

import json

import pytest
import torch

from pruning.analysis.landscape import fixed_batch, full_tensors, line_path
from pruning.analysis.recall import intensification
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.pipeline import prune_model
from pruning.plots.prune import prune_scrub_figure
from pruning.registry import get_method
from pruning.sparsity_sweep import (
    VALLEY_BATCH,
    VALLEY_POINTS,
    compute_sweep,
    pack,
    sparsity_grid,
    sparsity_sweep,
    sweep_path,
    unpack,
)
from pruning.train import TrainConfig

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
GRID = [0.0, 0.5, 0.9, 0.97]


@pytest.fixture(scope="module")
def dense():
    return train_dense(TINY).model


def test_the_default_grid_runs_from_0_to_099_denser_near_the_top():
    grid = sparsity_grid()
    assert len(grid) == 50 and grid[0] == 0.0 and grid[-1] == 0.99 and grid == sorted(set(grid))
    steps = [b - a for a, b in zip(grid, grid[1:])]
    assert steps[-1] < steps[0] / 2, "the top of the range is sampled more finely"
    with pytest.raises(BadInputError):
        sparsity_grid(points=1)


@pytest.mark.parametrize("method, overrides", [
    ("magnitude", {}),
    ("snip", {"scope": "layerwise"}),
    ("magnitude", {"granularity": "structured"}),
    ("random", {"granularity": "block", "block_size": 2}),
    ("synflow", {"rounds": 3}),
    ("magnitude", {"scope": "erk"}),
    ("taylor", {"scope": "owl", "allocation_samples_per_class": 5}),
    ("magnitude", {"scope": "sensitivity", "allocation_samples_per_class": 5}),
])
def test_every_point_equals_prune_model_at_that_sparsity(dense, method, overrides):
    data = TINY.load_data()
    settings = get_method(method).settings(overrides)
    sweep = compute_sweep(dense, data, method, settings, GRID, seed=TINY.seed)
    assert sweep.nested == (method != "synflow")
    train_batch = fixed_batch(data.x_train, data.y_train, VALLEY_BATCH, seed=TINY.seed)
    test_batch = fixed_batch(data.x_test, data.y_test, VALLEY_BATCH, seed=TINY.seed)
    for point, target in zip(sweep.points, GRID):
        oracle = prune_model(dense, data, method, target, overrides, seed=TINY.seed)
        assert point.target == target
        for name, keep in oracle.mask.items():
            assert torch.equal(point.mask[name], keep), (target, name)
        assert point.accuracy == oracle.pruned.accuracy and point.loss == pytest.approx(oracle.pruned.loss)
        assert point.per_class_recall == oracle.pruned.per_class_recall
        assert point.confusion == oracle.pruned.confusion.tolist()
        assert point.sparsity == oracle.stats.sparsity and point.compression == oracle.stats.compression
        assert point.speedup == oracle.stats.speedup
        assert point.layer_sparsity == {layer.name: layer.sparsity for layer in oracle.stats.layers}
        shift = intensification(sweep.dense_recall, sweep.dense_accuracy, oracle.pruned.per_class_recall,
                                oracle.pruned.accuracy)
        assert (point.alpha, point.ci_low, point.ci_high) == (shift.alpha, shift.ci_low, shift.ci_high)
        line = line_path(dense, full_tensors(dense), oracle.pruned_tensors, train_batch, test_batch, points=VALLEY_POINTS)
        assert point.valley.test_loss == pytest.approx(line.test_loss) and point.valley.a == line.a


def test_the_sweep_is_cached_and_a_damaged_entry_is_computed_again(dense, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    first = sparsity_sweep(TINY, "magnitude", grid=GRID, dense=dense)
    path = sweep_path(TINY, "magnitude", first.settings, GRID)
    assert path.exists()
    again = sparsity_sweep(TINY, "magnitude", grid=GRID, dense=dense)
    assert again is not first and again.grid == first.grid
    assert all(torch.equal(a.mask[name], b.mask[name]) for a, b in zip(again.points, first.points) for name in a.mask)
    assert [point.valley.test_loss for point in again.points] == [point.valley.test_loss for point in first.points]
    path.write_bytes(path.read_bytes()[:100])
    redone = sparsity_sweep(TINY, "magnitude", grid=GRID, dense=dense)
    assert [point.accuracy for point in redone.points] == [point.accuracy for point in first.points]


def test_masks_pack_to_bits_and_back():
    generator = torch.Generator().manual_seed(0)
    mask = {"a": torch.rand(3, 5, 7, generator=generator) > 0.5, "b": torch.rand(13, generator=generator) > 0.3}
    restored = unpack(pack(mask))
    assert all(torch.equal(restored[name], mask[name]) for name in mask)


def test_methods_that_train_have_no_sweep():
    with pytest.raises(BadInputError, match="while it trains"):
        sparsity_sweep(TINY, "dns", use_cache=False)


def test_prune_scrubber_frames_carry_the_sweep_numbers(dense):
    sweep = compute_sweep(dense, TINY.load_data(), "magnitude", get_method("magnitude").settings(), GRID)
    spec = json.loads(prune_scrub_figure(sweep, active=2).to_json())
    assert [frame["name"] for frame in spec["frames"]] == ["0.0000", "0.5000", "0.9000", "0.9700"]
    slider = spec["layout"]["sliders"][0]
    assert slider["active"] == 2 and [step["args"][0] for step in slider["steps"]] == [[f["name"]] for f in spec["frames"]]
    assert all(step["method"] == "animate" for step in slider["steps"])
    for frame, point in zip(spec["frames"], sweep.points):
        accuracy, sparsity, compression, speedup, layers, recall = frame["data"]
        assert accuracy["value"] == pytest.approx(100 * point.accuracy)
        assert accuracy["delta"]["reference"] == pytest.approx(100 * sweep.dense_accuracy)
        assert sparsity["value"] == pytest.approx(100 * point.sparsity)
        assert (compression["value"], speedup["value"]) == pytest.approx((point.compression, point.speedup))
        assert layers["y"] == pytest.approx([100 * point.layer_sparsity[name] for name in sweep.layer_params])
        assert recall["y"] == pytest.approx([100 * value for value in point.per_class_recall])
    assert spec["data"][0]["value"] == pytest.approx(100 * sweep.points[2].accuracy), "drawn at the active frame"
