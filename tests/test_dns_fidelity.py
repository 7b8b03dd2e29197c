"""DNS as the reference runs it: per-layer c_rate, masked biases, the paper preset, and clear errors
for bad per-layer overrides. The thresholds are checked against statistics computed by hand."""

import statistics

import pytest
import torch
from torch import nn

from pruning.cli import main
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.methods.dns import (
    PAPER_RECIPE,
    dns_optimizer,
    dns_thresholds,
    layer_c_rates,
    resolve_preset,
    surgery_,
    surgery_plan,
)
from pruning.registry import get_method
from pruning.train import TrainConfig

CONV1 = [0.5, -1.0, 2.0, -0.25]
CONV2 = [0.7, -0.1, 1.5, -2.5]
FC1 = [1.0, -2.0, 3.0, -4.0, 0.1, -0.2]
FC2 = [0.3, -0.6, 0.9, 1.2]
BIAS_FC1 = [0.05, -6.0]


class Tiny(nn.Module):
    """conv1 -> conv2 -> fc1 -> fc2 with hand-set weights (only the threshold computation runs, never a forward)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 2)
        self.conv2 = nn.Conv2d(1, 1, 2)
        self.fc1 = nn.Linear(3, 2)
        self.fc2 = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor(CONV1).reshape(1, 1, 2, 2))
            self.conv2.weight.copy_(torch.tensor(CONV2).reshape(1, 1, 2, 2))
            self.fc1.weight.copy_(torch.tensor(FC1).reshape(2, 3))
            self.fc1.bias.copy_(torch.tensor(BIAS_FC1))
            self.fc2.weight.copy_(torch.tensor(FC2).reshape(2, 2))


def hand_pair(values, c):
    """(0.9 t, 1.1 t) with t = mean|v| + c sd|v| (sample sd, as torch.std), from the statistics module."""
    magnitudes = [abs(value) for value in values]
    t = max(statistics.mean(magnitudes) + c * statistics.stdev(magnitudes), 0.0)
    return 0.9 * t, 1.1 * t


def settings(**overrides):
    return get_method("dns").settings(overrides)


def test_per_layer_c_rate_gives_per_layer_thresholds_mu_plus_c_sd():
    chosen = settings(c_rate=2.0, first_conv_c_factor=0.25, other_conv_c_factor=0.75, output_c_factor=0.5, c_rate_layers="fc1=3")
    names, c_rates, thresholds = surgery_plan(Tiny(), chosen)
    assert names == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"], "biases stay unmasked by default"
    assert c_rates == {"conv1.weight": 0.5, "conv2.weight": 1.5, "fc1.weight": 3.0, "fc2.weight": 1.0}, \
        "first conv 2 x 0.25, other conv 2 x 0.75, output 2 x 0.5, fc1 overridden"
    for name, values in (("conv1.weight", CONV1), ("conv2.weight", CONV2), ("fc1.weight", FC1), ("fc2.weight", FC2)):
        assert thresholds[name] == pytest.approx(hand_pair(values, c_rates[name])), name


def test_defaults_are_gentler_on_the_first_conv_and_the_output_layer_only():
    c_rates = layer_c_rates(Tiny(), ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"], settings(c_rate=4.0))
    assert c_rates["fc1.weight"] == 4.0 and c_rates["conv2.weight"] == 4.0, "other conv layers: factor 1 by default"
    assert c_rates["conv1.weight"] < 4.0 and c_rates["fc2.weight"] < 4.0
    mlp = nn.Sequential()
    mlp.add_module("fc1", nn.Linear(4, 3))
    mlp.add_module("fc2", nn.Linear(3, 2))
    assert layer_c_rates(mlp, ["fc1.weight", "fc2.weight"], settings(c_rate=4.0))["fc1.weight"] == 4.0, \
        "a model without conv layers keeps c_rate on its first layer"


def test_masked_biases_count_in_the_layers_statistics_and_are_pruned_and_spliced_by_the_same_rule():
    names, c_rates, thresholds = surgery_plan(Tiny(), settings(c_rate=0.5, mask_biases=True, c_rate_layers="fc1=0.5"))
    assert {"conv1.bias", "conv2.bias", "fc1.bias", "fc2.bias"} <= set(names)
    a, b = hand_pair(FC1 + BIAS_FC1, 0.5)  # mean and sd over the layer's weights and biases together
    assert thresholds["fc1.weight"] == pytest.approx((a, b)) and thresholds["fc1.bias"] == thresholds["fc1.weight"]
    assert dns_thresholds(torch.tensor(FC1), 0.5, torch.tensor(BIAS_FC1)) == pytest.approx((a, b))
    assert (a, b) != pytest.approx(hand_pair(FC1, 0.5)), "the biases change the layer's thresholds"
    # bias 0.05 is below a (pruned); -6 stays; a masked bias that grew past b comes back
    mask = Mask({"fc1.bias": torch.tensor([True, True])})
    assert surgery_(mask, {"fc1.bias": torch.tensor(BIAS_FC1)}, thresholds) == (1, 0)
    assert mask["fc1.bias"].tolist() == [False, True]
    assert surgery_(mask, {"fc1.bias": torch.tensor([1.2 * b, -6.0])}, thresholds) == (0, 1)
    assert mask["fc1.bias"].tolist() == [True, True]


def test_a_run_with_masked_biases_zeroes_them_and_reports_weights_only_in_its_mask():
    experiment = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
    dense = train_dense(experiment).model
    method = get_method("dns")
    outcome = method.train(experiment, dense, None, method.settings({"epochs": 1, "c_rate": 1.0, "mask_biases": True}))
    assert all(name.endswith(".weight") for name in outcome.mask)
    details = outcome.details
    assert details.biases_total == sum(layer.bias.numel() for layer in dense.modules() if isinstance(layer, nn.Linear))
    assert 0 < details.biases_masked < details.biases_total
    zeroed = sum(int(torch.count_nonzero(outcome.state_dict[name.replace("weight", "bias")] == 0)) for name in outcome.mask)
    assert zeroed >= details.biases_masked


def test_paper_preset_resolves_to_its_documented_settings():
    method = get_method("dns")
    paper = resolve_preset(method.settings({"preset": "paper", "c_rate": 1.0, "epochs": 3, "c_rate_layers": "fc1=2"}))
    assert {key: paper[key] for key in PAPER_RECIPE} == PAPER_RECIPE, "the recipe wins over settings it fixes"
    assert paper["c_rate_layers"] == "fc1=2", "per-layer overrides still apply"
    assert PAPER_RECIPE["mask_biases"] and PAPER_RECIPE["momentum"] == 0.9 and PAPER_RECIPE["c_rate"] == 4.0
    assert (PAPER_RECIPE["gamma"], PAPER_RECIPE["power"]) == (1e-4, 1.0)
    quick = resolve_preset(method.settings({"c_rate": 1.0, "epochs": 3}))
    assert (quick["c_rate"], quick["epochs"], quick["mask_biases"]) == (1.0, 3, False), "quick keeps what was given"
    assert PAPER_RECIPE["bias_lr_multiplier"] == 2.0 and PAPER_RECIPE["coin_per_layer"]
    for phrase in ("c_rate 4", "biases masked", "2x the lr", "one update coin per layer", "momentum 0.9", "weight decay 5e-4", "lr 0.01", "gamma 1e-4",
                   "power 1", f"{PAPER_RECIPE['epochs']} epochs", f"{PAPER_RECIPE['iter_stop_fraction']:.0%}"):
        assert phrase in method.description, f"the description does not state the paper preset's {phrase!r}"


@pytest.mark.parametrize("text, named", [("fc1=abc", "'fc1=abc'"), ("fc1=2,=3", "'=3'"), ("fc1", "'fc1'"),
                                         ("fc1=99", "'fc1=99'"), ("fc1=1,fc1=2", "'fc1=2'"), ("fc1=nan", "'fc1=nan'")])
def test_bad_c_rate_layers_is_one_clear_error_naming_the_entry(text, named):
    with pytest.raises(BadInputError, match="c_rate_layers") as caught:
        settings(c_rate_layers=text)
    assert named in str(caught.value)


def test_c_rate_layers_is_normalised_and_unknown_layers_are_named():
    assert settings(c_rate_layers=" conv1 = 1.50 , fc2=2")["c_rate_layers"] == "conv1=1.5,fc2=2"
    assert settings(c_rate_layers="")["c_rate_layers"] == "none"
    with pytest.raises(BadInputError, match=r"'conv9', 'fc7'.*conv1, conv2, fc1, fc2"):
        surgery_plan(Tiny(), settings(c_rate_layers="conv9=1,fc1=2,fc7=3"))
    with pytest.raises(BadInputError, match=r"'fc2'"):
        surgery_plan(Tiny(), settings(c_rate_layers="fc2=1", prune_output_layer=False))


def test_cli_rejects_bad_c_rate_layers_in_one_line(capsys):
    code = main(["prune", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--method", "dns",
                 "--set", "c_rate_layers=fc1=two"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and "c_rate_layers" in error and "'fc1=two'" in error


def test_masked_biases_and_per_layer_rates_are_the_same_on_meta():
    """The device detector of tests/test_device.py over a run with every new switch on."""
    from tests.test_device import SMALL, same_on_meta

    method = get_method("dns")
    chosen = method.settings({"epochs": 1, "mask_biases": True, "c_rate_layers": "fc1=1.5", "coin_per_layer": True,
                              "bias_lr_multiplier": 2})
    dense = train_dense(SMALL).model
    outcome = same_on_meta(lambda: method.train(SMALL, dense, None, chosen))
    assert outcome.details.c_rates["fc1.weight"] == 1.5 and outcome.details.biases_total > 0


def test_biases_train_at_the_multiplied_rate_with_momentum_and_decay_on_every_weight():
    model = Tiny()
    optimizer, _ = dns_optimizer(model, settings(lr=0.02, bias_lr_multiplier=2, momentum=0.9, weight_decay=1e-3), 10)
    rates = {id(tensor): group["lr"] for group in optimizer.param_groups for tensor in group["params"]}
    assert rates[id(model.fc1.bias)] == pytest.approx(0.04) and rates[id(model.fc1.weight)] == pytest.approx(0.02)
    assert all(group["momentum"] == 0.9 and group["weight_decay"] == 1e-3 for group in optimizer.param_groups)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))
    plain, _ = dns_optimizer(model, settings(), 10)
    assert len(plain.param_groups) == 1, "the quick default keeps one group (today's update)"


def test_the_app_offers_the_preset_and_hides_what_paper_fixes():
    from tests.app_driver import start

    at = start(dataset="digits", model="mlp", epochs=1)
    at.selectbox(key="method").set_value("dns").run()
    assert not at.exception
    assert at.radio(key="dns.preset").label == "Recipe preset" and at.slider(key="dns.c_rate").value == 2.5
    assert at.text_input(key="dns.c_rate_layers").value == "none"
    at.text_input(key="dns.c_rate_layers").set_value("fc1=abc").run()
    assert not at.exception and any("c_rate_layers" in error.value and "'fc1=abc'" in error.value for error in at.error)
    at.text_input(key="dns.c_rate_layers").set_value("none").run()
    assert not at.error
    at.radio(key="dns.preset").set_value("paper").run()
    assert not at.exception
    shown = {widget.key for widget in [*at.slider, *at.number_input, *at.toggle]}
    assert not shown & {"dns.c_rate", "dns.epochs", "dns.mask_biases"}, "the paper recipe fixes these"
