"""SparseGPT against independent oracles: the Optimal Brain Surgeon closed form for one pruned
weight, the layer-output error of magnitude pruning, N:M counts, the sequential setting worked
by hand on a 2-layer MLP, unfolded conv Hessians computed position by position, and the whole
method through the pipeline on digits."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning.class_balanced import balanced_batch
from pruning.data import load_dataset
from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.methods.base import PruneContext
from pruning.pipeline import prune_model, run_prune
from pruning.registry import get_method
from pruning.row_patterns import nm_keep
from pruning.schedules import make_schedule
from pruning.sparsegpt_solver import HessianSum, output_error, sparsegpt_prune, unsupported
from pruning.sparsity_sweep import compute_sweep
from pruning.train import TrainConfig

DAMP = 0.01


def correlated_inputs(samples: int, features: int, seed: int) -> torch.Tensor:
    """Inputs whose features are strongly correlated (a random mixing of fewer sources plus noise)."""
    generator = torch.Generator().manual_seed(seed)
    sources = torch.randn(samples, features // 2, generator=generator, dtype=torch.float64)
    mixing = torch.randn(features // 2, features, generator=generator, dtype=torch.float64)
    return sources @ mixing + 0.1 * torch.randn(samples, features, generator=generator, dtype=torch.float64)


def damped(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hessian = 2 * x.T @ x / len(x)
    return hessian, hessian + DAMP * hessian.diagonal().mean() * torch.eye(len(hessian), dtype=torch.float64)


def obs_oracle(w: torch.Tensor, h_damped: torch.Tensor, frozen: int) -> tuple[int, torch.Tensor]:
    """The weight OBS removes among columns >= ``frozen`` of one row (the earlier columns fixed) and
    the updated row: q = argmin w_q^2 / [H_F^-1]_qq, delta_F = -(w_q / [H_F^-1]_qq) H_F^-1[:, q],
    with H_F^-1 = inv(H restricted to the free columns F), inverted with torch.linalg.inv."""
    columns = len(w)
    saliency = torch.stack([w[j] ** 2 / torch.linalg.inv(h_damped[j:, j:])[0, 0] for j in range(columns)])
    saliency[:frozen] = float("inf")
    q = int(saliency.argmin())
    inverse = torch.linalg.inv(h_damped[q:, q:])
    row = w.clone()
    row[q:] += -(w[q] / inverse[0, 0]) * inverse[:, 0]
    return q, row


@pytest.mark.parametrize("seed", [0, 1, 4])  # OBS removes column 2, 0 and 1: earlier columns stay fixed
def test_one_pruned_weight_gets_the_optimal_brain_surgeon_update(seed):
    x = correlated_inputs(40, 6, seed)
    hessian, h_damped = damped(x)
    w = torch.randn(1, 6, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
    updated, keep, dead = sparsegpt_prune(w, hessian, sparsity=1 / 6, percdamp=DAMP)
    q, row = obs_oracle(w[0], h_damped, frozen=0)
    assert dead == 0
    assert torch.nonzero(~keep[0]).flatten().tolist() == [q]
    assert updated[0, q] == 0
    torch.testing.assert_close(updated[0], row, rtol=0, atol=1e-10)


def test_the_first_column_pruned_is_the_full_obs_closed_form():
    x = correlated_inputs(50, 5, 3)
    hessian, h_damped = damped(x)
    w = torch.tensor([[1e-3, 0.8, -1.1, 0.9, 1.3]], dtype=torch.float64)  # column 0 is by far the least salient
    updated, keep, _ = sparsegpt_prune(w, hessian, sparsity=0.2, percdamp=DAMP)
    inverse = torch.linalg.inv(h_damped)
    expected = w[0] - (w[0, 0] / inverse[0, 0]) * inverse[:, 0]
    assert keep.tolist() == [[False, True, True, True, True]]
    torch.testing.assert_close(updated[0], expected, rtol=0, atol=1e-12)


def test_one_weight_of_a_block_is_chosen_over_all_its_rows():
    x = correlated_inputs(60, 6, 4)
    hessian, h_damped = damped(x)
    w = torch.randn(3, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    updated, keep, _ = sparsegpt_prune(w, hessian, sparsity=1 / 18, percdamp=DAMP)
    saliency = torch.stack([w[:, j] ** 2 / torch.linalg.inv(h_damped[j:, j:])[0, 0] for j in range(6)], dim=1)
    row, column = divmod(int(saliency.argmin()), 6)
    assert torch.nonzero(~keep).tolist() == [[row, column]]
    _, expected = obs_oracle(w[row], h_damped, frozen=column)
    torch.testing.assert_close(updated[row], expected, rtol=0, atol=1e-10)
    others = [index for index in range(3) if index != row]
    torch.testing.assert_close(updated[others], w[others], rtol=0, atol=0)


def magnitude_error(w: torch.Tensor, x: torch.Tensor, nm: tuple[int, int] | None) -> float:
    if nm is None:
        keep = w.abs() > w.abs().flatten().kthvalue(w.numel() // 2).values
    else:
        keep = nm_keep(w.abs(), *nm)
    return float(torch.linalg.norm(x @ w.T - x @ (w * keep).T))


@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["unstructured-50", "2:4"])
def test_layer_output_error_is_below_magnitude_pruning(nm):
    x = correlated_inputs(512, 64, 7)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    hessian = 2 * x.T @ x / len(x)
    updated, keep, _ = sparsegpt_prune(w, hessian, sparsity=0.5, nm=nm, blocksize=16)
    assert int((~keep).sum()) == w.numel() // 2
    assert bool((updated[~keep] == 0).all())
    ours = float(torch.linalg.norm(x @ w.T - x @ updated.T))
    theirs = magnitude_error(w, x, nm)
    print(f"layer-output error {'2:4' if nm else 'unstructured 50%'}: sparsegpt {ours:.3f}, magnitude {theirs:.3f}")
    assert ours < 0.8 * theirs
    assert output_error(updated - w, w, hessian) == pytest.approx(ours ** 2 / float(torch.linalg.norm(x @ w.T)) ** 2)


@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (4, 8)])
def test_every_group_of_m_keeps_exactly_n(pattern):
    n, m = pattern
    x = correlated_inputs(200, 48, 9)
    w = torch.randn(12, 48, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    updated, keep, _ = sparsegpt_prune(w, 2 * x.T @ x / len(x), sparsity=0.0, nm=pattern, blocksize=20)
    assert (keep.view(12, -1, m).sum(-1) == n).all()
    assert ((updated != 0).view(12, -1, m).sum(-1) == n).all()


def test_n_m_rejects_rows_that_do_not_divide_into_groups():
    with pytest.raises(BadInputError, match="groups of 4"):
        sparsegpt_prune(torch.ones(2, 6), torch.eye(6), 0.5, nm=(2, 4))


class TwoLayers(nn.Module):
    """Defined in the reverse of the order it runs, so only the forward order is right."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.second = nn.Linear(16, 10)
        self.first = nn.Linear(64, 16)

    def forward(self, x):
        return self.second(torch.relu(self.first(x.flatten(1))))


