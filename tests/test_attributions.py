"""Captum attributions: channel attributions against hand-computed oracles, the attribution
criteria as structured pruning, class reliance on removed channels, and the Attributions page."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from pruning import channel_attribution as attribution
from pruning.analysis.attribution import class_reliance, input_attributions, pearson, spearman
from pruning.channel_attribution import channel_attributions, class_channel_attributions
from pruning.criteria import CRITERIA
from pruning.data import Dataset, load_dataset
from pruning.errors import BadInputError
from pruning.methods.base import PruneContext
from pruning.models import build_model, prunable_weight_names
from pruning.pipeline import prune_model
from pruning.registry import get_method
from tests.app_driver import figure_starting, metric, start

ATTRIBUTION_CRITERIA = ("attr-gradxact", "attr-conductance", "attr-ablation")


class TinyConv(nn.Module):
    """conv 1->3 (3x3), ReLU, linear to 4 classes, on (N, 1, 6, 6) inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class TinyResidual(nn.Module):
    """A skip connection around a linear layer: its output is not all the rest of the network
    sees, so ablation must run the whole network (captum's LayerFeatureAblation)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc(torch.relu(self.inner(x)) + x)


def hand_gradient_times_activation(head, activation, y):
    """sum over positions of a * dF_y/da, by torch.autograd: ``head`` maps the layer output to logits."""
    activation = activation.detach().requires_grad_(True)
    logits = head(activation)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(y)), y].sum(), activation)
    product = (grad * activation).detach()
    return product.flatten(2).sum(2) if product.dim() > 2 else product


def test_gradient_times_activation_matches_autograd_on_a_linear_relu_linear_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(9, 5), torch.tensor([0, 1, 2] * 3)
    ours = channel_attributions(net, ["0", "2"], x, y, "gradxact")
    hidden = net[0](x)
    assert torch.allclose(ours["0"], hand_gradient_times_activation(lambda a: net[2](torch.relu(a)), hidden, y), atol=1e-6)
    # the output layer: dF_y/dlogit is one-hot, so only the target's own logit is attributed
    logits = net(x).detach()
    expected = torch.zeros_like(logits)
    expected[torch.arange(9), y] = logits[torch.arange(9), y]
    assert torch.allclose(ours["2"], expected, atol=1e-6)


def test_gradient_times_activation_matches_autograd_on_a_conv_net_summed_over_positions():
    torch.manual_seed(1)
    net = TinyConv()
    x, y = torch.randn(7, 1, 6, 6), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    ours = channel_attributions(net, ["conv"], x, y, "gradxact")["conv"]
    hand = hand_gradient_times_activation(lambda a: net.fc(torch.flatten(torch.relu(a), 1)), net.conv(x), y)
    assert ours.shape == (7, 3)
    assert torch.allclose(ours, hand, atol=1e-6)


@pytest.mark.parametrize("net_class, layer", [(TinyConv, "conv"), (TinyResidual, "inner")])
def test_ablation_is_the_logit_change_from_replacing_a_channel_by_its_bias(net_class, layer):
    """By hand: set the channel to its bias (what pruning its weights leaves) and rerun. TinyConv takes
    the fast path (only what follows the layer reruns), TinyResidual the whole network."""
    torch.manual_seed(2)
    net = net_class()
    x = torch.randn(6, 1, 6, 6) if net_class is TinyConv else torch.randn(6, 1, 1, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    module = getattr(net, layer)
    assert (attribution._downstream(attribution.evaluation_copy(net), layer) is None) == (net_class is TinyResidual)
    ours = channel_attributions(net, [layer], x, y, "ablation")[layer]
    outputs = {}
    handle = module.register_forward_hook(lambda m, i, o: outputs.setdefault("value", o.detach()))
    with torch.no_grad():
        full = net(x)[torch.arange(6), y]
    handle.remove()
    for channel in range(ours.shape[1]):
        replaced = outputs["value"].clone()
        replaced[:, channel] = module.bias[channel].detach()
        handle = module.register_forward_hook(lambda m, i, o, replaced=replaced: replaced)
        with torch.no_grad():
            ablated = net(x)[torch.arange(6), y]
        handle.remove()
        assert torch.allclose(ours[:, channel], full - ablated, atol=1e-5)


def test_conductance_of_a_linear_net_is_exact():
    """For h = W1 x + b1 and F = W2 h + b2 (no nonlinearity) the conductance of hidden unit c is
    exactly (h_c(x) - h_c(baseline)) * W2[y, c], whatever the number of steps."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    baseline = torch.randn(1, 4)
    ours = channel_attributions(net, ["0"], x, y, "conductance", n_steps=4, baseline=baseline)["0"]
    with torch.no_grad():
        expected = (net[0](x) - net[0](baseline)) * net[1].weight[y]
    assert torch.allclose(ours, expected, atol=1e-5)


