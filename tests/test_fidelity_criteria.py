"""The gradient-flow criteria and undecayed pruning as their reference code computes them: 2,560
scoring samples, structured gradient-norm preservation as |sum over the filter|, GraSP's softmax
temperature, and undecayed pruning's gradient over the whole training split."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pruning import loss_gradients
from pruning.class_balanced import balanced_batch
from pruning.criteria import CRITERIA, GRADIENT_FLOW_SAMPLES_PER_CLASS, GRASP_TEMPERATURE
from pruning.data import Dataset, load_dataset
from pruning.methods.base import PruneContext
from pruning.methods.undecayed import undecayed_scores
from pruning.registry import get_method
from pruning.selection import group_scores
from tests.test_criteria import TinyMLP

GRADIENT_FLOW = ("snip", "biased-loss", "grasp", "grad-norm", "taylor")


TanhMLP = TinyMLP  # 3-4-2 with tanh and biases: smooth, so every Hessian entry is alive


def tiny_problem(samples=8, seed=0):
    torch.manual_seed(seed)
    model = TanhMLP().double()
    x = torch.randn(samples, 1, 1, 3, dtype=torch.float64)
    y = torch.arange(samples) % 2
    return model, Dataset("tiny", x, y, x, y, ("a", "b"))


def explicit_w_hessian_gradient(model, x, y, temperature=1.0):
    """``w * (H g)`` per parameter, ``g`` and ``H`` those of the mean cross-entropy of ``logits / T`` in
    *every* parameter, from ``torch.autograd.functional.hessian`` of one flat vector (no double backprop)."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [parameter.shape for _, parameter in model.named_parameters()]
    sizes = [parameter.numel() for _, parameter in model.named_parameters()]
    flat = torch.cat([parameter.detach().flatten() for _, parameter in model.named_parameters()])

    def loss(vector):
        tensors = {name: part.view(shape) for name, part, shape in zip(names, vector.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, tensors, (x,)) / temperature, y)

    g = torch.autograd.functional.jacobian(loss, flat)
    product = torch.autograd.functional.hessian(loss, flat) @ g
    return {name: (w * hg).view(shape)
            for name, w, hg, shape in zip(names, flat.split(sizes), product.split(sizes), shapes)}


# --- structured gradient-norm preservation: |sum over the group of w Hg| ---


def test_structured_grad_norm_is_the_size_of_the_sum_on_a_hand_worked_toy():
    """Input x = (1, 1), label 0; hidden W = [[1, -1], [3, -3]] (no bias, no activation), output C =
    [[1, 0.5], [0, 0]]. Both hidden pre-activations h = W x are 0, so z = 0, p = (1/2, 1/2), the
    output weights' gradient p h is 0 and g_{W_ki} = -d_k x_i / 2 with d_k = C_0k - C_1k = (1, 1/2).
    The hidden block of H is (d_k d_m x_i x_j) / 4 (diag(p) - p p^T = [[1, -1], [-1, 1]] / 4), so
    (H g)_{W_ki} = -(d_k x_i / 8) |x|^2 sum_m d_m^2 = -d_k x_i * 2 * 1.25 / 8 = -0.3125 d_k x_i
    and w (H g) = -0.3125 W_ki d_k: (-0.3125, +0.3125) for neuron 0, (-0.46875, +0.46875) for
    neuron 1. Per weight grad-norm scores their sizes; each neuron's terms cancel (they sum to
    -0.3125 h_k d_k = 0), so the reference's filter score |sum| is 0 for both, where summing the
    sizes would give 0.625 and 0.9375."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0], [3.0, -3.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 0.0]]))
    x = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    data = Dataset("toy", x, torch.tensor([0]), x, torch.tensor([0]), ("right", "wrong"))
    context = PruneContext(data=data)
    per_weight = CRITERIA["grad-norm"].score(model, ["1.weight"], context)["1.weight"]
    assert torch.allclose(per_weight, torch.tensor([[0.3125, 0.3125], [0.46875, 0.46875]], dtype=torch.float64))
    method = get_method("grad-norm")
    structured = method.scores(model, method.settings({"granularity": "structured"}), context)
    assert list(structured) == ["1.weight"]  # the output layer stays whole
    neuron_scores = group_scores(structured["1.weight"], "structured", 1, method.criterion.aggregate)
    assert torch.allclose(neuron_scores, torch.zeros(2), atol=1e-7)  # |sum|: the terms cancel
    summed_sizes = group_scores(per_weight, "structured", 1, "sum")
    assert torch.allclose(summed_sizes, torch.tensor([0.625, 0.9375]))  # the other reading: not what is used


def test_structured_grad_norm_ranks_filters_by_the_size_of_the_sum_against_an_explicit_hessian():
    model, data = tiny_problem()
    terms = explicit_w_hessian_gradient(model, data.x_train, data.y_train)["fc1.weight"]  # T = 1 for grad-norm
    expected = terms.sum(1).abs()
    method = get_method("grad-norm")
    settings = method.settings({"granularity": "structured", "scope": "layerwise"})
    context = PruneContext(data=data)
    ours = group_scores(method.scores(model, settings, context)["fc1.weight"], "structured", 1, "sum")
    assert torch.allclose(ours, expected.float(), atol=1e-6)
    sum_of_sizes = terms.abs().sum(1)
    assert not torch.allclose(expected, sum_of_sizes), "the toy must tell the two readings apart"
    kept = method.prune(model, 0.5, settings, context).mask["fc1.weight"].all(1)
    assert kept.tolist() == [index in expected.topk(2).indices.tolist() for index in range(4)]
    # block granularity reads the same way: each block scores |sum of its terms|
    blocks = method.scores(model, method.settings({"granularity": "block", "block_size": 2}), context)["fc1.weight"]
    assert torch.allclose(group_scores(blocks, "block", 2, "sum"),
                          group_scores(terms, "block", 2, "sum").abs().float(), atol=1e-6)


def test_the_other_criteria_keep_their_structured_reductions():
    """As the gradient-flow paper's code: loss preservation and its biased form sum the sizes |w g|
    and |w^2 g|, GraSP sums the signed w Hg, magnitude takes the filter's L2 norm."""
    assert all(CRITERIA[name].group_terms is None for name in ("snip", "biased-loss", "grasp", "taylor"))
    assert CRITERIA["grad-norm"].group_terms is not None
    assert {name: CRITERIA[name].aggregate for name in ("magnitude", *GRADIENT_FLOW)} == {
        "magnitude": "l2", **{name: "sum" for name in GRADIENT_FLOW}}


