"""The analyses, physical removal, exports and figures follow the device of their tensors.

Without a GPU the check is the meta detector: a path runs inside ``with torch.device("meta")``
while its models and data stay on the CPU, so a tensor made without a device lands on meta and
fails where it meets a CPU tensor (the very tensors that would land on the wrong device on a GPU).
Each path must run there and give exactly the numbers of the same run outside it. Plus: latency
says which device it timed, and exports say they were written from the CPU. (The device in the
experiment's cache key is tested in tests/test_device.py.)
"""

import io

import pytest
import torch

from pruning.analysis import attribution, landscape
from pruning.analysis.attribution import class_reliance, input_attributions, removed_channels
from pruning.analysis.hessian import (
    hutchinson_trace,
    loss_hessian,
    row_norms,
    sharpness,
    spectral_quadrature,
    top_eigenvalues,
)
from pruning.analysis.limit import (
    LimitSettings,
    Spectrum,
    fundamental_limit,
    hessian_spectrum,
    loss_noise,
    predicted_limit,
    pruned_distance_squares,
    radius_at,
    removable_fraction,
)
from pruning.analysis.recall import class_recall, flipped_predictions, intensification
from pruning.analysis.recall_runs import recall_run
from pruning.analysis.sensitivity import sensitivity_scan
from pruning.analysis.valley import coarse_plane, level_barrier_rows, loss_valley
from pruning.channel_attribution import (
    channel_attributions,
    channel_importance,
    class_channel_attributions,
    input_baseline,
    spread_over_channel,
)
from pruning.experiment import Experiment, train_dense
from pruning.export import export_onnx, export_program
from pruning.masks import Mask
from pruning.models import build_model, prunable_weight_names
from pruning.physical.costs import real_costs
from pruning.physical.latency import Timings, measure_latency
from pruning.physical.removal import remove_pruned_channels
from pruning.pipeline import prune_model
from pruning.plots.attributions import (
    channel_attribution_figure,
    class_channel_figure,
    class_reliance_figure,
    input_attribution_figure,
)
from pruning.plots.limit import spectral_density_figure
from pruning.plots.masks import kernel_grid_figure, mask_change_figure, mask_heatmap_figure
from pruning.plots.patterns import head_grid_figure, nm_zoom_figure
from pruning.plots.recall import confusion_change_figure, display_pixels, flipped_images_figure, recall_gap_figure
from pruning.selection import mask_from_scores
from pruning.tensor_files import load_tensor_file, read_tensors, save_safetensors
from pruning.train import TrainConfig
from tests.test_device import assert_same
from tests.test_landscape import TinyNet
from tests.test_physical import make, masked_state, structured_mask

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
FAST_LIMIT = LimitSettings(lanczos_steps=8, row_probes=2, grid_step=0.1, bins=200, hessian_samples=200)


def on_meta(work, *args, **kwargs):
    """``work(*args, **kwargs)`` with meta as the default device (the models and data stay on the CPU)."""
    with torch.device("meta"):
        return work(*args, **kwargs)


def same_on_meta(work, *args, **kwargs):
    """Run ``work`` normally and under the meta detector; both must agree exactly."""
    expected = work(*args, **kwargs)
    assert_same(expected, on_meta(work, *args, **kwargs))
    return expected


@pytest.fixture(scope="module")
def tiny():
    """A tiny model with moved batch-norm statistics, its weights with half of every layer pruned,
    the mask, and a train and a test batch."""
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    dense = landscape.full_tensors(model)
    mask = Mask({name: torch.rand(dense[name].shape) > 0.5 for name in ("conv.weight", "fc1.weight", "fc2.weight")})
    pruned = mask.masked_parameters(model)
    x_train, x_test = torch.randn(40, 1, 6, 6), torch.randn(30, 1, 6, 6)
    y_train, y_test = torch.randint(0, 3, (40,)), torch.randint(0, 3, (30,))
    return model, dense, pruned, mask, (x_train, y_train), (x_test, y_test)