def test_the_second_layer_sees_the_pruned_first_layer():
    data = load_dataset("digits")
    model = TwoLayers()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    method = get_method("sparsegpt")
    settings = method.settings({"samples_per_class": 8, "blocksize": 16})
    outcome = method.prune(model, 0.5, settings, PruneContext(data=data, seed=3))
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())

    x, _ = balanced_batch(data, 8, 3)
    x = x.flatten(1).to(torch.float64)
    w1, b1 = model.first.weight.detach().double(), model.first.bias.detach().double()
    first, _, _ = sparsegpt_prune(w1, 2 * x.T @ x / len(x), 0.5, blocksize=16)
    hidden = torch.relu(x @ first.T + b1)  # the pruned first layer's output
    second, _, _ = sparsegpt_prune(model.second.weight.detach().double(), 2 * hidden.T @ hidden / len(x), 0.5, blocksize=16)
    torch.testing.assert_close(outcome.state_dict["first.weight"].double(), first, rtol=0, atol=1e-5)
    torch.testing.assert_close(outcome.state_dict["second.weight"].double(), second, rtol=0, atol=1e-5)
    dense_hidden = torch.relu(x @ w1.T + b1)
    not_sequential, _, _ = sparsegpt_prune(model.second.weight.detach().double(), 2 * dense_hidden.T @ dense_hidden / len(x),
                                           0.5, blocksize=16)
    assert (not_sequential - second).abs().max() > 1e-3  # the check tells the two settings apart
    assert torch.equal(outcome.state_dict["first.bias"], before["first.bias"])
    direct = float(torch.linalg.norm(x @ (first - w1).T) ** 2 / torch.linalg.norm(x @ w1.T) ** 2)
    assert outcome.details.reconstruction_error["first.weight"] == pytest.approx(direct, rel=1e-4)
    assert outcome.details.masked_error["first.weight"] > outcome.details.reconstruction_error["first.weight"]
    assert sum(outcome.details.movement_counts["first.weight"]) == int(outcome.mask["first.weight"].sum())


