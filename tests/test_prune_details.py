"""The Prune page shows a method's own numbers: the per-layer targets of the allocation it used,
the layers N:M leaves dense, and SparseGPT's errors and weight movements (AppTest, mlp)."""

import pytest

from pruning.experiment import Experiment, train_dense
from pruning.pipeline import prune_model
from pruning.train import TrainConfig
from tests.app_driver import figure_starting, figures, start

EXPERIMENT = Experiment(model="mlp", train=TrainConfig(epochs=2))


@pytest.fixture
def app():
    at = start(wait_for_sweeps=False, model="mlp", epochs=2)
    assert not at.exception
    return at


def test_the_allocation_targets_are_those_the_pruning_used(app):
    app.radio(key="magnitude.scope").set_value("erk").run()
    assert not app.exception and not app.error
    bars = figure_starting(app, "Per-layer targets")["data"][0]
    dense = train_dense(EXPERIMENT).model
    expected = prune_model(dense, EXPERIMENT.load_data(), "magnitude", 0.8, {"scope": "erk"}).details.layer_targets
    assert bars["x"] == [name.removesuffix(".weight") for name in expected]
    assert bars["y"] == pytest.approx([100 * value for value in expected.values()])


def test_n_m_lists_the_layers_it_leaves_dense(app):
    app.radio(key="magnitude.granularity").set_value("nm").run()
    app.radio(key="magnitude.nm_pattern").set_value("4:8").run()
    assert not app.exception and not app.error
    assert any("fc2, fc3" in info.value.replace(".weight", "") for info in app.info), [info.value for info in app.info]


def test_sparsegpt_shows_its_errors_and_weight_movements(app):
    app.selectbox(key="method").set_value("sparsegpt").run()
    assert not app.exception and not app.error
    spec = next(spec for spec in figures(app) if any("surviving weights moved" in note.get("text", "")
                                                      for note in spec["layout"].get("annotations", [])))
    dense = train_dense(EXPERIMENT).model
    details = prune_model(dense, EXPERIMENT.load_data(), "sparsegpt", 0.8).details
    masked, updated = spec["data"][0], spec["data"][1]
    assert updated["y"] == pytest.approx(list(details.reconstruction_error.values()))
    assert masked["y"] == pytest.approx(list(details.masked_error.values()))
    assert all(a <= b for a, b in zip(updated["y"], masked["y"])), "the update lowers every layer's error"


def test_the_masks_page_zooms_onto_n_m_groups():
    at = start(wait_for_sweeps=False, model="mlp", epochs=2)
    at.switch_page("views/masks.py").run()
    at.radio(key="masks.magnitude.granularity").set_value("nm").run()
    assert not at.exception and not at.error
    spec = next(spec for spec in figures(at) if spec["layout"].get("meta", {}).get("counts"))
    rows, inputs = train_dense(EXPERIMENT).model.fc1.weight.shape  # the first layer is shown
    assert spec["layout"]["meta"]["counts"] == [0, 0, rows * inputs // 4, 0, 0]  # every group of 4 keeps exactly 2
    cells = spec["data"][0]["z"]
    assert all(sum(row[start:start + 4]) == 2 for row in cells for start in range(0, len(row), 4))


def test_the_masks_page_draws_the_heads_the_heads_method_removed():
    experiment = Experiment(dataset="digits", model="vit-tiny", train=TrainConfig(epochs=1))
    at = start(wait_for_sweeps=False, dataset="digits", model="vit-tiny", epochs=1)
    at.switch_page("views/masks.py").run()
    at.selectbox(key="masks.method").set_value("heads").run()
    at.slider(key="masks.sparsity").set_value(0.5).run()
    assert not at.exception and not at.error
    grid = next(spec for spec in figures(at) if spec["layout"]["title"]["text"] == "Attention heads")["layout"]["meta"]["grid"]
    dense = train_dense(experiment).model
    mask = prune_model(dense, experiment.load_data(), "heads", 0.5).mask
    removed = [[not bool(mask[f"blocks.{name}.attention.v.weight"][head * block.attention.head_dim:
                                                                    (head + 1) * block.attention.head_dim].any())
                for head in range(block.attention.num_heads)] for name, block in dense.blocks.named_children()]
    assert [[value == 0.0 for value in row] for row in grid] == removed
    assert sum(map(sum, removed)) == sum(map(len, removed)) // 2
