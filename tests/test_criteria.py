"""Importance criteria: each test shows what defines a criterion, not just that it returns a mask."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pruning import criteria, loss_gradients
from pruning.autodiff import gradient, hessian_vector_product, hvp_operator
from pruning.class_balanced import balanced_batch
from pruning.criteria import CRITERIA
from pruning.data import Dataset, load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.methods.base import PruneContext
from pruning.models import build_model, prunable_weight_names
from pruning.pipeline import prune_model
from pruning.registry import get_method
from pruning.train import TrainConfig, fit

NEW_CRITERIA = ("snip", "biased-loss", "grasp", "grad-norm", "taylor", "synflow")
DATA_CRITERIA = ("snip", "biased-loss", "grasp", "grad-norm", "taylor")


class TinyMLP(nn.Module):
    """3-4-2 with tanh (smooth, so the Hessian is not piecewise zero), on (N, 1, 1, 3) inputs."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(torch.flatten(x, 1))))


def tiny_problem():
    torch.manual_seed(0)
    model = TinyMLP().double()
    x = torch.randn(8, 1, 1, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    data = Dataset("tiny", x, y, x, y, ("a", "b"))
    return model, data


def exact_hessian(model, names, x, y):
    """The full Hessian of the mean cross-entropy in the named weights, from
    torch.autograd.functional.hessian on one flat vector (independent of double backprop)."""
    parameters = dict(model.named_parameters())
    shapes = [parameters[name].shape for name in names]
    sizes = [parameters[name].numel() for name in names]

    def loss(flat):
        tensors = {name: part.view(shape) for name, part, shape in zip(names, flat.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, tensors, (x,)), y)

    flat = torch.cat([parameters[name].detach().flatten() for name in names])
    return torch.autograd.functional.hessian(loss, flat), sizes, shapes


def unflatten(flat, sizes, shapes):
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


# --- Hessian-vector products ---


def test_hvp_equals_the_exact_hessian_times_v():
    model, data = tiny_problem()
    names = [name for name, _ in model.named_parameters()]  # weights and biases
    params = list(model.parameters())
    hessian, sizes, shapes = exact_hessian(model, names, data.x_train, data.y_train)
    loss_fn = lambda: nn.functional.cross_entropy(model(data.x_train), data.y_train)  # noqa: E731
    generator = torch.Generator().manual_seed(1)
    vectors = [torch.randn(sum(sizes), generator=generator, dtype=torch.float64) for _ in range(2)]
    ours = hessian_vector_product(loss_fn, params, unflatten(vectors[0], sizes, shapes))
    assert torch.allclose(torch.cat([h.flatten() for h in ours]), hessian @ vectors[0], atol=1e-5)
    # one operator, many products (what Lanczos will need): the graph is reused
    operator = hvp_operator(loss_fn, params)
    for v in vectors:
        product = operator(unflatten(v, sizes, shapes))
        assert torch.allclose(torch.cat([h.flatten() for h in product]), hessian @ v, atol=1e-5)
    assert all(p.grad is None for p in params)
    # a parameter the loss does not use gets zero gradient and zero Hessian rows
    unused = torch.ones(3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(gradient(loss_fn(), params + [unused])[-1], torch.zeros(3, dtype=torch.float64))
    products = hessian_vector_product(loss_fn, params + [unused], [torch.ones_like(p) for p in params + [unused]])
    assert torch.equal(products[-1], torch.zeros(3, dtype=torch.float64))


# --- the scoring batch ---


def test_balanced_batch_is_class_balanced_seeded_and_from_the_training_split():
    data = load_dataset("mnist-5k")
    x, y = balanced_batch(data, 7, seed=3)
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 7))
    x_again, y_again = balanced_batch(data, 7, seed=3)
    assert torch.equal(x, x_again) and torch.equal(y, y_again)
    assert not torch.equal(balanced_batch(data, 7, seed=4)[0], x)
    # every image is a training image with its own label (matched through a random projection)
    projection = torch.randn(28 * 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    train_keys = (data.x_train.flatten(1).double() @ projection).tolist()
    lookup = {round(key, 6): int(label) for key, label in zip(train_keys, data.y_train)}
    for key, label in zip((x.flatten(1).double() @ projection).tolist(), y.tolist()):
        assert lookup[round(key, 6)] == label
    # a class with fewer samples than asked gives all it has
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    small = Dataset("small", torch.randn(7, 1, 2, 2), labels, torch.zeros(1, 1, 2, 2), labels[:1], ("a", "b"))
    _, y_small = balanced_batch(small, 3, seed=0)
    assert torch.bincount(y_small).tolist() == [3, 2]


# --- each formula against an independent computation ---


def gated(function, model, names):
    """``function`` of the gates ``c`` (one per named weight, as SNIP defines connections): the
    network runs with each named weight ``w`` replaced by ``c * w``."""
    parameters = dict(model.named_parameters())
    return lambda gates: function({name: gates[name] * parameters[name].detach() for name in names})


def gate_derivative(function, model, names, step=1e-6):
    """``d function / d c_j`` at ``c = 1`` for every weight ``j``, by central differences (no autograd)."""
    parameters = dict(model.named_parameters())
    ones = {name: torch.ones_like(parameters[name]) for name in names}
    derivative = {}
    for name in names:
        flat = torch.zeros(ones[name].numel(), dtype=torch.float64)
        for index in range(flat.numel()):
            shift = torch.zeros_like(flat)
            shift[index] = step
            up = function({**ones, name: ones[name] + shift.view_as(ones[name])})
            down = function({**ones, name: ones[name] - shift.view_as(ones[name])})
            flat[index] = (up - down) / (2 * step)
        derivative[name] = flat.view_as(ones[name])
    return derivative


PLAIN_LOSS = {"grasp": {"temperature": 1.0}}  # GraSP's default T = 200; these oracles use the plain loss


def test_data_criteria_equal_their_definitions_on_a_tiny_model(monkeypatch):
    """Each score against its paper's definition, by finite differences over connection gates
    ``c`` (weights ``c * w``, at ``c = 1``), not by the products of ``w``, ``g`` and ``H g`` the
    code computes: SNIP's connection sensitivity is ``|dL/dc|``, Taylor's squared first-order
    loss change ``(dL/dc)^2``, biased loss preservation ``|w| |dL/dc|``; with ``G = ||dL/dθ||^2``
    (the gradient flow over every parameter θ, biases included), ``dG/dc = 2 w (H g)``, so GraSP's importance ``-S = w H g`` is
    ``dG/dc / 2`` and gradient-norm preservation ``|dG/dc| / 2``."""
    model, data = tiny_problem()
    names = prunable_weight_names(model)
    assert names == ["fc1.weight", "fc2.weight"]
    x, y = data.x_train, data.y_train  # samples_per_class=10 >= 4 per class below: the whole set

    def loss(weights):
        with torch.no_grad():
            return float(nn.functional.cross_entropy(functional_call(model, weights, (x,)), y))

    def gradient_flow(weights):  # ||g||^2 over every parameter, biases included (the reference's gradient flow)
        everything = {name: parameter.detach().clone() for name, parameter in model.named_parameters()} | weights
        everything = {name: tensor.requires_grad_(True) for name, tensor in everything.items()}
        value = nn.functional.cross_entropy(functional_call(model, everything, (x,)), y)
        return float(sum((g**2).sum() for g in torch.autograd.grad(value, list(everything.values()))))

    dloss = gate_derivative(gated(loss, model, names), model, names)
    dflow = gate_derivative(gated(gradient_flow, model, names), model, names)
    w = {name: parameter.detach() for name, parameter in model.named_parameters()}
    expected = {
        "snip": {name: dloss[name].abs() for name in names},
        "biased-loss": {name: w[name].abs() * dloss[name].abs() for name in names},
        "taylor": {name: dloss[name] ** 2 for name in names},
        "grad-norm": {name: dflow[name].abs() / 2 for name in names},
        "grasp": {name: dflow[name] / 2 for name in names},  # = -S, GraSP's S = -w*Hg
    }
    context = PruneContext(data=data, seed=0, samples_per_class=10)
    for criterion, scores in expected.items():
        ours = CRITERIA[criterion].score(model, names, context, **PLAIN_LOSS.get(criterion, {}))
        for name in names:
            assert torch.allclose(ours[name], scores[name], atol=1e-8), (criterion, name)
        assert CRITERIA[criterion].needs_data and CRITERIA[criterion].aggregate == "sum"
    assert CRITERIA["magnitude"].aggregate == "l2"
    # large batches are scored in chunks: the same g and H g
    monkeypatch.setattr(loss_gradients, "SCORING_CHUNK", 3)
    for criterion in ("snip", "grasp"):
        ours = CRITERIA[criterion].score(model, names, context, **PLAIN_LOSS.get(criterion, {}))
        assert all(torch.allclose(ours[name], expected[criterion][name], atol=1e-8) for name in names)
    with pytest.raises(BadInputError, match="training data"):
        CRITERIA["snip"].score(model, names, PruneContext(data=None))
    assert (expected["grasp"]["fc1.weight"] < 0).any() and (expected["grasp"]["fc1.weight"] > 0).any()


def test_grasp_sign_on_a_two_weight_toy_model():
    """Logits z = (w1, w2) * x with x = 1, label 0, w = (ln 6, ln 2), cross-entropy.

    p = softmax(ln 6, ln 2) = (3/4, 1/4); g = p - onehot(0) = (-1/4, 1/4);
    H = diag(p) - p p^T = (3/16) [[1, -1], [-1, 1]]; H g = (3/16)(-1/2, 1/2) = (-3/32, 3/32).
    GraSP's S = -w * Hg = (3/32 ln 6, -3/32 ln 2) = (+0.1680, -0.0650): w1 has the largest S and
    is removed. Exactly: ||g||^2 = 2/16 = 0.125 dense; removing w1 gives z = (0, ln 2),
    p = (1/3, 2/3), ||g||^2 = 8/9 = 0.889 (first order: 0.125 + 2 S1 = 0.461); removing w2 gives
    z = (ln 6, 0), p = (6/7, 1/7), ||g||^2 = 2/49 = 0.041 (first order: 0.125 + 2 S2 = -0.005).
    So GraSP removes the weight whose removal *raises* the gradient norm and keeps w2, whose
    removal would cut the gradient flow. Our importance is -S = w * Hg = (-0.1680, +0.0650).
    SNIP (|w g| = (ln 6 / 4, ln 2 / 4) = (0.448, 0.173)) and grad-norm
    (|w Hg| = (3/32 ln 6, 3/32 ln 2) = (0.168, 0.065)) remove w2 instead; Taylor
    ((w g)^2 = ((ln 6)^2 / 16, (ln 2)^2 / 16) = (0.2006, 0.0300)) and biased loss preservation
    (|w^2 g| = ((ln 6)^2 / 4, (ln 2)^2 / 4) = (0.8026, 0.1201)) rank them as SNIP does."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[math.log(6)], [math.log(2)]]))
    x, y = torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.tensor([0])
    data = Dataset("toy", x, y, x, y, ("right", "wrong"))
    context = PruneContext(data=data)
    importance = CRITERIA["grasp"].score(model, ["1.weight"], context, temperature=1.0)["1.weight"].flatten()
    S = -importance
    assert torch.allclose(S, torch.tensor([3 / 32 * math.log(6), -3 / 32 * math.log(2)], dtype=torch.float64))
    assert torch.allclose(S, torch.tensor([0.1680, -0.0650], dtype=torch.float64), atol=1e-4)
    worked_on_paper = {
        "snip": [math.log(6) / 4, math.log(2) / 4],
        "grad-norm": [3 / 32 * math.log(6), 3 / 32 * math.log(2)],
        "taylor": [math.log(6) ** 2 / 16, math.log(2) ** 2 / 16],
        "biased-loss": [math.log(6) ** 2 / 4, math.log(2) ** 2 / 4],
    }
    for criterion, values in worked_on_paper.items():
        scores = CRITERIA[criterion].score(model, ["1.weight"], context)["1.weight"].flatten()
        assert torch.allclose(scores, torch.tensor(values, dtype=torch.float64)), criterion

    def gradient_norm_squared(w1, w2):
        p = torch.softmax(torch.tensor([w1, w2]), 0)
        return float(((p - torch.tensor([1.0, 0.0])) ** 2).sum())

    dense = gradient_norm_squared(math.log(6), math.log(2))
    without_w1, without_w2 = gradient_norm_squared(0.0, math.log(2)), gradient_norm_squared(math.log(6), 0.0)
    assert dense == pytest.approx(1 / 8) and without_w1 == pytest.approx(8 / 9) and without_w2 == pytest.approx(2 / 49)
    assert without_w1 > dense > without_w2  # removing the largest-S weight raises the gradient norm

    def kept(method):
        outcome = get_method(method).prune(model, 0.5, get_method(method).settings(), PruneContext(data=data))
        return outcome.mask["1.weight"].flatten().tolist()

    assert kept("grasp") == [False, True]  # removes w1 = the largest S
    assert kept("snip") == [True, False]
    assert kept("grad-norm") == [True, False]


# --- behaviour on a trained network ---


@pytest.fixture(scope="module")
def trained_mlp():
    experiment = Experiment(model="mlp", train=TrainConfig(epochs=1))
    data = experiment.load_data()
    model = experiment.build_model(data)
    fit(model, data, experiment.train, seed=0)
    model.eval()
    return model, data


def test_snip_and_magnitude_disagree_on_a_trained_model_and_both_beat_random(trained_mlp):
    model, data = trained_mlp
    masks = {}
    for name in ("snip", "magnitude"):
        method = get_method(name)
        masks[name] = method.prune(model, 0.9, method.settings(), PruneContext(data=data)).mask
    kept = {name: torch.cat([keep.flatten() for keep in mask.values()]) for name, mask in masks.items()}
    jaccard = float((kept["snip"] & kept["magnitude"]).sum() / (kept["snip"] | kept["magnitude"]).sum())
    assert jaccard < 0.7, f"the 10% of weights each keeps overlap too much: Jaccard {jaccard:.3f}"
    accuracy = {name: prune_model(model, data, name, 0.8).pruned.accuracy for name in ("snip", "magnitude", "random")}
    assert accuracy["snip"] > accuracy["random"] + 0.05, accuracy
    assert accuracy["magnitude"] > accuracy["random"] + 0.05, accuracy


# --- SynFlow ---


def test_synflow_is_data_free():
    data = load_dataset("mnist-5k")
    torch.manual_seed(0)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    names = prunable_weight_names(model)
    noise_x, noise_y = torch.randn(20, *data.input_shape), torch.randint(10, (20,))
    noise = Dataset("noise", noise_x, noise_y, data.x_test, data.y_test, data.class_names)

    class ShapeOnly:
        input_shape = data.input_shape

    contexts = (PruneContext(data=data), PruneContext(data=noise, seed=5), PruneContext(data=ShapeOnly()))
    scores = [CRITERIA["synflow"].score(model, names, context) for context in contexts]
    for other in scores[1:]:
        assert all(torch.equal(scores[0][name], other[name]) for name in names)
    assert not CRITERIA["synflow"].needs_data and CRITERIA["synflow"].iterative
    assert "samples_per_class" not in get_method("synflow").settings()
    # synaptic flow is conserved: each layer's scores sum to the same R (1 after normalisation),
    # up to the biases' share
    for name in names:
        assert 0.9 < float(scores[0][name].sum()) <= 1.0 + 1e-4, name


def test_iterative_synflow_avoids_layer_collapse_where_one_shot_does_not():
    data = load_dataset("mnist-5k")
    torch.manual_seed(0)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    method = get_method("synflow")
    sparsity = {}
    for rounds in (1, 100):
        settings = method.settings({"rounds": rounds, "allow_empty_layers": True})
        mask = method.prune(model, 0.99, settings, PruneContext(data=data)).mask
        assert mask.sparsity() == pytest.approx(0.99, abs=1e-5)
        sparsity[rounds] = mask.layer_sparsity()
    assert max(sparsity[1].values()) == 1.0  # one shot cuts a layer (fc1) off completely
    assert max(sparsity[100].values()) < 1.0  # 100 rounds keep every layer connected


def test_synflow_keeps_pruned_weights_pruned_and_handles_relu6():
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)
    names = prunable_weight_names(model)
    method = get_method("synflow")
    mask = method.prune(model, 0.5, method.settings({"rounds": 1}), PruneContext(data=load_dataset("mnist-5k"))).mask
    scores = CRITERIA["synflow"].score(model, names, PruneContext(data=load_dataset("mnist-5k"), mask=mask))
    for name in names:
        assert (scores[name][~mask[name]] == -1).all() and (scores[name][mask[name]] >= 0).all()

    class ReLU6Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(16, 64), nn.ReLU6(), nn.Linear(64, 10)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x.flatten(1)) * 100))  # saturates at the all-ones input

    class Shape:
        input_shape = (1, 4, 4)

    net = ReLU6Net()
    scores = CRITERIA["synflow"].score(net, ["fc1.weight", "fc2.weight"], PruneContext(data=Shape()))
    assert float(scores["fc1.weight"].sum()) > 0.5  # without the ReLU swap no gradient reaches fc1
    assert isinstance(net.act, nn.ReLU6)


# --- through the method registry ---


@pytest.mark.parametrize("name", NEW_CRITERIA)
def test_structured_pruning_removes_whole_filters_and_reaches_the_target(name):
    data = load_dataset("mnist-5k")
    torch.manual_seed(0)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    method = get_method(name)
    overrides = {"granularity": "structured"}
    overrides.update({"rounds": 5} if CRITERIA[name].iterative else {"samples_per_class": 2})
    mask = method.prune(model, 0.5, method.settings(overrides), PruneContext(data=data)).mask
    assert list(mask) == ["conv1.weight", "conv2.weight", "fc1.weight"]  # output layer left whole
    groups = pruned_groups = 0
    for entry in mask.values():
        rows = entry.flatten(1)
        assert (rows.all(1) | (~rows).all(1)).all(), "a filter/neuron is kept or pruned whole"
        groups += rows.shape[0]
        pruned_groups += int((~rows.any(1)).sum())
    assert pruned_groups == round(0.5 * groups)


def test_criteria_leave_the_model_untouched():
    data = load_dataset("mnist-5k")
    torch.manual_seed(0)
    model = build_model("vgg-small", data.input_shape, data.num_classes)
    model.train()
    names = prunable_weight_names(model)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.5)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    context = PruneContext(data=data, samples_per_class=2)
    train_mode_scores = {name: CRITERIA[name].score(model, names, context) for name in NEW_CRITERIA}
    assert model.training
    for name, tensor in model.state_dict().items():  # weights and BN running statistics/counters
        assert torch.equal(tensor, before[name]), name
    assert all(torch.equal(parameter.grad, torch.full_like(parameter, 0.5)) for parameter in model.parameters())
    # scored in eval mode: the same scores whatever mode the model was in
    model.eval()
    for criterion in ("snip", "synflow"):
        eval_scores = CRITERIA[criterion].score(model, names, context)
        assert all(torch.allclose(eval_scores[n], train_mode_scores[criterion][n]) for n in names), criterion
    assert not model.training


def test_every_new_criterion_is_documented():
    for name in NEW_CRITERIA:
        criterion = CRITERIA[name]
        assert len(criterion.description) > 150 and criterion.formula and criterion.reference
        assert any(str(year) in criterion.reference for year in range(2015, 2022))
        assert get_method(name).formula == criterion.formula
    assert criteria.snip_scores.__doc__ and "ranking" in criteria.snip_scores.__doc__
