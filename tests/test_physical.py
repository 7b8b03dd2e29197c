"""Physical removal of structurally pruned channels: the smaller model computes what the masked
model computes, is as small as the mask says, and an unstructured mask gets a plain answer."""

import pytest
import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.models import build_model, prunable_weight_names
from pruning.physical import groups
from pruning.physical.costs import physical_or_note, real_costs
from pruning.physical.removal import remove_pruned_channels
from pruning.selection import mask_from_scores

# small inputs keep resnet18 and mobilenet_v2 fast; every model still sees padding, pooling, residuals
SHAPES = {
    "lenet5": (1, 16, 16),
    "vgg-small": (3, 16, 16),
    "resnet20": (3, 16, 16),
    "resnet18": (3, 8, 8),
    "mobilenet_v2": (3, 8, 8),
}


def with_trained_like_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Batch norms with running statistics and affine parameters far from their initial values, so
    a zeroed filter emits a nonzero constant (beta - gamma * mean / sqrt(var + eps)) after its BN."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                count = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(count, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
                module.weight.copy_(0.5 + torch.rand(count, generator=generator))
                module.bias.copy_(0.5 * torch.randn(count, generator=generator))
    return model.eval()


def structured_mask(model: nn.Module, sparsity: float, scope: str) -> Mask:
    """What magnitude pruning with granularity=structured selects: whole filters by their L2 norm,
    the output layer left whole."""
    parameters = dict(model.named_parameters())
    scores = {name: parameters[name].detach().abs() for name in prunable_weight_names(model, include_output=False)}
    return mask_from_scores(scores, sparsity, scope=scope, granularity="structured", aggregate="l2")


def masked_state(model: nn.Module, mask: Mask) -> dict:
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for name, keep in mask.items():
        state[name] = state[name] * keep
    return state


def masked_model(name: str, model: nn.Module, mask: Mask) -> nn.Module:
    """The masked model built afresh from the registry and the masked state_dict."""
    fresh = build_model(name, SHAPES[name], 10)
    fresh.load_state_dict(masked_state(model, mask))
    return fresh.eval()


def make(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return with_trained_like_norms(build_model(name, SHAPES[name], 10), seed + 1)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_the_smaller_model_computes_what_the_masked_model_computes(name, scope, one_thread):
    model = make(name)
    mask = structured_mask(model, 0.5, scope)
    result = remove_pruned_channels(model, mask, SHAPES[name], masked_state(model, mask))
    reference = masked_model(name, model, mask)
    x = torch.randn(5, *SHAPES[name], generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected, got = reference(x), result.model(x)
    assert got.shape == expected.shape == (5, 10)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * (1 + float(expected.abs().max())))
    assert result.max_abs_difference <= 1e-5 * (1 + float(expected.abs().max()))
    assert result.removed_channels > 0
    assert result.params < sum(p.numel() for p in model.parameters())
    assert result.params == sum(p.numel() for p in result.model.parameters())
    assert result.masked_channels == sum(int((~keep.flatten(1).any(1)).sum()) for keep in mask.values())
    masked_left = sum(result.kept_masked.values())
    removed_masked = sum(min(layer.masked, layer.removed) for layer in result.layers)
    assert removed_masked + masked_left >= result.masked_channels
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_the_input_model_is_left_untouched():
    model = make("resnet20")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    mask = structured_mask(model, 0.5, "global")
    remove_pruned_channels(model, mask, SHAPES["resnet20"], masked_state(model, mask))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("name", ["vgg-small", "resnet20"])
def test_removing_without_folding_the_constants_would_change_the_outputs(name, monkeypatch):
    """The exactness test above is not trivial: a zeroed filter's BN emits a constant that the
    removal has to carry (into biases, BN means or a kept constant channel)."""
    model = make(name)
    mask = structured_mask(model, 0.5, "layerwise")
    monkeypatch.setattr(groups.GroupPlan, "fold", lambda self: None)
    careless = remove_pruned_channels(model, mask, SHAPES[name], masked_state(model, mask))
    assert careless.max_abs_difference > 1e-2


def kept_filters(mask: Mask, name: str) -> int:
    return int(mask[name].flatten(1).any(1).sum())


def test_lenet5_parameter_count_follows_from_the_mask_alone():
    """No batch norm, no padding: every masked neuron/filter goes, and the smaller model's size
    is the mask's kept structure: kept filters x kept input channels, plus biases."""
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10).eval()
    mask = structured_mask(model, 0.6, "global")
    result = remove_pruned_channels(model, mask, (1, 28, 28), masked_state(model, mask))
    conv1, conv2, fc1 = (kept_filters(mask, f"{layer}.weight") for layer in ("conv1", "conv2", "fc1"))
    expected = (conv1 * 1 * 25 + conv1) + (conv2 * conv1 * 25 + conv2) + (fc1 * conv2 * 4 * 4 + fc1) + (10 * fc1 + 10)
    assert result.params == expected
    assert sum(result.kept_masked.values()) == 0
    assert result.removed_channels == result.masked_channels > 0


