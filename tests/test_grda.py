import itertools

import pytest
import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.experiment import Experiment
from pruning.methods.grda import GRDA, GRDAMethod, SDprunMethod
from pruning.models import output_layer_name
from pruning.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Experiment(dataset="digits", model="mlp", train=TrainConfig(epochs=2))


def quadratic_step(optimizer, parameter, target):
    """One step on f(w) = 0.5 ||w - t||^2, whose gradient is w - t."""
    optimizer.zero_grad()
    (0.5 * (parameter - target).square().sum()).backward()
    optimizer.step()


def test_two_steps_on_a_quadratic_match_the_hand_computation():
    # lr 0.5, c 0.2, mu 0.75: Lambda_n = 0.2 * 0.5^1.25 * n^0.75 (about 0.084, then 0.141)
    w = nn.Parameter(torch.tensor([2.0, -1.0, 0.1, 0.0], dtype=torch.float64))
    t = torch.tensor([1.0, -2.0, 0.0, 0.3], dtype=torch.float64)
    optimizer = GRDA([w], lr=0.5, c=0.2, mu=0.75)
    lam1 = 0.2 * 0.5 ** 1.25 * 1 ** 0.75
    lam2 = 0.2 * 0.5 ** 1.25 * 2 ** 0.75

    # step 1: a1 = w0 - 0.5 (w0 - t) = [1.5, -1.5, 0.05, 0.15]; the threshold zeroes the third
    # coordinate (0.05 < lam1) and shrinks the others
    quadratic_step(optimizer, w, t)
    a1 = [1.5, -1.5, 0.05, 0.15]
    w1 = [1.5 - lam1, -1.5 + lam1, 0.0, 0.15 - lam1]
    assert w.tolist() == pytest.approx(w1)
    assert optimizer.state[w]["accumulator"].tolist() == pytest.approx(a1)

    # step 2: a2 = a1 - 0.5 (w1 - t); the third stays pruned (its gradient is 0 - 0 = 0)
    quadratic_step(optimizer, w, t)
    a2 = [1.5 - 0.5 * (1.5 - lam1 - 1.0), -1.5 - 0.5 * (-1.5 + lam1 + 2.0), 0.05, 0.15 - 0.5 * (0.15 - lam1 - 0.3)]
    w2 = [a2[0] - lam2, a2[1] + lam2, 0.0, a2[3] - lam2]
    assert a2[2] < lam2 < a2[3]
    assert w.tolist() == pytest.approx(w2)
    assert optimizer.state[w]["threshold"] == pytest.approx(lam2)
    assert optimizer.state[w]["step"] == 2


def test_group_threshold_removes_small_rows_and_thresholds_1d_tensors_elementwise():
    # f = 0.5 ||w||^2, lr 0.5: a1 = 0.5 w0. c 1, mu 0.75: Lambda_1 = 0.5^1.25
    weight = nn.Parameter(torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64))
    bias = nn.Parameter(torch.tensor([2.0, -0.4], dtype=torch.float64))
    optimizer = GRDA([weight, bias], lr=0.5, c=1.0, mu=0.75, group_threshold=True)
    optimizer.zero_grad()
    (0.5 * weight.square().sum() + 0.5 * bias.square().sum()).backward()
    optimizer.step()
    lam1 = 0.5 ** 1.25
    # row 1: a = [1.5, 2.0], norm 2.5, kept and scaled by 1 - lam1 sqrt(2) / 2.5;
    # row 2: a = [0.15, 0.2], norm 0.25 < lam1 sqrt(2): removed
    scale = 1 - lam1 * 2 ** 0.5 / 2.5
    assert weight.tolist()[0] == pytest.approx([1.5 * scale, 2.0 * scale])
    assert weight.tolist()[1] == [0.0, 0.0]
    # the bias: a = [1.0, -0.2], each entry its own group (|g| = 1)
    assert bias.tolist() == pytest.approx([1.0 - lam1, 0.0])


def test_with_c_zero_it_is_sgd_step_for_step():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    candidate = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    candidate.load_state_dict(reference.state_dict())
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1)
    grda = GRDA(candidate.parameters(), lr=0.1, c=0.0, mu=0.51)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(5):
        for model, optimizer in ((reference, sgd), (candidate, grda)):
            def closure(model=model, optimizer=optimizer):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss
            loss = optimizer.step(closure)
            assert torch.isfinite(loss)
        for expected, actual in zip(reference.parameters(), candidate.parameters()):
            assert torch.equal(expected, actual)