# --- GraSP's temperature ---


@pytest.mark.parametrize("temperature", [1.0, 7.0, GRASP_TEMPERATURE])
def test_grasp_with_a_temperature_equals_an_explicit_hessian_of_the_tempered_loss(temperature):
    model, data = tiny_problem()
    expected = explicit_w_hessian_gradient(model, data.x_train, data.y_train, temperature)
    names = ["fc1.weight", "fc2.weight"]
    ours = CRITERIA["grasp"].score(model, names, PruneContext(data=data), temperature=temperature)
    for name in names:  # our importance is -S = w Hg, GraSP's S = -w Hg
        assert torch.allclose(ours[name], expected[name], rtol=1e-6, atol=1e-12 / temperature**3), name


def test_grasp_defaults_to_the_references_temperature_and_grad_norm_keeps_the_plain_loss():
    grasp = get_method("grasp")
    assert grasp.settings()["temperature"] == GRASP_TEMPERATURE == 200
    assert "temperature" not in get_method("grad-norm").settings()
    model, data = tiny_problem()
    context = PruneContext(data=data)
    names = ["fc1.weight", "fc2.weight"]
    by_method = grasp.scores(model, grasp.settings({"samples_per_class": 4}), context)
    tempered = explicit_w_hessian_gradient(model, data.x_train, data.y_train, GRASP_TEMPERATURE)
    plain = explicit_w_hessian_gradient(model, data.x_train, data.y_train, 1.0)
    assert all(torch.allclose(by_method[name], tempered[name], rtol=1e-6, atol=1e-18) for name in names)
    assert not torch.allclose(by_method["fc1.weight"] / by_method["fc1.weight"].abs().max(),
                              plain["fc1.weight"] / plain["fc1.weight"].abs().max())
    grad_norm = get_method("grad-norm").scores(model, get_method("grad-norm").settings(), context)
    assert all(torch.allclose(grad_norm[name], plain[name].abs(), rtol=1e-6) for name in names)


# --- the scoring samples ---