@pytest.fixture(scope="module")
def trained(one_thread):
    """TINY's dense model, data, and magnitude pruning of it at 50% (computed outside the detector)."""
    model = train_dense(TINY).model
    data = TINY.load_data()
    return model, data, prune_model(model, data, "magnitude", 0.5, seed=TINY.seed)


# --- Hessian, landscape, valley, limit --------------------------------------------------------


def test_hessian_products_and_spectra_on_the_weights_device(tiny):
    model, _, pruned, _, (x, y), _ = tiny
    grid = torch.linspace(-2.0, 2.0, 41)
    matrix = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    matrix = matrix + matrix.T

    def spectra():
        hessian = loss_hessian(model, x, y)
        assert hessian.device == torch.device("cpu")
        dtype = hessian.dtype
        norms = row_norms(hessian, hessian.size, 2, seed=3, dtype=dtype)
        quadrature = spectral_quadrature(hessian, hessian.size, 6, 2, seed=4, dtype=dtype, support=norms > 0)
        return {
            "top": top_eigenvalues(hessian, hessian.size, 3, 8, seed=1, dtype=dtype),
            "trace": hutchinson_trace(hessian, hessian.size, 3, seed=2, dtype=dtype),
            "rows": norms,
            "nodes": quadrature.nodes, "weights": quadrature.weights, "density": quadrature.density(grid, 0.2),
            "pruned": sharpness(model, x, y, parameters=pruned, iterations=5, probes=2),
            "plain operator": top_eigenvalues(lambda v: matrix @ v, 6, 2, 6),
        }

    result = same_on_meta(spectra)
    assert result["rows"].numel() == sum(model.get_parameter(name).numel() for name in prunable_weight_names(model))


def test_landscape_lines_planes_and_barriers(tiny):
    model, dense, pruned, mask, train, test = tiny
    levels = [landscape.Level(0, 0.0, dense), landscape.Level(1, 0.5, pruned)]

    def surfaces():
        return {
            "batch": landscape.fixed_batch(*train, 16, seed=3),
            "direction": landscape.filter_normalized_direction(model, dense, seed=2, mask=mask),
            "line": landscape.line_path(model, dense, pruned, train, test, points=5, chunk=3),
            "plane": landscape.plane(model, dense, pruned, train, points=3, mask=mask, seed=1),
            "unvectorised": landscape.plane(model, dense, pruned, train, points=3, vectorise=False),
            "barriers": landscape.level_barriers(model, levels, test, points=3),
        }

    same_on_meta(surfaces)


def test_the_valley_workflow(trained):
    model, data, result = trained

    def valley():
        return {"valley": loss_valley(model, result, data, seed=0, grid=3, batch_size=32, restrict=True,
                                      with_sharpness=True).to_json(),
                "coarse": coarse_plane(model, result, data, seed=0, restrict=True, grid=3, batch_size=16)}

    same_on_meta(valley)


def test_the_iterative_levels_of_the_valley(trained):
    model = trained[0]
    same_on_meta(level_barrier_rows, TINY, "magnitude", 0.6, None, rounds=2, batch_size=64, dense=model)