def toy_problem():
    """Three hidden neurons h_c = x_c + 0.5 on all-ones inputs, the output layer weighing them 1, 2, 3
    for every class. The attribution of neuron c to any logit is (c + 1) times: its activation 1.5 for
    gradient x activation; 1.5 - 0.5 for ablation (to its bias 0.5, what pruning leaves) and for
    conductance (from the zero baseline, where h_c = 0.5; the ReLU stays open all along the path)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(3))
        net[1].bias.fill_(0.5)
        net[3].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
        net[3].bias.zero_()
    x = torch.ones(6, 1, 1, 3)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    return net, Dataset("toy", x, y, x, y, ("a", "b"))


@pytest.mark.parametrize("name", ATTRIBUTION_CRITERIA)
def test_toy_channel_ranking_is_known_and_the_group_score_is_the_channel_attribution(name):
    net, data = toy_problem()
    scores = CRITERIA[name].score(net, ["1.weight"], PruneContext(data=data, samples_per_class=3))["1.weight"]
    assert scores.shape == (3, 3)
    scale = 1.5 if name == "attr-gradxact" else 1.0
    assert torch.allclose(scores.sum(1), scale * torch.tensor([1.0, 2.0, 3.0]), atol=1e-5)  # group "sum" = channel score
    assert torch.allclose(scores, scores[:, :1].expand(3, 3))  # shared equally by the channel's weights
    result = prune_model(net, data, name, 1 / 3, {"scope": "layerwise", "samples_per_class": 3})
    assert result.mask["1.weight"].all(1).tolist() == [False, True, True]  # the least important neuron goes
    assert not result.mask["1.weight"][0].any()
    assert "3.weight" not in result.mask  # structured: the output layer stays whole


@pytest.fixture(scope="module")
def lenet_problem():
    """An untrained lenet5 on real mnist-5k: the channel structure does not need a trained model."""
    torch.manual_seed(0)
    return build_model("lenet5", (1, 28, 28), 10), load_dataset("mnist-5k")


@pytest.mark.parametrize("name", ATTRIBUTION_CRITERIA)
def test_structured_attribution_pruning_removes_whole_channels_at_the_target_ratio(name, lenet_problem, one_thread):
    model, data = lenet_problem
    overrides = {"samples_per_class": 2} | ({"n_steps": 4} if name == "attr-conductance" else {})
    result = prune_model(model, data, name, 0.4, overrides)
    names = prunable_weight_names(model, include_output=False)
    assert set(result.mask) == set(names)
    groups = removed = 0
    for weight_name in names:
        rows = result.mask[weight_name].flatten(1)
        assert bool((rows.all(1) | ~rows.any(1)).all()), f"{weight_name}: a channel is partly pruned"
        groups += rows.shape[0]
        removed += int((~rows.any(1)).sum())
        kept_rows = rows.any(1)
        assert not result.pruned_tensors[weight_name][~kept_rows].any()
    assert removed == round(0.4 * groups)


def test_attribution_criteria_leave_the_model_unchanged(lenet_problem, one_thread):
    model, data = lenet_problem
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    flags = [parameter.requires_grad for parameter in model.parameters()]
    names = prunable_weight_names(model, include_output=False)
    context = PruneContext(data=data, samples_per_class=1)
    for name in ATTRIBUTION_CRITERIA:
        CRITERIA[name].score(model, names, context, **({"n_steps": 2} if name == "attr-conductance" else {}))
    input_attributions(model, data.x_test[:2], data.y_test[:2], "integrated-gradients", n_steps=4)
    input_attributions(model, data.x_test[:2], data.y_test[:2], "saliency")
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert [parameter.requires_grad for parameter in model.parameters()] == flags
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not any(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks for module in model.modules())
    model.eval()


def test_remembered_scores_are_recomputed_after_the_model_changes():
    net, data = toy_problem()
    context = PruneContext(data=data, samples_per_class=3)
    first = CRITERIA["attr-gradxact"].score(net, ["1.weight"], context)["1.weight"]
    assert torch.equal(first, CRITERIA["attr-gradxact"].score(net, ["1.weight"], context)["1.weight"])
    with torch.no_grad():
        net[3].weight.mul_(2)  # in place: the same tensors, new values
    again = CRITERIA["attr-gradxact"].score(net, ["1.weight"], context)["1.weight"]
    assert torch.allclose(again, 2 * first)


def test_attribution_criteria_are_structured_only_and_declare_their_steps():
    for name in ATTRIBUTION_CRITERIA:
        method = get_method(name)
        assert method.settings()["granularity"] == "structured"
        for granularity in ("unstructured", "block"):
            with pytest.raises(BadInputError, match="only structured"):
                method.settings({"granularity": granularity})
    conductance = get_method("attr-conductance")
    assert conductance.settings()["n_steps"] == attribution.DEFAULT_STEPS
    with pytest.raises(BadInputError):
        conductance.settings({"n_steps": 1})
    net, data = toy_problem()
    with pytest.raises(BadInputError, match="training data"):
        CRITERIA["attr-gradxact"].score(net, ["1.weight"], PruneContext(data=None))
    with pytest.raises(BadInputError, match="unknown channel attribution"):
        channel_attributions(net, ["1"], data.x_train, data.y_train, "occlusion")


def test_class_matrix_averages_absolute_attributions_per_class():
    per_sample = {"layer": torch.tensor([[1.0, -2.0], [-3.0, 4.0], [5.0, 6.0]])}
    matrix = class_channel_attributions(per_sample, torch.tensor([0, 0, 1]), 3)["layer"]
    assert np.allclose(matrix[:2], [[2.0, 3.0], [5.0, 6.0]])
    assert np.isnan(matrix[2]).all()  # a class without samples
    importance = attribution.channel_importance({"layer": matrix})["layer"]
    assert torch.allclose(importance, torch.tensor([3.5, 4.5]))  # classes weigh equally


def test_class_reliance_on_a_toy_mask():
    """Layer a: channel 0 removed, class shares 1/4, 3/4, 1/2 (and 1/2, 1/2, 1/2 in layer b, which lost
    channel 1); layer c lost nothing and does not count."""
    matrix = {
        "a": np.array([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]]),
        "b": np.array([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]]),
        "c": np.array([[9.0, 1.0], [1.0, 9.0], [5.0, 5.0]]),
    }
    mask = {"a.weight": torch.tensor([[False, False], [True, True]]),
            "b.weight": torch.tensor([[True, True], [False, False]]),
            "c.weight": torch.tensor([[True, False], [True, True]])}  # partly pruned: counts as kept
    dense, pruned = [0.9, 0.9, 0.9], [0.85, 0.6, 0.8]
    reliance = class_reliance(matrix, mask, dense, pruned)
    assert reliance.removed == {"a": 1, "b": 1, "c": 0}
    assert np.allclose(reliance.share, [[0.25, 0.5, 0.0], [0.75, 0.5, 0.0], [0.5, 0.5, 0.0]])
    assert np.allclose(reliance.reliance, [0.375, 0.625, 0.5])
    assert np.allclose(reliance.recall_loss, [0.05, 0.3, 0.1])
    assert reliance.pearson == pytest.approx(stats.pearsonr(reliance.reliance, reliance.recall_loss)[0])
    assert reliance.spearman == pytest.approx(1.0)


def test_correlations_match_scipy_with_ties_and_are_undefined_when_constant():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 12).astype(float), rng.normal(size=12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert np.isnan(pearson(np.ones(5), np.arange(5))) and np.isnan(spearman([1, 2], [2, 1]))


def test_integrated_gradients_maps_sum_to_the_logit_change(lenet_problem):
    model, data = lenet_problem
    x, y = data.x_test[:3], data.y_test[:3]
    baseline = attribution.input_baseline(x, data.mean, data.std)
    maps = input_attributions(model, x, y, "integrated-gradients", baseline=baseline, n_steps=64)
    assert maps.shape == (3, 28, 28)
    model.eval()
    with torch.no_grad():
        change = (model(x) - model(baseline.expand_as(x)))[torch.arange(3), y]
    assert torch.allclose(maps.flatten(1).sum(1), change, rtol=0.05, atol=0.05)  # completeness (lenet5 is piecewise linear)
    assert (input_attributions(model, x, y, "saliency") >= 0).all()


# --- the page ---


@pytest.fixture(scope="module")
def attributions_page():
    """The Attributions page on mlp (2 epochs): it opens on attr-gradxact, structured, 70% of the neurons."""
    at = start(model="mlp", epochs=2)
    at.switch_page("views/attributions.py").run()
    assert not at.exception
    return at


def test_attributions_page_shows_maps_channels_and_class_reliance(attributions_page):
    at = attributions_page
    assert not at.error
    removed, total = (int(part) for part in metric(at, "Channels removed").split(" of "))
    assert total == 400 and removed == 280  # mlp: 300 + 100 hidden neurons, 70% removed
    bars = figure_starting(at, "Channel attributions per layer")["layout"]["meta"]
    assert bars["fc1"]["removed"] + bars["fc2"]["removed"] == removed
    assert bars["fc1"]["channels"] == 300 and bars["fc2"]["channels"] == 100
    maps = figure_starting(at, "Input attributions, dense and pruned")["layout"]["meta"]
    assert maps["columns"] == ["image", "integrated-gradients, dense", "integrated-gradients, pruned",
                               "saliency, dense", "saliency, pruned"]
    assert maps["rows"] == 4  # the first images whose prediction pruning changed
    scatter = figure_starting(at, "Reliance on removed channels against recall loss")
    assert len(scatter["data"][0]["x"]) == 10
    shown = metric(at, "Pearson r")
    assert shown == "undefined" or scatter["layout"]["meta"]["pearson"] == pytest.approx(float(shown), abs=0.005)
    assert figure_starting(at, "Attribution per class and channel")


def test_attributions_page_follows_its_controls_and_reports_bad_input(attributions_page):
    at = attributions_page
    at.slider(key="attr.sparsity").set_value(0.25).run()
    assert not at.exception
    assert metric(at, "Channels removed") == "100 of 400"
    at.radio(key="attr.images").set_value("by class").run()
    at.selectbox(key="attr.class").set_value(at.selectbox(key="attr.class").options[3]).run()
    at.slider(key="attr.count").set_value(2).run()
    assert not at.exception
    assert figure_starting(at, "Input attributions, dense and pruned")["layout"]["meta"]["rows"] == 2
    at.slider(key="attr.attr-gradxact.max_layer_sparsity").set_value(0.5).run()
    at.slider(key="attr.sparsity").set_value(0.95).run()  # needs more neurons gone than the cap allows
    assert not at.exception
    assert any("cap" in error.value for error in at.error)