def test_accumulated_threshold_equals_the_closed_form_for_a_constant_lr():
    w = nn.Parameter(torch.ones(3))
    optimizer = GRDA([w], lr=0.1, c=0.005, mu=0.55)
    for _ in range(50):
        quadratic_step(optimizer, w, torch.zeros(3))
    assert optimizer.state[w]["threshold"] == pytest.approx(0.005 * 0.1 ** (0.5 + 0.55) * 50 ** 0.55, rel=1e-12)
    assert optimizer.current_threshold() == optimizer.state[w]["threshold"]


def test_with_a_scheduler_the_threshold_increments_use_the_current_lr():
    w = nn.Parameter(torch.ones(3))
    optimizer = GRDA([w], lr=0.1, c=0.005, mu=0.55)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    for _ in range(7):
        quadratic_step(optimizer, w, torch.zeros(3))
        scheduler.step()
    lrs = [0.1] * 3 + [0.05] * 3 + [0.025]  # lr of steps 1..7
    expected = sum(0.005 * lr ** 0.5 * ((n * lr) ** 0.55 - ((n - 1) * lr) ** 0.55) for n, lr in enumerate(lrs, start=1))
    assert optimizer.state[w]["threshold"] == pytest.approx(expected, rel=1e-12)
    assert expected < 0.005 * 0.1 ** 1.05 * 7 ** 0.55  # not the closed form at the initial lr


@pytest.fixture(scope="module")
def grda_run(one_thread):
    method = GRDAMethod()
    return method.train(TINY, None, None, method.settings({"c": 0.03, "epochs": 4}))


@pytest.fixture(scope="module")
def sdprun_run(one_thread):
    method = SDprunMethod()
    return method.train(TINY, None, None, method.settings({"c": 0.04, "epochs": 4}))


def test_grda_sparsity_grows_during_training_and_accuracy_stays_well_above_chance(grda_run):
    sparsities = [row["sparsity"] for row in grda_run.history]
    assert sparsities[0] == 0.0 and grda_run.history[0]["phase"] == "initialisation"
    assert all(later >= earlier - 0.01 for earlier, later in itertools.pairwise(sparsities))
    assert sparsities[-1] > 0.2
    assert grda_run.mask.sparsity() == pytest.approx(sparsities[-1])
    assert grda_run.history[-1]["accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert grda_run.details.final_threshold > 0


def test_grda_mask_is_the_nonzero_pattern_of_the_final_weights(grda_run):
    model = TINY.build_model()
    assert set(grda_run.mask) == {name for name, _ in model.named_parameters() if name.endswith("weight")}
    for name, keep in grda_run.mask.items():
        assert torch.equal(keep, grda_run.state_dict[name] != 0)
    assert all(torch.count_nonzero(grda_run.state_dict[name]) == grda_run.state_dict[name].numel()
               for name in grda_run.state_dict if name.endswith("bias"))  # biases are trained by plain SGD


def test_sdprun_removes_whole_groups_and_keeps_the_output_layer(sdprun_run):
    output = f"{output_layer_name(TINY.build_model())}.weight"
    assert output not in sdprun_run.mask
    assert torch.count_nonzero(sdprun_run.state_dict[output]) == sdprun_run.state_dict[output].numel()
    pruned_groups = 0
    for name, keep in sdprun_run.mask.items():
        rows = keep.flatten(1)
        assert torch.equal(rows.all(dim=1), rows.any(dim=1)), name  # each neuron is all kept or all pruned
        pruned_groups += int((~rows.any(dim=1)).sum())
    assert pruned_groups >= 1
    assert sdprun_run.details.pruned_groups == pruned_groups


@pytest.mark.parametrize("bad", [{"mu": 0.5}, {"mu": 1.0}, {"c": -0.001}, {"c": 0.2}, {"lr": 0.0}, {"epochs": 0}])
def test_bad_settings_are_rejected(bad):
    for method in (GRDAMethod(), SDprunMethod()):
        with pytest.raises(BadInputError):
            method.settings(bad)


def test_methods_ignore_the_sparsity_slider():
    for method in (GRDAMethod(), SDprunMethod()):
        assert method.trains and not method.target_sparsity
        assert "our reading" in method.description.lower()
