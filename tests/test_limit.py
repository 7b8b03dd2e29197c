"""The fundamental-limit analysis: G(R), R(p), the crossing, the actual limit and the JSON result."""

import json
import math

import pytest
import torch

from pruning.analysis.limit import (
    LimitSettings,
    Spectrum,
    actual_limit,
    fundamental_limit,
    predicted_limit,
    pruned_distance_squares,
    radius_at,
    removable_fraction,
)
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.masks import Mask
from pruning.models import prunable_weight_names
from pruning.selection import mask_from_scores
from pruning.train import TrainConfig, evaluate

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=2))
FAST = LimitSettings(lanczos_steps=12, row_probes=2, grid_step=0.05, bins=500)


def smooth_spectrum(zero_mass=0.3, eps=0.05):
    grid = torch.linspace(-1.0, 20.0, 2001, dtype=torch.float64)
    density = torch.exp(-grid.abs()) + 0.2 * torch.exp(-0.5 * (grid - 10) ** 2)
    return Spectrum(grid, density, zero_mass, eps)


def test_removable_fraction_is_one_at_zero_and_falls_monotonically_to_the_zero_mass():
    spectrum = smooth_spectrum()
    radii = torch.cat([torch.zeros(1), torch.logspace(-4, 6, 400)]).double()
    values = removable_fraction(radii, spectrum)
    assert float(values[0]) == pytest.approx(1.0)
    assert torch.all(values[1:] <= values[:-1] + 1e-15)
    assert float(removable_fraction(1e9, spectrum)) == pytest.approx(spectrum.zero_mass, abs=1e-6)
    # Continuous in R: no steps between neighbouring radii.
    assert float((values[1:] - values[:-1]).abs().max()) < 0.02


def test_pruned_distance_is_zero_at_zero_and_non_decreasing():
    weights = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    squares = pruned_distance_squares(weights)
    fractions = torch.linspace(0, 1, 101)
    radius = radius_at(fractions, squares)
    assert float(radius[0]) == 0.0 and torch.all(radius[1:] >= radius[:-1])
    assert float(radius[-1]) == pytest.approx(float(weights.double().norm()))
    # Equals the distance to the magnitude-pruned weights of mask_from_scores.
    mask = mask_from_scores({"w": weights.abs()}, 0.37, scope="global")
    assert float(radius_at(0.37, squares)) == pytest.approx(float(weights[~mask["w"]].double().norm()))