def hand_hessian(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """2/N sum over samples and output positions of the patch x[:, r*s : r*s+k, c*s : c*s+k] outer itself."""
    padded = F.pad(x, [padding] * 4).double()
    total = torch.zeros(x.shape[1] * kernel * kernel, x.shape[1] * kernel * kernel, dtype=torch.float64)
    rows = (padded.shape[2] - kernel) // stride + 1
    columns = (padded.shape[3] - kernel) // stride + 1
    for sample in padded:
        for r in range(rows):
            for c in range(columns):
                patch = sample[:, r * stride: r * stride + kernel, c * stride: c * stride + kernel].flatten()
                total += torch.outer(patch, patch)
    return 2 * total / len(x)


@pytest.mark.parametrize("size, stride, padding", [(3, 1, 0), (7, 2, 1)], ids=["one-position", "strided-padded"])
def test_conv_hessian_from_unfolded_inputs_matches_patches_by_hand(size, stride, padding):
    conv = nn.Conv2d(2, 3, kernel_size=3, stride=stride, padding=padding)
    x = torch.randn(5, 2, size, size, generator=torch.Generator().manual_seed(12))
    hessian = HessianSum(conv)
    hessian.add(x[:2])
    hessian.add(x[2:])
    torch.testing.assert_close(hessian.hessian(), hand_hessian(x, 3, stride, padding), rtol=1e-10, atol=1e-10)


def test_conv_layers_are_pruned_through_their_unfolded_inputs_and_grouped_ones_left_dense():
    data = load_dataset("digits")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(),
                          nn.Conv2d(4, 8, 3, stride=2), nn.Flatten(), nn.Linear(8 * 2 * 2, 10))
    assert "groups=2" in unsupported(model[2])
    method = get_method("sparsegpt")
    outcome = method.prune(model, 0.5, method.settings({"samples_per_class": 5}), PruneContext(data=data))
    assert set(outcome.details.left_dense) == {"2.weight"}
    assert bool(outcome.mask["2.weight"].all())
    for name in ("0.weight", "4.weight", "6.weight"):
        assert outcome.mask.layer_sparsity()[name] == pytest.approx(0.5, abs=1 / outcome.mask[name].numel())
        assert bool((outcome.state_dict[name][~outcome.mask[name]] == 0).all())
        assert outcome.details.reconstruction_error[name] < outcome.details.masked_error[name]


def test_too_little_damping_on_a_singular_hessian_is_a_clear_error():
    x = correlated_inputs(30, 4, 13)
    x = torch.cat([x, x], dim=1)  # duplicated inputs: H is singular
    with pytest.raises(BadInputError, match="damping"):
        sparsegpt_prune(torch.ones(2, 8, dtype=torch.float64), 2 * x.T @ x, 0.5, percdamp=0.0)


@pytest.fixture(scope="module")
def digits_mlp():
    experiment = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
    return train_dense(experiment).model, experiment.load_data()


def test_through_the_pipeline_on_digits(digits_mlp):
    dense, data = digits_mlp
    before = {key: value.clone() for key, value in dense.state_dict().items()}
    result = prune_model(dense, data, "sparsegpt", 0.5)
    magnitude = prune_model(dense, data, "magnitude", 0.5, {"scope": "layerwise"})
    print(f"digits mlp at 50%: sparsegpt {result.pruned.accuracy:.4f}, magnitude (layerwise) {magnitude.pruned.accuracy:.4f}")
    assert all(torch.equal(before[key], value) for key, value in dense.state_dict().items())
    assert result.mask.sparsity() == pytest.approx(0.5, abs=1e-4)
    assert all(value == pytest.approx(0.5, abs=1e-3) for value in result.mask.layer_sparsity().values())
    for name, keep in result.mask.items():
        assert bool((result.pruned_tensors[name][~keep] == 0).all())
        bias = name.replace("weight", "bias")
        assert torch.equal(result.pruned_tensors[bias], before[bias])
    assert result.pruned.accuracy >= magnitude.pruned.accuracy - 0.02
    assert result.details.mean_reconstruction_error < result.details.mean_masked_error


def test_two_four_through_the_pipeline_on_digits(digits_mlp):
    dense, data = digits_mlp
    result = prune_model(dense, data, "sparsegpt", 0.5, {"granularity": "nm", "nm_pattern": "2:4",
                                                          "prune_output_layer": False})
    assert set(result.mask) == {"fc1.weight", "fc2.weight"}
    for keep in result.mask.values():
        assert (keep.view(keep.shape[0], -1, 4).sum(-1) == 2).all()
    assert result.details.pattern == "2:4" and result.details.left_dense == {}


def test_the_sparsity_sweep_measures_the_updated_weights(digits_mlp):
    dense, data = digits_mlp
    sweep = compute_sweep(dense, data, "sparsegpt", get_method("sparsegpt").settings({}), [0.5])
    assert sweep.points[0].accuracy == prune_model(dense, data, "sparsegpt", 0.5).pruned.accuracy


def test_a_schedule_keeps_the_updated_weights():
    """One-shot after training with no fine-tuning is prune_model's result: the schedule prunes
    the model it trains with SparseGPT's weights, not the masked dense ones."""
    experiment = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=1))
    scheduled = run_prune(experiment, "sparsegpt", 0.5, schedule=make_schedule("oneshot", {}))
    direct = prune_model(train_dense(experiment).model, experiment.load_data(), "sparsegpt", 0.5)
    assert scheduled.pruned.accuracy == direct.pruned.accuracy
    for name, tensor in direct.pruned_tensors.items():
        assert torch.allclose(scheduled.pruned_tensors[name], tensor, atol=1e-6), name
