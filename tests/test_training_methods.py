"""DNS, undecayed pruning and LOMP, each showing its defining behaviour; the disk cache of runs."""

import math

import pytest
import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.methods.dns import dns_thresholds, straight_through, surgery_
from pruning.methods.lomp import l1_penalty, l1_trained
from pruning.methods.undecayed import levels_for, undecayed_scores
from pruning.models import prunable_weight_names
from pruning.pipeline import run_prune
from pruning.registry import get_method
from pruning.report import sweep_row
from pruning.run_cache import run_training_method, training_run_path
from pruning.schedules import OneShot
from pruning.selection import mask_from_scores
from pruning.sweep import run_sweep
from pruning.train import TrainConfig

SMALL = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=2))


@pytest.fixture(scope="module")
def dense():
    return train_dense(SMALL).model


def dns_run(dense, **overrides):
    method = get_method("dns")
    settings = method.settings({"epochs": 3, "c_rate": 1.0, "momentum": 0.9, **overrides})
    return method.train(SMALL, dense, None, settings)


# --- Dynamic Network Surgery ---


def test_dns_thresholds_by_hand():
    a, b = dns_thresholds(torch.tensor([1.0, -2.0, 3.0, -4.0]), c_rate=1.0)
    t = 2.5 + math.sqrt(5 / 3)  # mean |W| + std |W| (unbiased, as torch.std)
    assert (a, b) == pytest.approx((0.9 * t, 1.1 * t))
    assert dns_thresholds(torch.tensor([1.0, 3.0]), c_rate=-10.0) == (0.0, 0.0), "t is clipped at 0"


def test_surgery_prunes_below_a_splices_above_b_and_keeps_the_band_in_between():
    weights = {"w": torch.tensor([0.1, 0.1, 0.5, 0.5, 0.9, 0.9])}
    mask = Mask({"w": torch.tensor([True, False, True, False, True, False])})
    pruned, spliced = surgery_(mask, weights, {"w": (0.3, 0.7)})
    assert mask["w"].tolist() == [False, False, True, False, True, True]
    assert (pruned, spliced) == (1, 1)


def test_straight_through_forward_is_masked_and_the_gradient_is_not():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    keep = torch.tensor([[True, False], [False, True]])
    x = torch.tensor([[1.0, 1.0]])
    effective = straight_through(weight, keep)
    assert torch.equal(effective, weight * keep)
    (x @ effective.T).square().sum().backward()
    masked = (weight * keep).detach().requires_grad_()
    (x @ masked.T).square().sum().backward()
    assert torch.equal(weight.grad, masked.grad), "dL/dW is dL/d(W*T)"
    assert weight.grad[0, 1] != 0 and weight.grad[1, 0] != 0, "pruned weights receive gradient"


def test_dns_splices_pruned_weights_back_and_masked_weights_keep_learning(dense):
    outcome = dns_run(dense)
    assert outcome.details.spliced_total > 0
    assert sum(row["spliced_back"] for row in outcome.history) > 0, "a snapshot shows weights coming back"
    first_pruned = outcome.snapshots[1].mask
    start = dict(dense.named_parameters())
    moved = 0
    for name, keep in outcome.mask.items():
        still_pruned = ~first_pruned[name] & ~keep
        moved += int(torch.count_nonzero(outcome.state_dict[name][still_pruned] != start[name].detach()[still_pruned]))
    assert moved > 0, "weights that stayed masked were still updated (straight-through)"
    for name, keep in outcome.mask.items():  # the reported mask is what the final snapshot shows
        assert torch.equal(keep, outcome.snapshots[-1].mask[name])


def test_larger_c_rate_gives_higher_sparsity(dense):
    sparsities = [dns_run(dense, c_rate=c, epochs=1).mask.sparsity() for c in (0.0, 1.0, 2.0)]
    assert sparsities[0] < sparsities[1] < sparsities[2]


def test_dns_mask_freezes_at_iter_stop(dense):
    outcome = dns_run(dense, epochs=1, iter_stop_fraction=0.0)
    assert outcome.details.mask_updates == 0 and outcome.mask.sparsity() == 0.0
    decaying = dns_run(dense, epochs=1, gamma=1.0, power=1.0)  # p = 1 / (1 + iter): about ln(steps) updates
    steps = outcome.history[-1]["step"]
    assert 1 <= decaying.details.mask_updates <= 3 * math.log(steps) + 3


# --- Undecayed pruning ---


class Batch:
    """A dataset of one batch: what undecayed_scores reads."""

    def __init__(self, x, y):
        self.x_train, self.y_train = x, y


