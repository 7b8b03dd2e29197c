"""The Sensitivity page (AppTest on the real app, mlp on mnist-5k): the scan behind its button, the
layer x class heatmap against the engine's scan and against a layer pruned by torch.nn.utils.prune
and scored by sklearn, the suggested allocation against prune_model, bad input, the link that applies
the allocation on the Prune page; and the figure functions' shapes."""

import copy
import math
from urllib.parse import parse_qsl

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score
from streamlit.testing.v1 import AppTest
from torch.nn.utils import prune

from pruning.analysis.sensitivity import DEFAULT_SPARSITIES, sensitivity_scan
from pruning.experiment import Experiment, train_dense
from pruning.layer_scan import LayerScan
from pruning.methods.oneshot import CriterionMethod
from pruning.pipeline import prune_model
from pruning.plots.sensitivity import (
    allocation_figure,
    allocation_rows,
    recall_lost_figure,
    scan_rows,
    sensitivity_curves_figure,
)
from pruning.registry import get_method, method_names
from pruning.train import TrainConfig
from tests.app_driver import APP, metric, open_page
from tests.app_driver import figure_starting as figure

TINY = Experiment(model="mlp", train=TrainConfig(epochs=1))
HEATMAP, CURVES, ALLOCATION = "Recall lost per layer and class", "Accuracy with one layer pruned", "Per-layer sparsity at"


@pytest.fixture(scope="module")
def dense(one_thread):
    return train_dense(TINY).model, TINY.load_data()


@pytest.fixture(scope="module")
def page(dense):
    """The page after its scan (magnitude, the default sparsities, the test split)."""
    at = open_page("sensitivity", model="mlp", epochs=1)
    assert not at.get("plotly_chart"), "nothing is scanned before the button"
    assert any("Scan layers" in box.value for box in at.info)
    at.button(key="sensitivity.run").click().run()
    assert not at.exception and not at.error
    assert at.get("status"), "the scan ran with its progress"
    return at


@pytest.fixture(scope="module")
def engine_scan(dense):
    model, _ = dense
    return sensitivity_scan(TINY, "magnitude", {}, list(DEFAULT_SPARSITIES), "test", dense=model, use_cache=False)


def test_the_picker_offers_one_shot_criteria_and_no_allocation(page):
    offered = page.selectbox(key="sensitivity.method").options
    assert offered == [name for name in method_names() if isinstance(get_method(name), CriterionMethod)]
    assert {"magnitude", "snip", "taylor"} <= set(offered) and not any(get_method(name).trains for name in offered)
    assert "sensitivity.magnitude.granularity" in [radio.key for radio in page.radio]
    assert "sensitivity.magnitude.scope" not in [radio.key for radio in page.radio], "the scope is hidden"
    assert any("does not apply here" in caption.value for caption in page.caption), "and the page says why"


def test_the_heatmap_is_the_engines_recall_lost(page, engine_scan):
    index = engine_scan.sparsities.index(0.9)
    spec = figure(page, HEATMAP)
    trace = spec["data"][0]
    assert "90%" in spec["layout"]["title"]["text"]
    assert trace["y"] == engine_scan.layers == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert trace["x"] == [str(digit) for digit in range(10)]
    z = np.array(trace["z"])
    assert z.shape == (3, 10)
    assert z == pytest.approx(100 * np.array(engine_scan.recall_lost(index)))
    assert trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"] and trace["zmax"] >= np.abs(z).max(), "zero centred"
    assert np.abs(z).max() > 1, "pruning one layer to 90% costs some class recall"
    assert np.array(trace["customdata"])[:, :, 0] == pytest.approx(100 * np.tile(engine_scan.dense_recall, (3, 1)))


def test_a_heatmap_row_is_that_layer_pruned_by_torch_and_scored_by_sklearn(page, dense):
    """The independent oracle: fc3 alone pruned 90% by L1 magnitude (torch.nn.utils.prune), the
    recall of every class from sklearn, dense minus pruned."""
    model, data = dense
    x, y = data.x_test, data.y_test.numpy()
    with torch.no_grad():
        dense_predictions = model.eval()(x).argmax(1).numpy()
        pruned = copy.deepcopy(model).eval()
        prune.l1_unstructured(pruned.fc3, "weight", amount=0.9)
        pruned_predictions = pruned(x).argmax(1).numpy()
    labels = list(range(10))
    lost = (recall_score(y, dense_predictions, labels=labels, average=None, zero_division=0)
            - recall_score(y, pruned_predictions, labels=labels, average=None, zero_division=0))
    trace = figure(page, HEATMAP)["data"][0]
    row = np.array(trace["z"])[trace["y"].index("fc3.weight")]
    assert row == pytest.approx(100 * lost, abs=1e-6)
    assert np.abs(row).max() > 1