def test_the_fundamental_limit(trained, fresh_cache):
    model, data, _ = trained
    x, y = data.x_train[:100], data.y_train[:100]
    flat = Spectrum(torch.zeros(3), torch.zeros(3), 0.2, 0.01)

    def pieces():
        eps = loss_noise(model, data.x_train, data.y_train, 64)
        spectrum, display, details = hessian_spectrum(model, x, y, FAST_LIMIT, eps)
        squares = pruned_distance_squares(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        radius = radius_at([0.0, 0.25, 0.5, 0.9], squares)
        return {"eps": eps, "spectrum": spectrum, "display": display, "details": details, "radius": radius,
                "removable": removable_fraction(radius, spectrum), "scalar": removable_fraction(0.3, spectrum),
                "predicted": predicted_limit(squares, spectrum),
                "flat": removable_fraction([0.1, 1.0], flat)}

    same_on_meta(pieces)
    limit = on_meta(fundamental_limit, TINY, FAST_LIMIT, use_cache=False)  # trains the L1 model under the detector
    assert limit.to_json() == fundamental_limit(TINY, FAST_LIMIT, use_cache=False).to_json()


# --- recall, sensitivity, attributions --------------------------------------------------------


def test_recall_statistics_and_runs(trained):
    model, data, result = trained
    dense = model(data.x_test).argmax(1).detach()
    pruned = result.pruned.predictions

    def statistics():
        recall = class_recall(data.y_test, dense, data.num_classes)
        return {"recall": recall, "flips": flipped_predictions(data.y_test, dense, pruned, data.num_classes),
                "alpha": intensification(recall, 0.9, class_recall(data.y_test, pruned, data.num_classes), 0.8,
                                         resamples=50)}

    same_on_meta(statistics)
    same_on_meta(recall_run, TINY, "magnitude", 0.6, 0.5, iterative=False)


@pytest.mark.parametrize("method", ["magnitude", "snip"])
def test_sensitivity_scans(trained, method):
    same_on_meta(sensitivity_scan, TINY, method, {}, [0.5, 0.9], "test", dense=trained[0], use_cache=False)


def test_channel_and_input_attributions(one_thread):
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 16, 16), 10).eval()
    x = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) % 10
    layers = ["conv1", "conv2", "fc1"]
    mask = structured_mask(model, 0.5, "layerwise")

    def attributions():
        baseline = input_baseline(x, (0.1,), (0.3,))
        per_sample = {method: channel_attributions(model, layers, x, y, method, n_steps=4, baseline=baseline)
                      for method in ("gradxact", "conductance", "ablation")}
        matrices = class_channel_attributions(per_sample["ablation"], y, 10)
        importance = channel_importance(matrices)
        return {"per sample": per_sample, "matrices": matrices, "importance": importance,
                "spread": spread_over_channel(importance["conv1"], model.conv1.weight.shape),
                "removed": removed_channels(mask, layers),
                "reliance": class_reliance(matrices, mask, [0.9] * 10, [0.8 + 0.01 * k for k in range(10)]),
                "integrated": input_attributions(model, x[:3], y[:3], baseline=baseline, n_steps=4),
                "saliency": input_attributions(model, x[:3], y[:3], "saliency")}

    same_on_meta(attributions)


def test_class_attributions_on_the_test_split(trained):
    model, data, _ = trained
    same_on_meta(attribution.test_class_attributions, model, data, "conductance", n_steps=4, per_class=2)


# --- physical removal, latency, exports, tensor files -----------------------------------------


def test_physical_removal_runs_on_a_cpu_copy(one_thread):
    model = make("resnet20")
    mask = structured_mask(model, 0.5, "layerwise")
    result = same_on_meta(remove_pruned_channels, model, mask, (3, 16, 16), masked_state(model, mask))
    assert result.removed_channels > 0 and result.to_json()["removed_on"] == "cpu"
    assert next(result.model.parameters()).device == torch.device("cpu")


def test_costs_and_latency_say_which_device_they_timed(one_thread):
    model = make("lenet5")
    mask = structured_mask(model, 0.5, "layerwise")

    def costs():
        report = real_costs(model, mask, (1, 16, 16), masked_state(model, mask), batch_sizes=(1,)).to_json()
        assert report["latency_settings"]["device"] == "cpu"
        assert report["latency_settings"]["device_name"].startswith("cpu (")
        return {key: value for key, value in report.items() if key not in ("latency_ms", "measured_speedup")}

    same_on_meta(costs)
    timings = on_meta(measure_latency, {"dense": model}, (1, 16, 16), batch_sizes=(1,), repeats=3)
    assert isinstance(timings, Timings) and timings.device == "cpu" and timings.device_name.startswith("cpu (")
    assert set(timings) == {"dense"} and timings["dense"][1] > 0