def test_undecayed_equals_magnitude_at_a_stationary_point_of_the_decayed_loss_and_differs_away_from_it():
    torch.manual_seed(0)
    x, y = torch.randn(60, 6), torch.randint(0, 3, (60,))
    model = nn.Sequential(nn.Linear(6, 3, bias=False)).double()
    data, strength = Batch(x.double(), y), 0.05
    names = ["0.weight"]
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(data.x_train), y) + strength / 2 * model[0].weight.square().sum()
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    weight = model[0].weight.detach()
    scores = undecayed_scores(model, names, data, strength, gradient_samples=0, seed=0)  # the whole set: the exact gradient
    assert torch.allclose(scores["0.weight"], 2 * strength * weight.square(), atol=1e-9), "score = 2 lambda w^2"
    for sparsity in (0.3, 0.5, 0.7):
        assert torch.equal(mask_from_scores(scores, sparsity)["0.weight"],
                           mask_from_scores({"0.weight": weight.abs()}, sparsity)["0.weight"])
    with torch.no_grad():  # away from the stationary point the gradient changes the ranking
        model[0].weight.copy_(torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    scores = undecayed_scores(model, names, data, strength, gradient_samples=0, seed=0)
    assert not torch.equal(mask_from_scores(scores, 0.5)["0.weight"],
                           mask_from_scores({"0.weight": model[0].weight.detach().abs()}, 0.5)["0.weight"])


def test_levels_remove_at_most_the_level_fraction_each():
    assert levels_for(0.9, 0.2) == math.ceil(math.log(0.1) / math.log(0.8)) == 11
    assert levels_for(0.36, 0.2) == 2  # 1 - 0.8^2 exactly
    assert levels_for(0.2, 0.2) == 1 and levels_for(0.1, 0.2) == 1


def test_undecayed_runs_inside_iterative_pruning_with_rewinding(dense):
    method = get_method("undecayed")
    outcome = method.train(SMALL, dense, 0.5, method.settings({"level_fraction": 0.3}))
    assert outcome.details.levels == 2
    assert outcome.mask.sparsity() == pytest.approx(0.5, abs=1e-3)
    first, last = outcome.snapshots[0].mask, outcome.snapshots[-1].mask
    assert len(outcome.snapshots) == 2 and first.sparsity() == pytest.approx(1 - math.sqrt(0.5), abs=1e-3)
    assert all(torch.all(last[name] <= first[name]) for name in first), "what is pruned stays pruned"
    assert outcome.history[-1]["accuracy"] > 0.8


# --- LOMP ---


def test_l1_penalty_by_hand():
    model = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.5, -2.0]]))
        model[0].bias.fill_(7.0)
    assert l1_penalty(model, ["0.weight"], 0.1)().item() == pytest.approx(0.35), "biases are not regularised"


def test_lomp_trains_with_l1_then_prunes_by_magnitude_with_no_fine_tuning(dense):
    method = get_method("lomp")
    settings = method.settings({"l1": 5e-3})
    outcome = method.train(SMALL, dense, 0.8, settings)
    trained = l1_trained(SMALL, 5e-3).model  # the cached L1 model the method pruned
    weights = dict(trained.named_parameters())
    names = prunable_weight_names(trained)
    expected = mask_from_scores({name: weights[name].detach().abs() for name in names}, 0.8)
    for name in names:
        assert torch.equal(outcome.mask[name], expected[name])
        assert torch.equal(outcome.state_dict[name], weights[name].detach()), "no training after pruning"
    plain = l1_trained(SMALL, 0.0).model
    l1_norm = sum(float(weights[name].detach().abs().sum()) for name in names)
    plain_norm = sum(float(dict(plain.named_parameters())[name].detach().abs().sum()) for name in names)
    assert outcome.details.l1_norm == pytest.approx(l1_norm)
    assert l1_norm < 0.7 * plain_norm, "the L1 term is in the loss: it shrinks the weights"
    assert outcome.history[-1]["phase"] == "pruned (no fine-tuning)"


# --- the run cache ---


def test_a_training_run_is_cached_and_a_corrupt_cache_file_is_redone(fresh_cache, dense, monkeypatch):
    method = get_method("dns")
    settings = method.settings({"epochs": 1})
    first = run_training_method(SMALL, method, None, settings, dense=dense)
    path = training_run_path(SMALL, method, None, settings)
    assert path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(type(method), "train", no_training)
    again = run_training_method(SMALL, method, None, settings, dense=dense)
    assert all(torch.equal(again.mask[name], first.mask[name]) for name in first.mask)
    assert again.history == first.history and again.details == first.details and again.accuracy_before_finetune == first.accuracy_before_finetune
    assert [shot.step for shot in again.snapshots] == [shot.step for shot in first.snapshots]
    monkeypatch.undo()
    path.write_bytes(b"not a torch file")
    redone = run_training_method(SMALL, method, None, settings, dense=dense)
    assert redone.history == first.history


def test_run_prune_rejects_a_target_for_emergent_methods_and_a_schedule_for_training_methods():
    with pytest.raises(BadInputError, match="emerges"):
        run_prune(SMALL, "dns", 0.9)
    with pytest.raises(BadInputError, match="needs a target"):
        run_prune(SMALL, "lomp", None)
    with pytest.raises(BadInputError, match="own schedule"):
        run_prune(SMALL, "undecayed", 0.5, schedule=OneShot(finetune_epochs=1))


def test_a_sweep_runs_emergent_methods_once_per_seed_on_their_own_schedule():
    results = run_sweep(SMALL, ["dns"], [0.5, 0.9], [0], overrides={"epochs": 1, "c_rate": 1.0},
                        schedule=OneShot(finetune_epochs=1))
    by_method = {}
    for row in map(sweep_row, results):
        by_method.setdefault(row["method"], []).append(row)
    assert len(by_method["dns"]) == 1 and by_method["dns"][0]["target_sparsity"] is None
    assert by_method["dns"][0]["schedule"] == "built-in" and by_method["dns"][0]["sparsity"] > 0.3
    assert [row["target_sparsity"] for row in by_method["magnitude"]] == [0.5, 0.9]
    assert all(row["finetune_epochs"] == 1 for row in by_method["magnitude"]), "the others keep the chosen schedule"