def test_the_curves_and_the_table_read_the_scan(page, engine_scan):
    spec = figure(page, CURVES)
    lines = {trace["name"]: trace for trace in spec["data"]}
    assert list(lines)[:3] == engine_scan.layers and len(lines) == 4, "one line per layer, and the dense one"
    for layer, accuracy in zip(engine_scan.layers, engine_scan.accuracy):
        assert lines[layer]["x"] == pytest.approx([100 * s for s in DEFAULT_SPARSITIES])
        assert lines[layer]["y"] == pytest.approx([100 * value for value in accuracy])
    dense_line = spec["data"][-1]
    assert dense_line["line"]["dash"] == "dash" and dense_line["y"] == pytest.approx([100 * engine_scan.dense_accuracy] * 2)
    table = page.dataframe[0].value
    assert list(table["layer"]) == engine_scan.layers
    assert list(table["weights"]) == [784 * 300, 300 * 100, 100 * 10]
    assert list(table["accuracy at 98%"]) == pytest.approx([100 * row[-1] for row in engine_scan.accuracy])
    assert list(table["loss at 30%"]) == pytest.approx([row[0] for row in engine_scan.loss])
    lost = np.array(engine_scan.recall_lost(engine_scan.sparsities.index(0.9)))
    assert list(table["worst class at 90%"]) == [str(int(np.argmax(row))) for row in lost]


def test_the_sparsity_chooser_redraws_without_scanning_again(page, engine_scan):
    page.select_slider(key="sensitivity.shown").set_value(0.5).run()
    assert not page.exception and not page.error and not page.get("status"), "no new scan"
    spec = figure(page, HEATMAP)
    assert "50%" in spec["layout"]["title"]["text"]
    assert np.array(spec["data"][0]["z"]) == pytest.approx(100 * np.array(engine_scan.recall_lost(1)))
    assert figure(page, CURVES)["layout"]["shapes"][0]["x0"] == pytest.approx(50)
    page.select_slider(key="sensitivity.shown").set_value(0.9).run()


def test_the_suggested_allocation_is_prune_models(page, dense):
    model, data = dense
    table = page.dataframe[1].value
    assert "90% overall" in figure(page, ALLOCATION)["layout"]["title"]["text"]
    for allocation in ("sensitivity", "layerwise", "global"):
        result = prune_model(model, data, "magnitude", 0.9, {"scope": allocation}, seed=0)
        targets = result.details.layer_targets
        assert result.details.allocation == allocation
        assert list(table["layer"]) == list(targets)
        assert list(table[f"{allocation} (% pruned)"]) == pytest.approx([100 * value for value in targets.values()])
        assert metric(page, f"{allocation}: accuracy") == f"{100 * result.pruned.accuracy:.2f}%"
    weights = np.array(table["weights"])
    for allocation in ("sensitivity", "global"):  # both hit the overall sparsity exactly
        assert (weights * table[f"{allocation} (% pruned)"]).sum() / weights.sum() == pytest.approx(90, abs=1e-3)
    assert list(table["layerwise (% pruned)"]) == pytest.approx([90] * 3)
    assert any("training** samples" in markdown.value for markdown in page.markdown), "it says where it measures"


def test_a_changed_choice_keeps_the_scan_shown_with_a_warning(page):
    page.radio(key="sensitivity.split").set_value("train").run()
    assert not page.exception and figure(page, HEATMAP)
    assert any("not the choices above" in warning.value for warning in page.warning)
    page.radio(key="sensitivity.split").set_value("test").run()
    assert not any("not the choices above" in warning.value for warning in page.warning)


def test_bad_sparsities_give_a_message_not_a_traceback(page):
    page.multiselect(key="sensitivity.sparsities").set_value([]).run()
    assert not page.exception
    assert any("at least one sparsity" in error.value for error in page.error)
    assert page.button(key="sensitivity.run").disabled
    page.multiselect(key="sensitivity.sparsities").set_value([0.5, "1.5"]).run()
    assert not page.exception and any("sparsity must be in [0, 1)" in error.value for error in page.error)
    page.multiselect(key="sensitivity.sparsities").set_value([0.5, "ninety"]).run()
    assert not page.exception and any("'ninety' is not a sparsity" in error.value for error in page.error)
    page.multiselect(key="sensitivity.sparsities").set_value([0.5, "93%"]).run()
    assert not page.exception and not page.error
    assert any("at 2 sparsities" in caption.value for caption in page.caption), "93% typed is read as 0.93"
    page.multiselect(key="sensitivity.sparsities").set_value(list(DEFAULT_SPARSITIES)).run()
    assert not page.error


def test_the_allocation_follows_its_slider_to_both_ends(page):
    for sparsity in (0.0, 0.99):
        page.slider(key="sensitivity.sparsity").set_value(sparsity).run()
        assert not page.exception and not page.error
        table = page.dataframe[1].value
        weights, pruned = np.array(table["weights"]), np.array(table["sensitivity (% pruned)"])
        assert (weights * pruned).sum() / weights.sum() == pytest.approx(100 * sparsity, abs=1e-3)
        assert pruned.max() <= 100 and (sparsity > 0 or not pruned.any())