def test_the_gradient_flow_criteria_score_on_2560_samples_or_the_whole_split_where_smaller():
    assert GRADIENT_FLOW_SAMPLES_PER_CLASS * 10 == 2560
    for name in GRADIENT_FLOW:
        assert get_method(name).settings()["samples_per_class"] == GRADIENT_FLOW_SAMPLES_PER_CLASS, name
    for name in ("wanda", "attr-gradxact"):  # their own references: the quick batch stays
        assert get_method(name).settings()["samples_per_class"] == 10, name
    mnist = load_dataset("mnist-5k")  # 4,000 training images, at least 256 of each digit
    x, y = balanced_batch(mnist, GRADIENT_FLOW_SAMPLES_PER_CLASS, seed=0)
    assert len(y) == 2560 and torch.bincount(y).tolist() == [256] * 10
    digits = load_dataset("digits")  # fewer than 256 per class: the whole training split
    _, y_digits = balanced_batch(digits, GRADIENT_FLOW_SAMPLES_PER_CLASS, seed=0)
    assert len(y_digits) == len(digits.y_train)


def test_the_method_scores_on_its_samples_per_class_setting(monkeypatch):
    """The scoring batch the method builds is the setting's, streamed in chunks: the scores equal those
    of the explicit mean over that batch in one piece."""
    model, data = tiny_problem(samples=30)
    method = get_method("snip")
    monkeypatch.setattr(loss_gradients, "SCORING_CHUNK", 4)
    scores = method.scores(model, method.settings({"samples_per_class": 6}), PruneContext(data=data, seed=2))
    x, y = balanced_batch(data, 6, seed=2)
    loss = nn.functional.cross_entropy(model(x), y)
    g = torch.autograd.grad(loss, [model.fc1.weight, model.fc2.weight])
    assert torch.allclose(scores["fc1.weight"], (model.fc1.weight * g[0]).abs().detach())
    assert torch.allclose(scores["fc2.weight"], (model.fc2.weight * g[1]).abs().detach())


# --- undecayed pruning: g over the whole training split ---


def test_undecayed_gradient_streamed_in_chunks_equals_the_whole_split_in_one_batch():
    model, data = tiny_problem(samples=37, seed=3)
    strength = 0.01
    names = ["fc1.weight", "fc2.weight"]
    loss = nn.functional.cross_entropy(model(data.x_train), data.y_train)  # one batch: the whole split
    g = dict(zip(names, torch.autograd.grad(loss, [model.fc1.weight, model.fc2.weight])))
    expected = {name: (-parameter.detach() * g[name] + strength * parameter.detach().square()).abs()
                for name, parameter in model.named_parameters() if name in names}
    for chunk in (5, 37, 1000):
        streamed = undecayed_scores(model, names, data, strength, gradient_samples=0, chunk=chunk)
        assert all(torch.allclose(streamed[name], expected[name], atol=1e-12) for name in names), chunk
    assert get_method("undecayed").settings()["gradient_samples"] == 0  # the whole split by default
    assert "batch_size" not in get_method("undecayed").settings()


def test_undecayed_on_a_class_balanced_batch_of_gradient_samples():
    model, data = tiny_problem(samples=37, seed=3)
    names = ["fc1.weight"]
    x, y = balanced_batch(data, 5, seed=4)  # 10 samples over 2 classes: 5 of each
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), model.fc1.weight)[0]
    ours = undecayed_scores(model, names, data, 0.0, gradient_samples=10, seed=4, chunk=3)["fc1.weight"]
    assert torch.allclose(ours, (model.fc1.weight.detach() * g).abs())
    whole = undecayed_scores(model, names, data, 0.0, gradient_samples=0)["fc1.weight"]
    assert not torch.allclose(ours, whole)


def test_undecayed_score_at_a_hand_made_stationary_point_is_two_lambda_w_squared():
    """Logits z = (a, -a) from x = 1 (Linear(1, 2) with weights (a, -a)), label 0: p_2 = 1 / (1 + e^{2a}),
    g = (-p_2, p_2). With lambda = p_2 / a both g_i + lambda w_i vanish: a stationary point of
    CE + lambda/2 ||w||^2. The score |-w g + lambda w^2| is a p_2 + a p_2 = 2 lambda a^2 for both
    weights; at a = 1/2, lambda = 2 / (1 + e) and the score is 1 / (1 + e) = 0.268941."""
    a = 0.5
    strength = 1 / (a * (1 + math.exp(2 * a)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[a], [-a]]))
    x = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    data = Dataset("toy", x, torch.tensor([0]), x, torch.tensor([0]), ("right", "wrong"))
    score = undecayed_scores(model, ["1.weight"], data, strength, gradient_samples=0)["1.weight"].flatten()
    assert strength == pytest.approx(2 / (1 + math.e))
    assert torch.allclose(score, torch.full((2,), 2 * strength * a**2, dtype=torch.float64))
    assert score[0].item() == pytest.approx(1 / (1 + math.e), abs=1e-12)
