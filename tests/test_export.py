"""Exports other tools load without this project's code: ONNX (onnxruntime is the oracle),
torch.export programs, the per-layer CSV, and the Prune page's download buttons."""

import csv
import io

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from pruning.export import export_onnx, export_program, layer_rows, layers_csv, write_exports
from pruning.metrics import model_stats
from pruning.models import build_model, prunable_weight_names
from pruning.physical.costs import real_costs
from pruning.physical.removal import remove_pruned_channels
from pruning.selection import mask_from_scores
from tests.app_driver import start
from tests.test_physical import make, masked_model, masked_state, structured_mask

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def pruned():
    """resnet20 with trained-like batch norms, 50% of its filters masked, and its smaller model."""
    model = make("resnet20")
    mask = structured_mask(model, 0.5, "layerwise")
    result = remove_pruned_channels(model, mask, SHAPE, masked_state(model, mask))
    return model, mask, result, masked_model("resnet20", model, mask)


def batch(size: int, seed: int = 11) -> torch.Tensor:
    return torch.randn(size, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_onnx_runs_in_onnxruntime_and_matches_the_masked_model(pruned, tmp_path):
    _, _, result, reference = pruned
    report = export_onnx(result.model, SHAPE, tmp_path / "small.onnx")
    assert report["matches"] and report["max_abs_difference"] < 1e-4
    onnx.checker.check_model(str(tmp_path / "small.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "small.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["logits"]
    for size in (1, 6):  # any batch size: the batch dimension is dynamic
        x = batch(size)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.inference_mode():
            expected = reference(x).numpy()
        assert got.shape == (size, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * (1 + abs(expected).max()))
    # the file holds the smaller model: its first conv has the smaller model's filters, not the dense 16
    weights = {init.name: init.dims for init in onnx.load(str(tmp_path / "small.onnx")).graph.initializer}
    first = [dims for dims in weights.values() if list(dims[1:]) == [3, 3, 3]]
    assert first and first[0][0] == result.model.conv1.out_channels


def test_torch_export_round_trip(pruned, tmp_path):
    _, _, result, reference = pruned
    report = export_program(result.model, SHAPE, tmp_path / "small.pt2")
    assert report["max_abs_difference"] < 1e-5
    loaded = torch.export.load(str(tmp_path / "small.pt2")).module()
    for size in (1, 5):
        x = batch(size, seed=size)
        with torch.inference_mode():
            assert torch.allclose(loaded(x), reference(x), rtol=1e-4, atol=1e-5)


def test_layers_csv_is_the_per_layer_table(pruned):
    model, mask, result, _ = pruned
    stats = model_stats(model, mask, SHAPE)
    rows = list(csv.DictReader(io.StringIO(layers_csv(stats, result))))
    assert [row["layer"] for row in rows] == [layer.name for layer in stats.layers]
    for row, layer in zip(rows, stats.layers):
        assert int(row["params"]) == layer.params and int(row["nonzero"]) == layer.nonzero
        assert float(row["sparsity"]) == pytest.approx(layer.sparsity)
    small = dict(result.model.named_parameters())
    for row in rows:
        assert int(row["physical_params"]) == small[row["layer"]].numel()
        zeroed = int((~mask[row["layer"]].flatten(1).any(1)).sum()) if row["layer"] in mask else 0
        assert int(row["masked_channels"]) == zeroed
    assert layer_rows(stats, None)[0]["physical_params"] is None


def test_without_a_physical_model_nothing_is_exported_and_the_answer_says_why(tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10)
    parameters = dict(model.named_parameters())
    mask = mask_from_scores({name: parameters[name].detach().abs() for name in prunable_weight_names(model)}, 0.7)
    costs = real_costs(model, mask, (1, 8, 8), masked_state(model, mask), batch_sizes=(1,))
    written = write_exports(tmp_path / "out", costs, model_stats(model, mask, (1, 8, 8)))
    assert written["files"] == [] and "cannot be applied physically" in written["note"]
    assert not (tmp_path / "out").exists()


def test_prune_page_measures_the_three_costs_and_offers_the_files_behind_a_button():
    at = start(model="mlp", epochs=2)
    at.radio(key="magnitude.granularity").set_value("structured").run()
    at.slider(key="sparsity").set_value(0.5).run()
    assert not at.exception
    assert not at.get("download_button"), "nothing is timed or exported before the button is pressed"
    at.button(key="measure_costs").click().run()
    assert not at.exception and not at.error, [error.value for error in at.error]
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels == ["result.json", "layers.csv", "model.pt", "physical.onnx", "physical.pt2"]
    table = at.dataframe[0].value
    assert list(table["model"]) == ["dense", "masked", "physical"]
    assert table["params"].iloc[2] < table["params"].iloc[0]
    assert table["latency batch 64 (ms)"].notna().all()
    assert any("masked neurons/filters physically" in caption.value for caption in at.caption)
    at.radio(key="magnitude.granularity").set_value("unstructured").run()
    at.button(key="measure_costs").click().run()
    assert not at.exception
    assert any("cannot be applied physically" in info.value for info in at.info)
    assert [button.proto.label for button in at.get("download_button")] == ["result.json", "layers.csv", "model.pt"]