def test_the_apply_link_opens_the_prune_page_with_the_allocation(page):
    page.radio(key="sensitivity.magnitude.granularity").set_value("structured").run()
    page.button(key="sensitivity.run").click().run()
    page.slider(key="sensitivity.sparsity").set_value(0.8).run()
    assert not page.exception and not page.error and not page.warning
    assert figure(page, HEATMAP)["data"][0]["y"] == ["fc1.weight", "fc2.weight"], "structured: the output layer stays"
    link = page.get("page_link")[0]
    assert link.proto.label == "Apply on the Prune page"
    query = dict(parse_qsl(link.proto.query_string))
    assert query == {"model": "mlp", "train.epochs": "1", "method": "magnitude", "sparsity": "0.8", "scope": "sensitivity",
                     "granularity": "structured"}
    targets = page.dataframe[1].value["sensitivity (% pruned)"]
    page.query_params.clear()
    page.query_params.update(query)  # what following the link does: the Prune page at this query
    page.switch_page("views/prune.py").run()
    assert not page.exception and not page.error and not page.warning
    assert page.selectbox(key="method").value == "magnitude"
    assert page.radio(key="magnitude.scope").value == "sensitivity"
    assert page.radio(key="magnitude.granularity").value == "structured"
    assert page.slider(key="sparsity").value == pytest.approx(0.8)
    bars = figure(page, "Sparsity per layer")["data"][0]
    assert bars["x"] == ["fc1", "fc2", "fc3"] and bars["y"][:2] == pytest.approx(list(targets), abs=0.5), \
        "the Prune page prunes each layer as the allocation said"


def test_a_link_to_a_method_the_scan_cannot_take_falls_back_to_magnitude(dense):
    other = next((name for name in method_names() if not get_method(name).trains
                  and not isinstance(get_method(name), CriterionMethod)), None)
    if other is None:
        pytest.skip("every one-shot method is a criterion")
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.switch_page("views/sensitivity.py")
    at.query_params.update({"model": "mlp", "train.epochs": "1", "method": other})
    at.run()
    assert not at.exception and not at.error
    assert any(f"{other} cannot be scanned" in warning.value for warning in at.warning)
    assert at.selectbox(key="sensitivity.method").value == "magnitude"


# --- the figure functions, on a scan made up by hand ---

HAND = LayerScan(
    layers=["a.weight", "b.weight"], sparsities=[0.5, 0.9], achieved=[[0.5, 0.9], [0.5, 0.9]],
    accuracy=[[0.8, 0.5], [0.79, 0.7]], loss=[[0.5, 1.5], [0.6, 0.9]],
    recall=[[[0.9, 0.7, 0.8], [0.2, 0.9, 0.4]], [[0.9, 0.8, 0.7], [0.9, 0.5, 0.7]]],
    dense_accuracy=0.8, dense_loss=0.5, dense_recall=[0.9, 0.8, 0.7], params={"a.weight": 40, "b.weight": 12}, samples=30)


def test_the_heatmap_is_layers_by_classes_in_points():
    trace = recall_lost_figure(HAND, 1, ["x", "y", "z"]).data[0]
    assert np.array(trace.z).shape == (2, 3)
    assert np.array(trace.z) == pytest.approx(np.array([[70, -10, 30], [0, 30, 0]])), "a gain is negative"
    assert list(trace.x) == ["x", "y", "z"] and list(trace.y) == HAND.layers
    assert trace.zmid == 0 and trace.zmin == -70 and trace.zmax == 70
    assert np.array(trace.customdata)[0, 0] == pytest.approx([90, 20]), "dense and pruned recall in the hover"


def test_the_curves_table_and_allocation_figures_have_their_shapes():
    curves = sensitivity_curves_figure(HAND, 0.9)
    assert [trace.name for trace in curves.data] == ["a.weight", "b.weight", "dense (80.00%)"]
    assert list(curves.data[1].y) == pytest.approx([79, 70]) and curves.layout.shapes[0].x0 == pytest.approx(90)
    rows = scan_rows(HAND, 1, ["x", "y", "z"])
    assert [row["worst class at 90%"] for row in rows] == ["x", "y"]
    assert [row["its recall lost at 90% (pts)"] for row in rows] == pytest.approx([70, 30])
    assert rows[0]["accuracy at 50%"] == pytest.approx(80) and rows[1]["loss at 90%"] == 0.9
    targets = {"sensitivity": {"a.weight": 0.95, "b.weight": 0.7}, "layerwise": {"a.weight": 0.9, "b.weight": 0.9}}
    bars = allocation_figure(targets, {"sensitivity": 0.81, "layerwise": 0.6}, 0.9)
    assert [trace.type for trace in bars.data] == ["bar", "bar"]
    assert list(bars.data[0].y) == pytest.approx([95, 70]) and bars.data[0].name == "sensitivity: accuracy 81.00%"
    assert allocation_rows(HAND.params, targets)[1] == {"layer": "b.weight", "weights": 12, "sensitivity (% pruned)": 70.0,
                                                        "layerwise (% pruned)": 90.0}
    assert math.isclose(bars.layout.shapes[0].y0, 90)