def test_vgg_parameter_count_follows_from_the_mask_when_no_constant_survives():
    """Batch norms at their initial state (mean 0, var 1, gamma 1, beta 0) make a zeroed filter
    emit exactly 0 after BN and ReLU, so nothing has to be carried: the count is the mask's."""
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = build_model("vgg-small", shape, 10).eval()
    mask = structured_mask(model, 0.5, "layerwise")
    result = remove_pruned_channels(model, mask, shape, masked_state(model, mask))
    convs = [name for name in mask if name.startswith("features.")]
    kept, channels, expected = [kept_filters(mask, name) for name in convs], 3, 0
    for count in kept:
        expected += count * channels * 9 + 2 * count  # conv without bias, BN weight and bias
        channels = count
    expected += 10 * channels + 10  # the classifier loses its inputs, not its outputs
    assert result.params == expected
    assert result.kept_masked == {"coupled": 0, "constant": 0, "last": 0, "aligned": 0}


def test_channel_counts_can_be_kept_to_multiples_of_8_and_stay_exact():
    model = make("vgg-small")
    mask = structured_mask(model, 0.5, "layerwise")
    plain = remove_pruned_channels(model, mask, SHAPES["vgg-small"], masked_state(model, mask))
    aligned = remove_pruned_channels(model, mask, SHAPES["vgg-small"], masked_state(model, mask), channel_multiple=8)
    convs = [module for module in aligned.model.modules() if isinstance(module, nn.Conv2d)]
    assert all(conv.out_channels % 8 == 0 for conv in convs)
    assert any(conv.out_channels % 8 for conv in plain.model.modules() if isinstance(conv, nn.Conv2d))
    assert aligned.kept_masked["aligned"] > 0 and aligned.params > plain.params
    assert aligned.max_abs_difference < 1e-4


def test_a_residual_group_keeps_masked_filters_a_coupled_conv_still_uses():
    model = make("resnet20")
    mask = structured_mask(model, 0.5, "layerwise")
    result = remove_pruned_channels(model, mask, SHAPES["resnet20"], masked_state(model, mask))
    assert result.kept_masked["coupled"] > 0  # the mask zeroes different filters in convs tied by the additions
    note = physical_or_note(model, mask, SHAPES["resnet20"], masked_state(model, mask))[1]
    assert "coupled" in note and "residual" in note


def test_outputs_only_a_zeroed_depthwise_filter_reads_are_dead_and_go_too():
    """MobileNetV2: an expand conv's channel feeds one depthwise filter only; once that filter is
    zeroed the channel is dead whether or not the mask zeroed it, and is removed as well."""
    model = make("mobilenet_v2")
    mask = structured_mask(model, 0.5, "global")
    result = remove_pruned_channels(model, mask, SHAPES["mobilenet_v2"], masked_state(model, mask))
    assert any(layer.removed > layer.masked for layer in result.layers)
    assert result.max_abs_difference < 1e-4


@pytest.mark.parametrize("granularity", ["unstructured", "block"])
def test_a_mask_inside_filters_gets_a_plain_answer_not_a_trace(granularity):
    model = make("lenet5")
    parameters = dict(model.named_parameters())
    names = prunable_weight_names(model)
    mask = mask_from_scores({name: parameters[name].detach().abs() for name in names}, 0.5, granularity=granularity)
    with pytest.raises(BadInputError, match="cannot be applied physically"):
        remove_pruned_channels(model, mask, SHAPES["lenet5"], masked_state(model, mask))
    costs = real_costs(model, mask, SHAPES["lenet5"], masked_state(model, mask), batch_sizes=(1, 4))
    report = costs.to_json()
    assert report["physical"] is None and "cannot be applied physically" in report["physical_note"]
    assert report["latency_ms"]["physical"] is None and report["measured_speedup"]["physical"] is None
    assert set(report["latency_ms"]["dense"]) == set(report["latency_ms"]["masked"]) == {"1", "4"}


def test_three_costs_side_by_side():
    model = make("vgg-small")
    mask = structured_mask(model, 0.5, "layerwise")
    costs = real_costs(model, mask, SHAPES["vgg-small"], masked_state(model, mask), batch_sizes=(1, 8))
    report = costs.to_json()
    for kind in ("dense", "masked", "physical"):
        assert set(report["latency_ms"][kind]) == {"1", "8"}
        assert all(value > 0 for value in report["latency_ms"][kind].values())
    assert report["latency_settings"]["threads"] == 1 and report["latency_settings"]["batch_sizes"] == [1, 8]
    rows = {row["model"]: row for row in costs.rows()}
    assert rows["dense"]["compression"] == 1.0 and rows["dense"]["theoretical_speedup"] == 1.0
    # the masked model's theoretical numbers count its nonzero weights; the physical one is the real thing
    assert rows["physical"]["params"] == report["physical"]["params"] < rows["dense"]["params"]
    assert rows["physical"]["flops"] < rows["dense"]["flops"]
    assert report["physical"]["compression"] == pytest.approx(rows["physical"]["compression"])
    assert report["measured_speedup"]["masked"]["8"] == pytest.approx(
        report["latency_ms"]["dense"]["8"] / report["latency_ms"]["masked"]["8"])
