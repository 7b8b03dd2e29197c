"""Spectral tools against the exact Hessian of a tiny float64 MLP (a few dozen weights)."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pruning.analysis.hessian import (
    hutchinson_trace,
    lanczos,
    loss_hessian,
    rademacher,
    row_norms,
    sharpness,
    spectral_quadrature,
    top_eigenvalues,
)


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer MLP (4 -> 5 -> 3, tanh) on 8 samples, its weight names and the exact Hessian."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    names = ["0.weight", "2.weight"]
    tensors = {name: p.detach() for name, p in model.named_parameters()}
    shapes = [tensors[name].shape for name in names]
    sizes = [math.prod(s) for s in shapes]

    def loss(flat):
        weights = {name: part.view(shape) for name, part, shape in zip(names, flat.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, {**tensors, **weights}, (x,)), y)

    flat = torch.cat([tensors[name].reshape(-1) for name in names])
    exact = torch.autograd.functional.hessian(loss, flat)
    return model, x, y, names, exact


def test_operator_is_the_exact_hessian_and_leaves_the_model_alone(tiny):
    model, x, y, names, exact = tiny
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hessian = loss_hessian(model, x, y, names=names)
    assert hessian.size == exact.shape[0] == 35
    columns = torch.stack([hessian(e) for e in torch.eye(hessian.size, dtype=torch.float64)], 1)
    torch.testing.assert_close(columns, exact)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_top_eigenvalues_match_the_exact_spectrum(tiny):
    model, x, y, names, exact = tiny
    hessian = loss_hessian(model, x, y, names=names)
    expected = torch.linalg.eigvalsh(exact).flip(0)[:3]
    torch.testing.assert_close(torch.tensor(top_eigenvalues(hessian, hessian.size, k=3, iterations=30), dtype=torch.float64), expected)


def test_hutchinson_trace_is_within_its_own_standard_error(tiny):
    model, x, y, names, exact = tiny
    hessian = loss_hessian(model, x, y, names=names)
    probes = 100
    estimate = hutchinson_trace(hessian, hessian.size, probes=probes, seed=1)
    off_diagonal = (exact**2).sum() - (exact.diag() ** 2).sum()
    standard_error = float((2 * off_diagonal / probes).sqrt())
    assert abs(estimate - float(exact.trace())) < 4 * standard_error


def test_sharpness_on_the_default_weights_and_on_masked_parameters(tiny):
    model, x, y, names, exact = tiny
    result = sharpness(model, x, y, names=names, iterations=35, probes=10)
    assert set(result) == {"top_eigenvalue", "trace"}
    assert result["top_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(exact)[-1]), rel=1e-8)
    # Weights given explicitly: zeroing the first layer makes the output layer see constant tanh(bias).
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    parameters["0.weight"] = torch.zeros_like(parameters["0.weight"])
    zeroed = sharpness(model, x, y, parameters=parameters, names=["2.weight"], iterations=15, probes=5)
    assert zeroed["top_eigenvalue"] >= 0 and math.isfinite(zeroed["trace"])
    default_names = sharpness(model, x, y, iterations=5, probes=2)  # prunable weights of the model
    assert math.isfinite(default_names["top_eigenvalue"])


def test_quadrature_reproduces_each_probes_moments_exactly(tiny):
    """Gauss quadrature from m Lanczos steps is exact for v^T H^k v / v^T v up to degree 2m - 1."""
    model, x, y, names, exact = tiny
    hessian = loss_hessian(model, x, y, names=names)
    start = rademacher(hessian.size, torch.Generator().manual_seed(3))
    steps = 5
    nodes, weights = lanczos(hessian, start, steps).quadrature()
    assert weights.sum().item() == pytest.approx(1.0)
    unit = start / start.norm()
    power = unit.clone()
    for k in range(1, 2 * steps):
        power = exact @ power
        assert float((weights * nodes**k).sum()) == pytest.approx(float(unit @ power), rel=1e-7, abs=1e-12)


def test_slq_moments_estimate_the_normalised_traces(tiny):
    model, x, y, names, exact = tiny
    hessian = loss_hessian(model, x, y, names=names)
    probes = 40
    quadrature = spectral_quadrature(hessian, hessian.size, steps=3, probes=probes, seed=0)
    n = hessian.size
    for k in (1, 2, 3, 4, 5):
        power = torch.linalg.matrix_power(exact, k)
        expected = float(power.trace()) / n
        # Each probe gives v^T H^k v / n exactly (degree <= 2 * 3 - 1); the mean has Hutchinson's variance.
        standard_error = float((2 * ((power**2).sum() - (power.diag() ** 2).sum()) / probes).sqrt()) / n
        assert abs(quadrature.moment(k) - expected) < 4 * standard_error, k


def test_full_rank_lanczos_nodes_are_the_eigenvalues(tiny):
    model, x, y, names, exact = tiny
    hessian = loss_hessian(model, x, y, names=names)
    eigenvalues = torch.linalg.eigvalsh(exact)
    quadrature = spectral_quadrature(hessian, hessian.size, steps=hessian.size, probes=1, seed=0)
    nodes = quadrature.nodes[0]
    # Every node is an eigenvalue and every eigenvalue is a node (repeated zeros give one node).
    assert (nodes[:, None] - eigenvalues[None, :]).abs().min(1).values.max() < 1e-8
    assert (eigenvalues[:, None] - nodes[None, :]).abs().min(1).values.max() < 1e-8
    grid = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    density = quadrature.density(grid, sigma=0.01)
    assert float(density.sum() * (grid[1] - grid[0])) == pytest.approx(1.0, abs=1e-6)


def test_row_norms_are_exact_in_expectation_and_zero_on_dead_coordinates(tiny):
    model, x, y, names, exact = tiny
    x_dead = x.clone()
    x_dead[:, 0] = 0.0  # an always-zero input: the weights reading it have zero Hessian rows
    hessian = loss_hessian(model, x_dead, y, names=names)
    columns = torch.stack([hessian(e) for e in torch.eye(hessian.size, dtype=torch.float64)], 1)
    norms = row_norms(hessian, hessian.size, probes=100, seed=0)
    dead = torch.zeros(hessian.size, dtype=torch.bool)
    dead[torch.arange(5) * 4] = True  # column 0 of the (5, 4) first-layer weight
    assert torch.all(norms[dead] == 0) and torch.all(norms[~dead] > 0)
    torch.testing.assert_close(norms, columns.norm(dim=1), rtol=0.35, atol=1e-12)
    # SLQ restricted to the live coordinates sees the live block's spectrum only.
    live = spectral_quadrature(hessian, hessian.size, steps=hessian.size, probes=1, support=~dead)
    block = torch.linalg.eigvalsh(columns[~dead][:, ~dead])
    assert (block[:, None] - live.nodes[0][None, :]).abs().min(1).values.max() < 1e-8
