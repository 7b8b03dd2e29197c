"""Loss valleys: the line and plane between a dense and a pruned model, filter-normalised
directions, error barriers, the Loss valley page and the ``landscape`` command."""

import contextlib
import io
import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pruning.analysis import landscape
from pruning.analysis.valley import iterative_levels
from pruning.cli import main
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.pipeline import run_schedule
from pruning.schedules import Iterative
from pruning.train import TrainConfig, evaluate
from tests.app_driver import start


class TinyNet(nn.Module):
    """Conv + batch norm + two Linear layers: filters of both kinds, biases and a norm layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.fixture(scope="module")
def tiny():
    """A tiny model with non-trivial running statistics, a 'pruned' version of it (half of every
    weight zeroed, and batch-norm statistics and a bias moved as a training-time method would),
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
    pruned["bn.running_mean"] = pruned["bn.running_mean"] + 0.1
    pruned["fc1.bias"] = pruned["fc1.bias"] * 0.9
    x_train, x_test = torch.randn(40, 1, 6, 6), torch.randn(30, 1, 6, 6)
    y_train, y_test = torch.randint(0, 3, (40,)), torch.randint(0, 3, (30,))
    return model, dense, pruned, mask, (x_train, y_train), (x_test, y_test)


def reference_loss(model, parameters, x, y):
    with torch.no_grad():
        logits = functional_call(model, parameters, (x,))
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def test_line_ends_are_the_dense_and_pruned_models(tiny):
    model, dense, pruned, _, train, test = tiny
    line = landscape.line_path(model, dense, pruned, train, test, points=9, chunk=4)
    assert line.a[0] == -0.5 and line.a[-1] == 1.5 and 0.0 in line.a and 1.0 in line.a
    for split, (x, y) in (("train", train), ("test", test)):
        for a, parameters in ((0.0, None), (1.0, pruned)):
            expected = evaluate(model, x, y, 3, parameters=parameters)
            index = line.a.index(a)
            assert getattr(line, f"{split}_loss")[index] == pytest.approx(expected.loss, rel=1e-5)
            assert getattr(line, f"{split}_accuracy")[index] == pytest.approx(expected.accuracy)
    report = line.to_json()
    assert set(report) >= {"a", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "test_barrier"}
    json.dumps(report)


