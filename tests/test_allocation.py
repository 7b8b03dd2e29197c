"""Layer-wise sparsity allocation and the one-layer-at-a-time scan, against oracles written here:
RigL's Erdos-Renyi-Kernel densities (its iterative algorithm, not our bisection), OWL's formula on
equal-size layers, activation norms through ``F.unfold``, the scan's numbers through
``torch.nn.utils.prune`` and scikit-learn."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import recall_score
from torch import nn
from torch.nn.utils import prune as torch_prune

from pruning.activations import input_feature_norms
from pruning.allocation import (
    LayerProfile,
    erk_profile,
    layer_amounts,
    outlier_ratio,
    owl_profile,
    sensitivity_profile,
)
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.layer_scan import scan_layers
from pruning.pipeline import prune_model
from pruning.selection import mask_from_scores
from pruning.train import TrainConfig

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))


@pytest.fixture(scope="module")
def dense():
    return train_dense(TINY).model


def rigl_erk_densities(shapes: dict[str, tuple], sparsity: float) -> dict[str, float]:
    """RigL's get_sparsities_erdos_renyi (sparse_utils.py), re-derived: layers whose density would
    pass 1 are made dense one at a time (the largest raw probability first) and the rest rescaled."""
    dense_layers = set()
    while True:
        divisor = rhs = 0.0
        raw = {}
        for name, shape in shapes.items():
            count = math.prod(shape)
            if name in dense_layers:
                rhs -= count * sparsity
            else:
                rhs += count * (1 - sparsity)
                raw[name] = sum(shape) / count
                divisor += raw[name] * count
        epsilon = rhs / divisor
        largest = max(raw, key=raw.get)
        if raw[largest] * epsilon > 1:
            dense_layers.add(largest)
        else:
            return {name: 1.0 if name in dense_layers else epsilon * raw[name] for name in shapes}


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.98])
def test_erk_densities_equal_rigl_algorithm(sparsity):
    shapes = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    counts = {name: math.prod(shape) for name, shape in shapes.items()}
    amounts = layer_amounts(erk_profile({name: torch.Size(shape) for name, shape in shapes.items()}), counts, sparsity,
                            counts)
    expected = rigl_erk_densities(shapes, sparsity)
    for name, count in counts.items():
        assert abs((1 - amounts[name] / count) - expected[name]) <= 1.5 / count, name
    assert sum(amounts.values()) == round(sparsity * sum(counts.values()))


def test_owl_on_equal_layers_is_the_papers_formula():
    """OWL: densities = rescaled outlier ratios - their mean + (1 - S); equal layers, no clamp reached."""
    ratios = {"a": 0.010, "b": 0.030, "c": 0.020, "d": 0.015}
    spread, sparsity, count = 0.08, 0.7, 10_000
    profile = owl_profile(ratios, spread)
    scaled = {name: (ratio - 0.010) / 0.020 * 2 * spread for name, ratio in ratios.items()}
    mean = sum(scaled.values()) / len(scaled)
    counts = {name: count for name in ratios}
    amounts = layer_amounts(profile, counts, sparsity, counts)
    for name in ratios:
        assert abs(amounts[name] / count - (1 - (scaled[name] - mean + 1 - sparsity))) <= 1 / count
    assert sum(amounts.values()) == round(sparsity * 4 * count)
    assert amounts["b"] < amounts["d"] < amounts["a"], "more outliers, fewer pruned"


def test_owl_keeps_every_layer_within_two_lambda_of_the_target_even_when_sizes_differ():
    profile = owl_profile({"big": 0.03, "small": 0.01, "mid": 0.02}, 0.05)
    counts = {"big": 100_000, "small": 1_000, "mid": 5_000}
    amounts = layer_amounts(profile, counts, 0.8, counts)
    assert sum(amounts.values()) == round(0.8 * sum(counts.values()))
    for name, count in counts.items():
        assert 0.7 - 1 / count <= amounts[name] / count <= 0.9 + 1 / count, name
    assert amounts["small"] / counts["small"] > 0.89, "fewest outliers: pruned up to the clamp"


def test_outlier_ratio_by_hand():
    scores = torch.tensor([1.0] * 9 + [31.0])  # mean 4
    assert outlier_ratio(scores, 8.0) == 0.0  # 31 < 32
    assert outlier_ratio(scores, 5.0) == pytest.approx(0.1)  # 31 > 20, 1 < 20


def test_sensitivity_gives_each_layer_the_same_accuracy_drop():
    curves = {"fragile": [(0.5, 0.02), (0.9, 0.20)], "robust": [(0.5, 0.0), (0.9, 0.04)]}
    profile = sensitivity_profile(curves)
    counts = {"fragile": 1000, "robust": 1000}
    amounts = layer_amounts(profile, counts, 0.7, counts)
    assert sum(amounts.values()) == 1400
    # the drop budget t is the same for both: fragile at 0.5 + 0.4 (t - 0.02) / 0.18, robust at 0.5 + 0.4 t / 0.04
    t = (0.7 * 2 - 0.5 - 0.5 + 0.4 * 0.02 / 0.18) / (0.4 / 0.18 + 0.4 / 0.04)
    assert amounts["fragile"] == pytest.approx(1000 * (0.5 + 0.4 * (t - 0.02) / 0.18), abs=1)
    assert amounts["robust"] == pytest.approx(1000 * (0.5 + 0.4 * t / 0.04), abs=1)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=6), sparsity=st.floats(0.0, 0.99),
       cap=st.floats(0.5, 1.0), policy=st.sampled_from(["erk", "owl", "sensitivity"]), data=st.data())
def test_every_policy_hits_the_total_exactly_and_respects_the_cap(sizes, sparsity, cap, policy, data):
    names = [f"layer{index}" for index in range(len(sizes))]
    counts = dict(zip(names, sizes))
    upper = {name: min(count - 1, math.floor(cap * count)) if count > 1 else 0 for name, count in counts.items()}
    if policy == "erk":
        profile = erk_profile({name: torch.Size((count, 1)) for name, count in counts.items()})
    elif policy == "owl":
        profile = owl_profile({name: data.draw(st.floats(0, 0.1)) for name in names}, data.draw(st.floats(0, 0.3)))
    else:
        profile = sensitivity_profile({name: [(s, data.draw(st.floats(-0.05, 0.9))) for s in (0.3, 0.6, 0.9)]
                                       for name in names})
    target = round(sparsity * sum(sizes))
    if target > sum(upper.values()):
        with pytest.raises(BadInputError, match="cap"):
            layer_amounts(profile, counts, sparsity, upper)
        return
    amounts = layer_amounts(profile, counts, sparsity, upper)
    assert sum(amounts.values()) == target
    assert all(0 <= amounts[name] <= upper[name] for name in names)


@pytest.mark.parametrize("policy", ["erk", "owl", "sensitivity"])
@pytest.mark.parametrize("granularity", ["unstructured", "structured", "block"])
def test_pruning_with_each_allocation_hits_the_group_count_and_the_cap(dense, policy, granularity):
    overrides = {"scope": policy, "granularity": granularity, "block_size": 2, "max_layer_sparsity": 0.95,
                 "allocation_samples_per_class": 5}
    result = prune_model(dense, TINY.load_data(), "magnitude", 0.8, overrides)
    details = result.details
    assert details.allocation == policy
    fractions = list(details.layer_targets.values())
    assert max(fractions) <= 0.95 + 1e-9
    if granularity == "unstructured":
        assert result.mask.num_pruned == round(0.8 * result.mask.num_weights)
    elif granularity == "structured":  # whole output neurons, counted from the mask itself
        removed = sum(int((~keep.flatten(1).any(1)).sum()) for keep in result.mask.values())
        assert removed == round(0.8 * sum(keep.shape[0] for keep in result.mask.values()))


def test_owl_and_sensitivity_refuse_to_select_without_their_profile(dense):
    scores = {name: parameter.detach().abs() for name, parameter in dense.named_parameters() if name.endswith("weight")}
    with pytest.raises(BadInputError, match="profile"):
        mask_from_scores(scores, 0.5, scope="owl")
    with pytest.raises(BadInputError, match="profile"):
        mask_from_scores(scores, 0.5, scope="sensitivity", profile=LayerProfile("sensitivity", {"other": []}))


def unfold_norms(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """||X_j|| over the columns of F.unfold: the definition, the slow way."""
    columns = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    per_column = columns.pow(2).sum(dim=(0, 2)).sqrt()  # (in * kh * kw,)
    return per_column.view(x.shape[1], *conv.kernel_size)


@pytest.mark.parametrize("options", [dict(), dict(padding=1), dict(stride=2, padding=2, dilation=2)])
def test_conv_activation_norms_equal_unfold(options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, **options), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(7, 3, 9, 9)
    model(x)
    norms = input_feature_norms(model, ["0.weight", "3.weight"], x, chunk=3)
    assert torch.allclose(norms["0.weight"], unfold_norms(model[0], x), rtol=1e-5)
    hidden = model[:3](x)
    assert torch.allclose(norms["3.weight"], hidden.pow(2).sum(0).sqrt(), rtol=1e-5)


def test_grouped_conv_norms_follow_each_output_channels_group():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, groups=2)
    x = torch.randn(5, 4, 6, 6)
    norms = input_feature_norms(nn.Sequential(conv), ["0.weight"], x)["0.weight"]
    assert norms.shape == conv.weight.shape
    for group in range(2):
        expected = unfold_norms(nn.Conv2d(2, 3, 3), x[:, 2 * group: 2 * group + 2])
        for out in range(3 * group, 3 * group + 3):
            assert torch.allclose(norms[out], expected, rtol=1e-5)


def test_scan_layers_equals_torch_prune_and_sklearn(dense):
    data = TINY.load_data()
    scores = {name: parameter.detach().abs() for name, parameter in dense.named_parameters() if name.endswith("weight")}

    def select(name, score, sparsity):
        return mask_from_scores({name: score}, sparsity, scope="layerwise")[name]

    scan = scan_layers(dense, scores, [0.5, 0.9], data.x_test, data.y_test, data.num_classes, select)
    layer, index = scan.layers[1], 1
    oracle = copy.deepcopy(dense).eval()
    torch_prune.l1_unstructured(dict(oracle.named_modules())[layer.rsplit(".", 1)[0]], "weight", amount=0.9)
    with torch.no_grad():
        predictions = oracle(data.x_test).argmax(1)
    assert scan.accuracy[1][index] == pytest.approx(float((predictions == data.y_test).double().mean()))
    expected = recall_score(data.y_test, predictions, average=None, labels=list(range(data.num_classes)), zero_division=0)
    assert scan.recall[1][index] == pytest.approx(list(expected))
    assert scan.recall_lost(index)[1] == pytest.approx([d - p for d, p in zip(scan.dense_recall, expected)])
    assert scan.achieved[1][index] == pytest.approx(0.9, abs=1e-3)
    assert dict(scan.curves())[layer][1] == (0.9, pytest.approx(scan.dense_accuracy - scan.accuracy[1][1]))