def test_crossing_on_a_hand_made_spectrum():
    """Half the eigenvalues are zero, the rest sit at lambda = 1 with eps = 1/2 (r^2 = 1), and 1000
    equal weights of size 1/sqrt(1000) give R(p)^2 = p. Then G(R(p)) = 1/2 + 1/2 / (1 + p) = p,
    i.e. p^2 + p/2 - 1 = 0, p = (sqrt(17) - 1) / 4 = 0.7808."""
    spectrum = Spectrum(torch.tensor([1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), 0.5, 0.5)
    squares = pruned_distance_squares(torch.full((1000,), 1000**-0.5))
    expected = (math.sqrt(17) - 1) / 4
    assert predicted_limit(squares, spectrum) == pytest.approx(expected, abs=1.5e-3)
    # Without flat directions and with ten times the curvature far less can go.
    stiff = Spectrum(torch.tensor([10.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), 0.0, 0.5)
    # G = 1 / (1 + 10 p) = p  ->  10 p^2 + p - 1 = 0
    assert predicted_limit(squares, stiff) == pytest.approx((math.sqrt(41) - 1) / 20, abs=1.5e-3)


def test_predicted_limit_lies_in_the_unit_interval():
    for zero_mass in (0.0, 0.5, 1.0):
        for scale in (1e-6, 1.0, 1e3):
            squares = pruned_distance_squares(scale * torch.rand(500, generator=torch.Generator().manual_seed(1)))
            assert 0.0 <= predicted_limit(squares, smooth_spectrum(zero_mass)) <= 1.0


def test_actual_limit_definition():
    assert actual_limit([0.0, 0.1, 0.2, 0.3], [0.9, 0.91, 0.9, 0.5], 0.9) == 0.2
    assert actual_limit([0.0, 0.1], [0.8, 0.7], 0.9) == 0.0


def test_settings_are_checked():
    assert LimitSettings.from_pairs({"l1": "1e-4", "lanczos_steps": "20"}).lanczos_steps == 20
    for pairs in ({"bogus": "1"}, {"l1": "-1"}, {"lanczos_steps": "0"}, {"hessian_samples": "many"}):
        with pytest.raises(BadInputError):
            LimitSettings.from_pairs(pairs)


@pytest.fixture(scope="module")
def tiny_result(one_thread):
    return fundamental_limit(TINY, FAST)


def test_fundamental_limit_on_a_tiny_experiment(tiny_result):
    from pruning.methods.lomp import l1_trained

    result = tiny_result
    assert 0.0 <= result.predicted <= 1.0 and result.eps > 0 and 0.0 <= result.zero_mass < 1.0
    assert result.fractions[0] == 0.0 and result.fractions[-1] <= 0.99
    assert len(result.radius) == len(result.removable) == len(result.accuracy) == len(result.fractions)
    assert result.radius[0] == 0.0 and result.removable[0] == pytest.approx(1.0)
    # The actual limit, recomputed from its definition on the cached L1-trained model.
    model = l1_trained(TINY, FAST.l1).model
    data = TINY.load_data()
    dense = evaluate(model, data.x_test, data.y_test, data.num_classes).accuracy
    assert result.dense_accuracy == pytest.approx(dense)
    parameters = dict(model.named_parameters())
    at_limit = mask_from_scores({n: parameters[n].detach().abs() for n in prunable_weight_names(model)},
                                result.actual, scope="global")
    assert isinstance(at_limit, Mask)
    accuracy = evaluate(model, data.x_test, data.y_test, data.num_classes,
                        parameters=at_limit.masked_parameters(model)).accuracy
    assert accuracy >= dense
    beyond = [a for p, a in zip(result.fractions, result.accuracy) if p > result.actual]
    assert all(a < dense for a in beyond)
    # JSON round trip, and the second call reads the cache.
    entry = json.loads(json.dumps(result.to_json()))
    assert entry["predicted"] == result.predicted and entry["actual"] == result.actual
    assert fundamental_limit(TINY, FAST).to_json() == result.to_json()


def test_limit_page_computes_and_shows_the_limit(one_thread):
    from tests.app_driver import start

    at = start(model="mlp", epochs=1, dataset="digits")
    at.switch_page("views/limit.py").run()
    assert not at.exception and not at.error
    assert at.radio(key="limit.preset").value == "quick"
    at.slider(key="limit.lanczos_steps.quick").set_value(10).run()
    at.select_slider(key="limit.hessian_samples.quick").set_value(500).run()
    assert not at.metric  # nothing computed before the button
    at.button(key="limit.run").click().run()
    assert not at.exception and not at.error
    values = {m.label: m.value for m in at.metric}
    predicted, actual = (float(values[label].rstrip("%")) for label in ("Predicted limit", "Actual limit"))
    assert 0 <= predicted <= 100 and 0 <= actual <= 99
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]
    assert "Removable fraction G(R(p)) against pruned fraction p" in titles
    assert "Accuracy against pruned fraction" in titles
    assert any(title.startswith("Hessian spectral density") for title in titles)
    density = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                   if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Hessian"))
    assert density["layout"]["yaxis"]["type"] == "log"


def test_cli_limit_json_and_bad_input(tiny_result, capsys):
    from pruning.cli import main

    settings = ["--set", "lanczos_steps=12", "--set", "row_probes=2", "--set", "grid_step=0.05", "--set", "bins=500"]
    assert main(["limit", "--dataset", "digits", "--model", "mlp", "--epochs", "2", *settings, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predicted"] == tiny_result.predicted and report["actual"] == tiny_result.actual
    assert len(report["removable"]) == len(report["fractions"]) == len(report["accuracy"])
    for bad in (["--set", "bogus=1"], ["--set", "l1=-1"], ["--set", "probes"], ["--model", "nope"]):
        assert main(["limit", "--dataset", "digits", "--model", "mlp", *bad]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error:") and error.count("\n") == 1


def test_smoothing_inside_g_moves_mass_off_zero_and_lowers_g():
    from pruning.analysis.limit import smoothed

    nodes = torch.tensor([1e-5, 0.5, 2.0], dtype=torch.float64)
    weights = torch.tensor([0.9, 0.07, 0.03], dtype=torch.float64)
    grid, density, sigma = smoothed(nodes, weights, 0.01, 4000)
    assert sigma == pytest.approx(0.01 * float(nodes.max() - nodes.min()))
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-3) and bool((grid == 0).any())
    sharp = removable_fraction(3.0, Spectrum(nodes, weights, 0.0, 0.02))
    blurred = removable_fraction(3.0, Spectrum(grid, density, 0.0, 0.02))
    assert float(blurred) < float(sharp)


def test_limit_page_paper_recipe_trains_the_l1_epochs_chosen(one_thread):
    from tests.app_driver import start

    at = start(model="mlp", epochs=1, dataset="digits")
    at.switch_page("views/limit.py").run()
    assert "limit.l1_epochs" not in [widget.key for widget in at.number_input]  # quick trains the experiment's epochs
    at.radio(key="limit.preset").set_value("paper").run()
    assert at.number_input(key="limit.l1_epochs").value == LimitSettings(preset="paper").l1_epochs
    at.number_input(key="limit.l1_epochs").set_value(2).run()
    at.slider(key="limit.lanczos_steps.paper").set_value(10).run()
    at.number_input(key="limit.grid_step.paper").set_value(0.05).run()
    at.button(key="limit.run").click().run()
    assert not at.exception and not at.error
    ((experiment, settings),) = at.session_state["limit_results"].keys()
    assert (settings.preset, settings.l1_epochs, settings.hessian_samples) == ("paper", 2, 0)
    assert at.session_state["limit_results"][(experiment, settings)].settings["l1_epochs"] == 2