def test_line_matches_a_point_by_point_reference(tiny):
    model, dense, pruned, _, train, test = tiny
    line = landscape.line_path(model, dense, pruned, train, test, points=6, chunk=3)
    for a, loss in zip(line.a, line.train_loss):
        point = {name: dense[name] + a * (pruned[name] - dense[name]) if dense[name].is_floating_point() else dense[name]
                 for name in dense}
        assert loss == pytest.approx(reference_loss(model, point, *train)[0], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("restricted", [False, True])
def test_filter_normalisation(tiny, restricted):
    model, dense, _, mask, *_ = tiny
    direction = landscape.filter_normalized_direction(model, dense, seed=3, mask=mask if restricted else None)
    assert set(direction) == {name for name, _ in model.named_parameters()}
    for name in ("conv.weight", "fc1.weight", "fc2.weight"):
        weights = dense[name] * mask[name] if restricted else dense[name]
        assert direction[name].flatten(1).norm(dim=1) == pytest.approx(weights.flatten(1).norm(dim=1), rel=1e-5)
        if restricted:
            assert not direction[name][~mask[name]].any(), "zero where the mask prunes"
        else:
            assert direction[name].ne(0).all()
    for name in ("conv.bias", "bn.weight", "bn.bias", "fc1.bias", "fc2.bias"):
        assert not direction[name].any(), f"{name} is left out of the direction"


def test_vectorised_grid_equals_a_slow_reference_loop(tiny):
    model, dense, pruned, mask, train, _ = tiny
    surface = landscape.plane(model, dense, pruned, train, points=5, mask=mask, seed=1, chunk=7)
    direction = landscape.filter_normalized_direction(model, dense, seed=1, mask=mask)
    x, y = train
    for i, b in enumerate(surface.b):
        for j, a in enumerate(surface.a):
            point = {name: (1 - a) * dense[name] + a * pruned[name] + b * direction.get(name, 0.0)
                     if dense[name].is_floating_point() else dense[name] for name in dense}
            loss, accuracy = reference_loss(model, point, x, y)
            assert surface.loss[i][j] == pytest.approx(loss, rel=1e-4, abs=1e-5)
            assert surface.accuracy[i][j] == pytest.approx(accuracy)
    looped = landscape.plane(model, dense, pruned, train, points=5, mask=mask, seed=1, vectorise=False)
    assert sum(looped.loss, []) == pytest.approx(sum(surface.loss, []), rel=1e-5)


def test_plane_passes_through_both_models(tiny):
    model, dense, pruned, _, train, _ = tiny
    surface = landscape.plane(model, dense, pruned, train, points=4)  # an even grid misses 0 and 1 unless added
    assert surface.points == {"dense": (0.0, 0.0), "pruned": (1.0, 0.0)}
    assert surface.value_at(*surface.points["pruned"]) == pytest.approx(evaluate(model, *train, 3, parameters=pruned).loss, rel=1e-5)
    assert surface.value_at(*surface.points["dense"]) == pytest.approx(evaluate(model, *train, 3).loss, rel=1e-5)
    assert len(surface.loss) == len(surface.b) and all(len(row) == len(surface.a) for row in surface.loss)
    json.dumps(surface.to_json())


def test_error_barrier_formula():
    a = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
    errors = [0.9, 0.10, 0.30, 0.45, 0.20, 0.20, 0.99]  # outside [0, 1] does not count
    assert landscape.error_barrier(a, errors) == pytest.approx(0.45 - (0.10 + 0.20) / 2)
    assert landscape.error_barrier([0.0, 0.5, 1.0], [0.2, 0.1, 0.3]) == pytest.approx(0.3 - 0.25)  # >= 0: ends count
    assert landscape.error_barrier([0.0, 1.0], [0.2, 0.2]) == 0.0


def test_iterative_levels_end_where_the_schedule_ends():
    experiment = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
    dense = train_dense(experiment).model
    levels = iterative_levels(experiment, "magnitude", 0.75, rounds=2, dense=dense)
    assert [level.round for level in levels] == [0, 1, 2]
    assert levels[-1].sparsity == pytest.approx(0.75, abs=0.01)
    outcome = run_schedule(experiment, "magnitude", 0.75, None, Iterative(rounds=2), dense=dense)
    for name, tensor in outcome.state_dict.items():
        assert torch.equal(levels[-1].tensors[name], tensor), name
    data = experiment.load_data()
    rows = landscape.level_barriers(dense, levels, (data.x_test, data.y_test), points=5)
    assert [(row["from_round"], row["to_round"]) for row in rows] == [(0, 1), (1, 2)]
    for row in rows:
        assert row["barrier"] >= 0
        assert row["barrier"] == pytest.approx(row["max_error"] - (row["start_error"] + row["end_error"]) / 2)


def test_cli_landscape_json():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["landscape", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--method", "magnitude",
                     "--sparsity", "0.8", "--grid", "5", "--batch-size-eval", "64", "--levels", "2", "--json"])
    assert code == 0, err.getvalue()
    report = json.loads(out.getvalue())
    line, surface = report["line"], report["plane"]
    assert len(line["a"]) == len(line["train_loss"]) == len(line["test_accuracy"]) and 0.0 in line["a"] and 1.0 in line["a"]
    assert len(surface["loss"]) == len(surface["b"]) and len(surface["loss"][0]) == len(surface["a"])
    assert surface["points"]["pruned"] == [1.0, 0.0]
    assert [row["to_round"] for row in report["level_barriers"]] == [1, 2]
    assert all(row["barrier"] >= 0 for row in report["level_barriers"])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        assert main(["landscape", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--method", "magnitude"]) == 2
        assert main(["landscape", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--sparsity", "0.5",
                     "--grid", "1"]) == 2
        assert main(["landscape", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--method", "grda",
                     "--levels", "2"]) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)


def test_loss_valley_page():
    at = start(dataset="digits", model="mlp", epochs=1)
    at.switch_page("views/valley.py").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="valley.method").value == "magnitude"
    at.slider(key="valley.grid").set_value(7)
    at.select_slider(key="valley.batch").set_value(64)
    at.toggle(key="valley.sharpness").set_value(True).run()
    at.button(key="valley.compute").click().run()
    assert not at.exception and not at.error
    charts = {json.loads(chart.proto.spec)["layout"]["title"]["text"]: json.loads(chart.proto.spec)
              for chart in at.get("plotly_chart")}
    line = charts["Loss along the line from dense to pruned"]
    names = [trace["name"] for trace in line["data"]]
    assert {"train loss", "test loss", "train accuracy (%)", "test accuracy (%)"} <= set(names)
    assert line["data"][0]["x"][0] == -0.5 and line["data"][0]["x"][-1] == 1.5
    contour = charts["Train loss over the plane of dense, pruned and a random direction"]
    assert contour["data"][0]["type"] == "contour"
    assert contour["data"][1]["text"] == ["dense", "pruned"]
    assert contour["data"][1]["x"] == [0.0, 1.0] and contour["data"][1]["y"] == [0.0, 0.0]
    labels = {metric.label for metric in at.metric}
    assert {"Top Hessian eigenvalue, dense", "Top Hessian eigenvalue, pruned", "Hessian trace, dense",
            "Hessian trace, pruned", "Error barrier (test)"} <= labels
    at.slider(key="valley.rounds").set_value(2).run()
    at.button(key="valley.levels").click().run()
    assert not at.exception and not at.error
    bars = next(json.loads(chart.proto.spec) for chart in at.get("plotly_chart")
                if json.loads(chart.proto.spec)["layout"]["title"]["text"] == "Error barrier between consecutive pruning levels")
    assert len(bars["data"][0]["y"]) == 2 and min(bars["data"][0]["y"]) >= 0