def test_exports_write_cpu_files(one_thread, tmp_path):
    model = make("lenet5")
    mask = structured_mask(model, 0.5, "layerwise")
    small = remove_pruned_channels(model, mask, (1, 16, 16), masked_state(model, mask)).model
    onnx = on_meta(export_onnx, small, (1, 16, 16), tmp_path / "small.onnx")
    program = on_meta(export_program, small, (1, 16, 16), tmp_path / "small.pt2")
    assert onnx["matches"] and onnx["exported_on"] == program["exported_on"] == "cpu"
    assert program["max_abs_difference"] < 1e-5
    assert_same(export_onnx(small, (1, 16, 16), tmp_path / "small.onnx"), onnx)


def test_tensor_files_read_onto_the_cpu(tmp_path):
    tensors = {"keep": torch.rand(3, 4) > 0.5, "weight": torch.randn(3, 4)}
    on_meta(save_safetensors, tensors, tmp_path / "t.safetensors")
    for read in (load_tensor_file(tmp_path / "t.safetensors"), on_meta(load_tensor_file, tmp_path / "t.safetensors")):
        assert_same(tensors, dict(sorted(read.items())))  # safetensors gives the names in no fixed order
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    assert_same(tensors, same_on_meta(read_tensors, buffer.getvalue()))


# --- figures that take tensors ----------------------------------------------------------------


def test_figures_built_from_tensors(tiny, trained):
    model, dense, _, mask, _, _ = tiny
    data = trained[1]
    vit = build_model("vit-tiny", (3, 8, 8), 10)
    vit_weights = dict(vit.named_parameters())
    vit_mask = mask_from_scores({name: vit_weights[name].detach().abs() for name in prunable_weight_names(vit)}, 0.5)
    maps = {"integrated-gradients": {"dense": torch.randn(2, 6, 6), "pruned": torch.randn(2, 6, 6)}}
    matrix, removed = torch.rand(3, 4), torch.tensor([True, False, False, True])
    dense_confusion, pruned_confusion = torch.eye(3, dtype=torch.long) * 5, torch.ones(3, 3, dtype=torch.long)
    flips = flipped_predictions(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]), torch.tensor([1, 1, 2]), 3)
    grid, density = torch.linspace(0, 1, 5), torch.rand(5)

    def figures():
        built = {
            "zoom": nm_zoom_figure("fc1", mask["fc1.weight"], dense["fc1.weight"], 4),
            "heads": head_grid_figure(vit, vit_mask),
            "heatmap": mask_heatmap_figure("conv", mask["conv.weight"]),
            "kernels": kernel_grid_figure("conv", mask["conv.weight"]),
            "change": mask_change_figure("fc1", mask["fc1.weight"], ~mask["fc1.weight"]),
            "inputs": input_attribution_figure(display_pixels(data.x_test[:2], data.mean, data.std), maps, ["a", "b"]),
            "channels": channel_attribution_figure({"fc1": (matrix[0], removed)}, "gradxact"),
            "classes": class_channel_figure("fc1", matrix, removed, ["a", "b", "c"]),
            "reliance": class_reliance_figure(["a", "b", "c"], matrix[:, 0], matrix[:, 1], 0.5, 0.4),
            "confusion": confusion_change_figure(["a", "b", "c"], dense_confusion, pruned_confusion),
            "gaps": recall_gap_figure(["a", "b", "c"], matrix[:, 0], matrix[:, 1], 1.1),
            "flips": flipped_images_figure(data.x_test[:3], data.mean, data.std, flips, [str(k) for k in range(10)]),
            "density": spectral_density_figure(grid, density, 0.1),
        }
        return {name: figure.to_json() for name, figure in built.items()}

    same_on_meta(figures)
